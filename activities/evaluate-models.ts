// evaluateModels: every model of a run side by side on one worker (the gpu pool runs one activity
// at a time, so latencies are not disturbed by a neighbour): perplexity on the gate's batches (the
// whole validation split unless eval.batches caps it), p50/p95 latency and tokens/s, size, and
// generation samples (greedy and seeded, past block_size when asked).

import { beat } from './heartbeat';
import os from 'node:os';
import type { Tokenizer } from '../engine/data/tokenizer';
import { Decoder, lmFeeds, lmPerplexity, measureSpeed, type EvalWindows, type Feeds, type SpeedResult } from '../engine/eval';
import type { Graph } from '../engine/graph/ir';
import { loadModel } from '../engine/graph/onnx';
import { decoderInfo } from '../engine/models/export';
import type { GptConfig } from '../engine/models/gpt';
import { createSession } from '../engine/runtime';
import type { EvalSpec } from '../spec/post-training';
import { type DatasetRef, readTokenizer } from '../artifacts/datasets';
import { asFailure, failingAs } from '../artifacts/errors';
import { MODEL_FILE, type ModelRef } from '../artifacts/models';
import { loadStoredTokenizer } from '../artifacts/tokenizers';
import { valBatches, type PostTrainingContext } from './post-training-context';

export interface EvaluateModelsInput {
  runId: string;
  dataset: DatasetRef;
  modelConfig: GptConfig;
  models: ModelRef[];
  eval: EvalSpec;
}

export interface ModelEvaluation {
  name: string;
  ppl: number;
  tokens: number;
  p50Ms: number;
  p95Ms: number;
  tokensPerSec: number;
  peakRssBytes: number;
  sizeBytes: number;
  samples: { prompt: string; text: string; settings: string }[];
}

export interface EvaluateModelsResult {
  evaluations: ModelEvaluation[];
  /** Where the timings were taken, for the report. */
  device: string;
  /** The sampling settings in words (every setting used, joined). */
  sampling: string;
  batches: number;
  batchSize: number;
  contextLength: number;
  /** Target tokens perplexity was computed on. */
  tokens: number;
  /** Target tokens in the whole validation split; equal to `tokens` unless eval.batches capped it. */
  splitTokens: number;
  /** eval.batches as given: null for the whole split. */
  batchCap: number | null;
}

/** One decoding setting of the report: greedy, or the seeded sample. */
type Setting = Pick<EvalSpec['samples'], 'temperature' | 'topK' | 'topP' | 'seed'>;

/** The settings every prompt is decoded with: greedy (unless turned off), then the seeded sample (unless temperature is 0). */
export function sampleSettings(s: EvalSpec['samples']): Setting[] {
  const out: Setting[] = [];
  if (s.greedy || s.temperature === 0) out.push({ temperature: 0, topK: 0, topP: 1, seed: 0 });
  if (s.temperature > 0) out.push({ temperature: s.temperature, topK: s.topK, topP: s.topP, seed: s.seed });
  return out;
}

/** A setting in words, for the report. */
export const samplingWords = (s: Setting, maxNewTokens: number) =>
  `${s.temperature === 0 ? 'greedy' : `temperature ${s.temperature}${s.topK ? `, top-k ${s.topK}` : ''}${s.topP < 1 ? `, top-p ${s.topP}` : ''}, seed ${s.seed}`}, ${maxNewTokens} new tokens`;

/** Every model on this one worker, in turn: perplexity, speed, size, samples. */
export async function evaluateModels(p: PostTrainingContext, input: EvaluateModelsInput): Promise<EvaluateModelsResult> {
  const spec = input.eval;
  const val = await valBatches(p, input.dataset, spec, input.modelConfig);
  const tok = await loadStoredTokenizer(p.store, await readTokenizer(p.store, input.dataset));
  const evaluations: ModelEvaluation[] = [];
  for (const m of input.models) evaluations.push(await evaluateModel(p, m, input, val.batches, tok));
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  return {
    evaluations,
    device: p.deps.ep === 'cuda' ? `CUDA device ${p.deps.deviceId}` : `${cpu}, ${spec.threads} ORT thread${spec.threads > 1 ? 's' : ''}`,
    sampling: sampleSettings(spec.samples).map((s) => samplingWords(s, spec.samples.maxNewTokens)).join('; '),
    batches: val.batches.batches,
    batchSize: val.batches.batchSize,
    contextLength: val.batches.contextLength,
    tokens: val.tokens,
    splitTokens: val.splitTokens,
    batchCap: spec.batches,
  };
}

async function evaluateModel(p: PostTrainingContext, m: ModelRef, input: EvaluateModelsInput, val: EvalWindows, tok: Tokenizer): Promise<ModelEvaluation> {
  const spec = input.eval;
  let bytes: Buffer;
  try {
    bytes = await p.store.getVerified(m.prefix, MODEL_FILE);
  } catch (err) {
    throw asFailure(err, `model ${m.prefix}`);
  }
  const graph = loadModel(bytes);
  const { ppl, tokens } = await lmPerplexity(graph, val, p.session(spec), (done, of) => beat(`${m.name}: val ppl batch ${done} of ${of}`));
  beat(`${m.name}: ppl ${ppl}`);
  const speed = await speedOf(p, bytes, graph, val, spec);
  beat(`${m.name}: p50 ${speed.p50Ms} ms`);
  const samples = await samplesOf(p, bytes, input.modelConfig, tok, spec);
  return { name: m.name, ppl, tokens, p50Ms: speed.p50Ms, p95Ms: speed.p95Ms, tokensPerSec: speed.tokensPerSec, peakRssBytes: speed.peakRssBytes, sizeBytes: bytes.length, samples };
}

async function speedOf(p: PostTrainingContext, bytes: Uint8Array, graph: Graph, val: EvalWindows, spec: EvalSpec): Promise<SpeedResult> {
  const s = await createSession(bytes, { graphOptimizationLevel: 'all', ...p.session(spec) });
  try {
    // The first speedRuns batches of the first one's shape (measureSpeed cycles through them): a
    // short last batch, or the last, shorter window, would flatter tokens/s.
    const feeds: Feeds[] = [];
    for (const b of val) {
      if (feeds.length >= spec.speedRuns) break;
      if (b.dims[0] === val.batchSize && b.dims[1] === val.contextLength) feeds.push(lmFeeds(graph, b.tokens, b.dims));
    }
    return await measureSpeed(s, feeds, val.batchSize * val.contextLength, { runs: spec.speedRuns, warmup: spec.warmup });
  } finally {
    await s.release();
  }
}

/** Each prompt continued by maxNewTokens tokens (fewer at the tokenizer's end-of-text) in every setting, the context sliding past block_size. */
async function samplesOf(p: PostTrainingContext, bytes: Uint8Array, cfg: GptConfig, tok: Tokenizer, spec: EvalSpec): Promise<ModelEvaluation['samples']> {
  const samples: ModelEvaluation['samples'] = [];
  const d = await Decoder.create(bytes, decoderInfo(cfg, true), p.session(spec));
  try {
    const { maxNewTokens } = spec.samples;
    for (const prompt of spec.samples.prompts) {
      const ids = await tok.encode(prompt);
      for (const setting of sampleSettings(spec.samples)) {
        const r = await failingAs(`eval.samples.prompts: "${prompt.slice(0, 40)}"`, () => d.decode(ids, { ...setting, maxNewTokens, stopToken: tok.eot }));
        const cropped = r.promptCropped ? `; prompt cropped to its last ${cfg.block_size} of ${ids.length} tokens` : '';
        samples.push({ prompt, text: await tok.decode(r.tokens.filter((t) => t !== tok.eot)), settings: samplingWords(setting, maxNewTokens) + cropped });
        beat(`sample ${samples.length}: ${r.tokens.length} tokens`);
      }
    }
  } finally {
    await d.release();
  }
  return samples;
}
