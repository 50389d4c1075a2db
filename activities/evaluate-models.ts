// evaluateModels: every model of a run side by side on one worker (the gpu pool runs one activity
// at a time, so latencies are not disturbed by a neighbour): perplexity on the gate's batches,
// p50/p95 latency and tokens/s, size, and generation samples.

import { Context } from '@temporalio/activity';
import os from 'node:os';
import type { LmBatch } from '../engine/data/sampler';
import type { Tokenizer } from '../engine/data/tokenizer';
import { Decoder, lmFeeds, lmPerplexity, measureSpeed, type SpeedResult } from '../engine/eval';
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
  samples: { prompt: string; text: string }[];
}

export interface EvaluateModelsResult {
  evaluations: ModelEvaluation[];
  /** Where the timings were taken, for the report. */
  device: string;
  /** The sampling settings in words. */
  sampling: string;
  batches: number;
  batchSize: number;
  contextLength: number;
  tokens: number;
}

/** Sampling settings in words, for the report. */
const samplingWords = (s: EvalSpec['samples']) =>
  `${s.temperature === 0 ? 'greedy' : `temperature ${s.temperature}${s.topK ? `, top-k ${s.topK}` : ''}${s.topP < 1 ? `, top-p ${s.topP}` : ''}, seed ${s.seed}`}, ${s.maxNewTokens} new tokens`;

/** Every model on this one worker, in turn: perplexity, speed, size, samples. */
export async function evaluateModels(p: PostTrainingContext, input: EvaluateModelsInput): Promise<EvaluateModelsResult> {
  const spec = input.eval;
  const val = await valBatches(p, input.dataset, spec, input.modelConfig);
  const tok = await loadStoredTokenizer(p.store, await readTokenizer(p.store, input.dataset));
  const evaluations: ModelEvaluation[] = [];
  for (const m of input.models) evaluations.push(await evaluateModel(p, m, input, val, tok));
  const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
  return {
    evaluations,
    device: p.deps.ep === 'cuda' ? `CUDA device ${p.deps.deviceId}` : `${cpu}, ${spec.threads} ORT thread${spec.threads > 1 ? 's' : ''}`,
    sampling: samplingWords(spec.samples),
    batches: val.length,
    batchSize: val[0].dims[0],
    contextLength: val[0].dims[1],
    tokens: val.reduce((n, b) => n + b.dims[0] * b.dims[1], 0),
  };
}

async function evaluateModel(p: PostTrainingContext, m: ModelRef, input: EvaluateModelsInput, val: LmBatch[], tok: Tokenizer): Promise<ModelEvaluation> {
  const ctx = Context.current();
  const spec = input.eval;
  let bytes: Buffer;
  try {
    bytes = await p.store.getVerified(m.prefix, MODEL_FILE);
  } catch (err) {
    throw asFailure(err, `model ${m.prefix}`);
  }
  const graph = loadModel(bytes);
  const { ppl, tokens } = await lmPerplexity(graph, val, p.session(spec));
  ctx.heartbeat(`${m.name}: ppl ${ppl}`);
  const speed = await speedOf(p, bytes, graph, val, spec);
  ctx.heartbeat(`${m.name}: p50 ${speed.p50Ms} ms`);
  const samples = await samplesOf(p, bytes, input.modelConfig, tok, spec);
  return { name: m.name, ppl, tokens, p50Ms: speed.p50Ms, p95Ms: speed.p95Ms, tokensPerSec: speed.tokensPerSec, peakRssBytes: speed.peakRssBytes, sizeBytes: bytes.length, samples };
}

async function speedOf(p: PostTrainingContext, bytes: Uint8Array, graph: Graph, val: LmBatch[], spec: EvalSpec): Promise<SpeedResult> {
  const s = await createSession(bytes, { graphOptimizationLevel: 'all', ...p.session(spec) });
  try {
    // Full batches only: a short last batch would flatter tokens/s.
    const full = val.filter((b) => b.dims[0] === val[0].dims[0]);
    return await measureSpeed(s, full.map((b) => lmFeeds(graph, b.tokens, b.dims)), val[0].dims[0] * val[0].dims[1], { runs: spec.speedRuns, warmup: spec.warmup });
  } finally {
    await s.release();
  }
}

/** Each prompt continued by up to maxNewTokens tokens, fewer where the model runs out of positions. */
async function samplesOf(p: PostTrainingContext, bytes: Uint8Array, cfg: GptConfig, tok: Tokenizer, spec: EvalSpec): Promise<ModelEvaluation['samples']> {
  const samples: ModelEvaluation['samples'] = [];
  const d = await Decoder.create(bytes, decoderInfo(cfg, true), p.session(spec));
  try {
    const { maxNewTokens, temperature, topK, topP, seed } = spec.samples;
    for (const prompt of spec.samples.prompts) {
      const ids = await tok.encode(prompt);
      const sampling = { maxNewTokens: Math.min(maxNewTokens, d.room(ids.length)), temperature, topK, topP, seed, stopToken: tok.eot };
      const out = await failingAs(`eval.samples.prompts: "${prompt.slice(0, 40)}"`, () => d.generate(ids, sampling));
      samples.push({ prompt, text: await tok.decode(out.filter((t) => t !== tok.eot)) });
    }
  } finally {
    await d.release();
  }
  return samples;
}
