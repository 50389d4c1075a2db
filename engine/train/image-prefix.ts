// A GPT reading image features (model.variant image-prefix) in sharded training: the one-graph
// step on captions with their images' feature vectors, its batches as pure functions of
// (seed, shard, step), and evaluation.
//
//   batch     B captions of an image-captions shard drawn by a counter-based RNG, each with its
//             imageTokens × imageDim features. A row is end-of-text (the start) + the caption's
//             first T-1 tokens, padded on the right with end-of-text; its targets are the caption's
//             tokens then end-of-text, -100 on the padding. The first caption token is predicted
//             from the image and the start token alone: only the image can tell it.
//   evaluate  every val caption once: the mean next-token loss over caption tokens, perplexity.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import '../autodiff/rules';
import { Counter } from '../data/random';
import { EngineError } from '../errors';
import { Graph, type TensorData, type Value } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import type { GptConfig } from '../models/gpt';
import { imagePrefixConfigOf, multimodalGptCaptionLoss, multimodalGptParams, type ImagePrefixVariant, type MultimodalGptConfig } from '../models/image-prefix';
import type { OptimConfig } from '../optim';
import { createSession, type SessionConfig } from '../runtime';
import { checkTrainMemory, compileBuiltStep, type CompiledTrainStep, type TrainMemoryLimits } from './shard';
import { buildTrainStep, type TrainStep } from './step';

/** One caption of an image-captions shard: where its ids start, how many (end-of-text excluded), its image's index in the shard. */
export interface CaptionDoc {
  start: number;
  length: number;
  image: number;
}

export interface ImagePrefixTrainSetup {
  model: GptConfig;
  image: ImagePrefixVariant;
  optim: OptimConfig;
  batchSize: number;
  contextLength: number;
  /** Optimizer steps per session.run (engine/train/ksteps.ts); default 1. */
  stepsPerRun?: number;
}

export function buildImagePrefixTrainStep(s: ImagePrefixTrainSetup): TrainStep {
  const cfg = imagePrefixConfigOf(s.model, s.image);
  return buildTrainStep({ params: multimodalGptParams(cfg), loss: multimodalGptCaptionLoss(cfg, s.batchSize, s.contextLength) }, s.optim);
}

/** The step compiled once per worker (a too-big step fails before anything is allocated). */
export async function compileImagePrefixTrainStep(s: ImagePrefixTrainSetup, sessionConfig: SessionConfig = {}, limits: TrainMemoryLimits = {}): Promise<CompiledTrainStep> {
  // The memory estimate of the GPT at the whole sequence it runs (image prefix + text).
  checkTrainMemory({ model: s.model, optim: s.optim, batchSize: s.batchSize, contextLength: s.contextLength + s.image.n_image_tokens }, limits);
  return compileBuiltStep('image-prefix training step', () => buildImagePrefixTrainStep(s), s.stepsPerRun ?? 1, sessionConfig);
}

/**
 * The captions of a shard from its `.docs` pairs (caption tokens with end-of-text, 0) and the
 * number of images its `.img` file holds; a mismatch is a corrupt dataset, named.
 */
export function captionDocs(ids: ArrayLike<number>, docs: Uint32Array, images: number, where: string): CaptionDoc[] {
  const out: CaptionDoc[] = [];
  let start = 0;
  for (let i = 0; i + 1 < docs.length; i += 2) {
    out.push({ start, length: Math.max(0, docs[i] - 1), image: i / 2 }); // the last id of each caption is its end-of-text
    start += docs[i];
  }
  if (start !== ids.length) throw new EngineError('corrupt', `${where}: its captions add up to ${start} ids, the shard has ${ids.length}`);
  if (out.length !== images) throw new EngineError('corrupt', `${where}: ${out.length} captions, but its image file holds ${images} images`);
  return out;
}

/** image_features (B, P, D), tokens and targets (B, T) of captions framed as [eot] caption [eot padding…]. */
export function frameCaptions(ids: ArrayLike<number>, features: Float32Array, docs: CaptionDoc[], T: number, eot: number, dims: { n_image_tokens: number; image_dim: number }): Record<string, TensorData> {
  const B = docs.length;
  const imageSize = dims.n_image_tokens * dims.image_dim;
  const tokens = new BigInt64Array(B * T).fill(BigInt(eot));
  const targets = new BigInt64Array(B * T).fill(-100n);
  const image = new Float32Array(B * imageSize);
  docs.forEach((d, b) => {
    const row = b * T;
    const n = Math.min(d.length, T - 1); // caption tokens in the row, after the start token
    for (let t = 0; t < n; t++) tokens[row + 1 + t] = BigInt(ids[d.start + t]);
    // Targets: the caption's tokens, then its end-of-text when it fits (a cut caption predicts its next token instead).
    for (let t = 0; t <= n && t < T; t++) targets[row + t] = BigInt(t < d.length ? ids[d.start + t] : eot);
    image.set(features.subarray(d.image * imageSize, (d.image + 1) * imageSize), b * imageSize);
  });
  return {
    image_features: { dtype: 'float32', dims: [B, dims.n_image_tokens, dims.image_dim], data: image },
    tokens: { dtype: 'int64', dims: [B, T], data: tokens },
    targets: { dtype: 'int64', dims: [B, T], data: targets },
  };
}

export interface ImagePrefixBatchRequest {
  seed: number;
  shard: number;
  step: number;
  batchSize: number;
  contextLength: number;
}

/** B captions drawn with replacement, keyed by (seed, shard, step), with their images. */
export function imageCaptionBatch(ids: ArrayLike<number>, features: Float32Array, docs: CaptionDoc[], req: ImagePrefixBatchRequest, eot: number, image: ImagePrefixVariant): Record<string, TensorData> {
  if (docs.length === 0) throw new EngineError('config', `shard ${req.shard}: no captions`);
  const rng = new Counter(req.seed, req.shard, req.step, 0x696d67); // 'img' stream
  const picked = Array.from({ length: req.batchSize }, () => docs[rng.int(docs.length)]);
  return frameCaptions(ids, features, picked, req.contextLength, eot, image);
}

export interface CaptionEval {
  /** Mean next-token loss over caption tokens (end-of-text included). */
  loss: number;
  perplexity: number;
  /** Caption tokens scored. */
  tokens: number;
  captions: number;
}

/** Sessions by batch size, weights as inputs so one session serves every checkpoint. */
export class ImagePrefixEvaluator {
  private readonly sessions = new Map<number, Promise<ort.InferenceSession>>();
  private readonly cfg: MultimodalGptConfig;

  constructor(
    gpt: GptConfig,
    private readonly image: ImagePrefixVariant,
    private readonly contextLength: number,
    private readonly sessionConfig: SessionConfig = {},
  ) {
    this.cfg = imagePrefixConfigOf(gpt, image);
  }

  private session(B: number): Promise<ort.InferenceSession> {
    let s = this.sessions.get(B);
    if (!s) {
      const g = new Graph('eval_image_prefix');
      const weights = new Map<string, Value>(multimodalGptParams(this.cfg).map((p) => [p.name, g.input(p.name, 'float32', p.shape)]));
      g.output(multimodalGptCaptionLoss(this.cfg, B, this.contextLength, 'sum', false)(g, (n) => weights.get(n)!), 'loss_sum');
      s = createSession(serializeModel(g).model, { graphOptimizationLevel: 'all', ...this.sessionConfig });
      this.sessions.set(B, s);
    }
    return s;
  }

  /** Every caption once, in batches of `batchSize`. */
  async evaluate(weights: Map<string, Float32Array>, parts: { ids: ArrayLike<number>; features: Float32Array; docs: CaptionDoc[] }[], batchSize: number, eot: number, onBatch?: (n: number) => void): Promise<CaptionEval> {
    const feedsW: Record<string, ort.Tensor> = {};
    for (const s of multimodalGptParams(this.cfg)) {
      const w = weights.get(s.name);
      if (!w) throw new EngineError('config', `evaluate: parameter "${s.name}" is missing from the checkpoint`);
      feedsW[s.name] = new Tensor('float32', w, s.shape);
    }
    let sum = 0;
    let tokens = 0;
    let captions = 0;
    let batches = 0;
    for (const p of parts) {
      for (let i = 0; i < p.docs.length; i += batchSize) {
        const part = p.docs.slice(i, i + batchSize);
        const f = frameCaptions(p.ids, p.features, part, this.contextLength, eot, this.image);
        const feeds = {
          ...feedsW,
          image_features: new Tensor('float32', f.image_features.data as Float32Array, f.image_features.dims),
          tokens: new Tensor('int64', f.tokens.data as BigInt64Array, f.tokens.dims),
          targets: new Tensor('int64', f.targets.data as BigInt64Array, f.targets.dims),
        };
        const out = await (await this.session(part.length)).run(feeds, ['loss_sum']);
        sum += (out.loss_sum.data as Float32Array)[0];
        tokens += (f.targets.data as BigInt64Array).reduce((n, t) => (t >= 0n ? n + 1 : n), 0);
        captions += part.length;
        onBatch?.(++batches);
      }
    }
    if (captions === 0) throw new EngineError('config', 'the validation split has no captions (raise dataset.valFraction)');
    const loss = sum / tokens;
    return { loss, perplexity: Math.exp(loss), tokens, captions };
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
