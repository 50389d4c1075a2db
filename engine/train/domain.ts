// A GPT with a domain (classification) head in sharded training: the one-graph step on labelled
// documents, its batches as pure functions of (seed, shard, step) like BERT's, and evaluation.
//
//   batch     B documents of a labelled shard drawn by a counter-based RNG; each row is the
//             document's first T tokens, padded on the right with end-of-text. LM targets are the
//             next tokens (the document's end-of-text after its last one, -100 on padding); the
//             class head reads the last real token (HF GPT2ForSequenceClassification pools the last
//             non-padding token the same way).
//   evaluate  every val document once: class cross-entropy, accuracy, macro F1, confusion.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import '../autodiff/rules';
import { Counter } from '../data/random';
import { EngineError } from '../errors';
import { scoreLogitRows, type ClassificationMetrics } from '../eval/classify';
import { Graph, type TensorData, type Value } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import type { ParamSpec } from '../models/blocks';
import { domainConfigOf, domainGptLogits, domainGptParams, domainGptPooledTrainLoss, type DomainGptConfig, type DomainHeadVariant } from '../models/classification-head';
import type { GptConfig } from '../models/gpt';
import type { OptimConfig } from '../optim';
import { createSession, type SessionConfig } from '../runtime';
import type { LabelledDoc } from './bert';
import { checkTrainMemory, compileBuiltStep, type CompiledTrainStep, type TrainMemoryLimits } from './shard';
import { buildTrainStep, type TrainStep } from './step';

export interface DomainTrainSetup {
  model: GptConfig;
  head: DomainHeadVariant;
  optim: OptimConfig;
  batchSize: number;
  contextLength: number;
  /** Optimizer steps per session.run (engine/train/ksteps.ts); default 1. */
  stepsPerRun?: number;
}

/** Every parameter of the model: the GPT's and the head's `score.weight`. */
export const domainTrainParams = (gpt: GptConfig, head: DomainHeadVariant): ParamSpec[] => domainGptParams(domainConfigOf(gpt, head));

export function buildDomainTrainStep(s: DomainTrainSetup): TrainStep {
  const cfg = domainConfigOf(s.model, s.head);
  return buildTrainStep({ params: domainGptParams(cfg), loss: domainGptPooledTrainLoss(cfg, s.batchSize, s.contextLength) }, s.optim);
}

/** The step compiled once per worker (a too-big step fails before anything is allocated). */
export async function compileDomainTrainStep(s: DomainTrainSetup, sessionConfig: SessionConfig = {}, limits: TrainMemoryLimits = {}): Promise<CompiledTrainStep> {
  checkTrainMemory({ model: s.model, optim: s.optim, batchSize: s.batchSize, contextLength: s.contextLength }, limits);
  return compileBuiltStep('domain-head training step', () => buildDomainTrainStep(s), s.stepsPerRun ?? 1, sessionConfig);
}

/**
 * Dataset label index → class id: the labels sorted by name ("ham" < "spam" is 0, 1). The head
 * must have exactly one class per label; the error names the spec field.
 */
export function domainLabelMap(nClasses: number, labelNames: string[]): number[] {
  if (labelNames.length !== nClasses) {
    throw new EngineError('config', `spec.model.variant.n_classes: ${nClasses}, but the dataset has ${labelNames.length} labels (${labelNames.join(', ')})`);
  }
  const sorted = [...labelNames].sort();
  return labelNames.map((n) => sorted.indexOf(n));
}

/** tokens, targets (B, T) and pool (B) of documents padded on the right with `eot`. */
export function frameGptDocs(ids: ArrayLike<number>, docs: LabelledDoc[], T: number, eot: number): Record<string, TensorData> {
  const B = docs.length;
  const tokens = new BigInt64Array(B * T).fill(BigInt(eot));
  const targets = new BigInt64Array(B * T).fill(-100n);
  const pool = new BigInt64Array(B);
  docs.forEach((d, b) => {
    // An empty document is its end-of-text alone (one real token), so no row is all padding.
    const n = Math.max(1, Math.min(d.length, T));
    const row = b * T;
    for (let t = 0; t < n && t < d.length; t++) tokens[row + t] = BigInt(ids[d.start + t]);
    for (let t = 0; t < n; t++) targets[row + t] = BigInt(t + 1 < d.length ? ids[d.start + t + 1] : eot);
    pool[b] = BigInt(row + n - 1);
  });
  return {
    tokens: { dtype: 'int64', dims: [B, T], data: tokens },
    targets: { dtype: 'int64', dims: [B, T], data: targets },
    pool: { dtype: 'int64', dims: [B], data: pool },
  };
}

export interface DomainBatchRequest {
  seed: number;
  shard: number;
  step: number;
  batchSize: number;
  contextLength: number;
}

/** B documents drawn with replacement, keyed by (seed, shard, step), with their labels. */
export function domainBatch(ids: ArrayLike<number>, docs: LabelledDoc[], req: DomainBatchRequest, eot: number): Record<string, TensorData> {
  if (docs.length === 0) throw new EngineError('config', `shard ${req.shard}: no documents to classify`);
  const rng = new Counter(req.seed, req.shard, req.step, 0x636c73); // 'cls' stream, as BERT's classification batches
  const picked = Array.from({ length: req.batchSize }, () => docs[rng.int(docs.length)]);
  return { ...frameGptDocs(ids, picked, req.contextLength, eot), labels: { dtype: 'int64', dims: [req.batchSize], data: BigInt64Array.from(picked, (d) => BigInt(d.label)) } };
}

export interface DomainClassificationEval extends ClassificationMetrics {
  /** Mean class cross-entropy over the documents. */
  loss: number;
}

/** Sessions by batch size, weights as inputs so one session serves every checkpoint. */
export class DomainEvaluator {
  private readonly sessions = new Map<number, Promise<ort.InferenceSession>>();
  private readonly cfg: DomainGptConfig;

  constructor(
    gpt: GptConfig,
    head: DomainHeadVariant,
    private readonly contextLength: number,
    private readonly sessionConfig: SessionConfig = {},
  ) {
    this.cfg = domainConfigOf(gpt, head);
  }

  private session(B: number): Promise<ort.InferenceSession> {
    let s = this.sessions.get(B);
    if (!s) {
      const T = this.contextLength;
      const g = new Graph('eval_domain_head');
      const weights = new Map<string, Value>(domainGptParams(this.cfg).map((p) => [p.name, g.input(p.name, 'float32', p.shape)]));
      const tokens = g.input('tokens', 'int64', [B, T]);
      const pool = g.input('pool', 'int64', [B]);
      g.output(domainGptLogits(this.cfg, tokens, (n) => weights.get(n)!, null, pool).cls, 'logits'); // (B, n_classes)
      s = createSession(serializeModel(g).model, { graphOptimizationLevel: 'all', ...this.sessionConfig });
      this.sessions.set(B, s);
    }
    return s;
  }

  /** The head's logits, one row of n_classes per document, in batches of `batchSize`. */
  async logits(weights: Map<string, Float32Array>, ids: ArrayLike<number>, docs: LabelledDoc[], batchSize: number, eot: number): Promise<Float32Array[]> {
    const C = this.cfg.n_classes;
    const feedsW: Record<string, ort.Tensor> = {};
    for (const s of domainGptParams(this.cfg)) {
      const w = weights.get(s.name);
      if (!w) throw new EngineError('config', `evaluate: parameter "${s.name}" is missing from the checkpoint`);
      feedsW[s.name] = new Tensor('float32', w, s.shape);
    }
    const rows: Float32Array[] = [];
    for (let i = 0; i < docs.length; i += batchSize) {
      const part = docs.slice(i, i + batchSize);
      const f = frameGptDocs(ids, part, this.contextLength, eot);
      const feeds = { ...feedsW, tokens: new Tensor('int64', f.tokens.data as BigInt64Array, f.tokens.dims), pool: new Tensor('int64', f.pool.data as BigInt64Array, f.pool.dims) };
      const out = await (await this.session(part.length)).run(feeds, ['logits']);
      const data = out.logits.data as Float32Array;
      for (let b = 0; b < part.length; b++) rows.push(data.slice(b * C, (b + 1) * C));
    }
    return rows;
  }

  /** Every document once: class cross-entropy, accuracy, macro F1, confusion. */
  async classify(weights: Map<string, Float32Array>, ids: ArrayLike<number>, docs: LabelledDoc[], batchSize: number, eot: number, onBatch?: (n: number) => void): Promise<DomainClassificationEval> {
    if (docs.length === 0) throw new EngineError('config', 'the validation split has no documents (raise dataset.valFraction)');
    const C = this.cfg.n_classes;
    const rows: Float32Array[] = [];
    for (let i = 0; i < docs.length; i += 16 * batchSize) {
      rows.push(...(await this.logits(weights, ids, docs.slice(i, i + 16 * batchSize), batchSize, eot)));
      onBatch?.(rows.length);
    }
    return scoreLogitRows(rows, docs.map((d) => d.label), C);
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
