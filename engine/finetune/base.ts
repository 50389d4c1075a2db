// What a fine-tune adapts, behind one interface: our GPT checkpoints (gpt-base.ts) and imported
// .onnx models (onnx-base.ts). Either way only the adapters are `param:` inputs, so the resumable
// inner loop of training (engine/train/shard.ts runShard, which feeds `tokens`/`targets` batches)
// runs unchanged: an imported model's runner maps those two onto its own inputs.

import type * as ort from 'onnxruntime-node';
import type { LmBatch } from '../data/sampler';
import { EngineError } from '../errors';
import type { Graph } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import type { LoraPlan } from '../lora';
import type { OptimConfig } from '../optim';
import { createSession, type SessionConfig, type StepRunner } from '../runtime';
import type { ShardSnapshot } from '../train/shard';
import type { ActivationCheckpointing } from '../train/checkpointing';
import type { MixedPrecision } from '../train/precision';
import type { TrainStep } from '../train/step';

export interface Geometry {
  batchSize: number;
  contextLength: number;
  /** How compile builds the step: recompute blocks in the backward (engine/train/checkpointing.ts); default off. */
  activationCheckpointing?: ActivationCheckpointing;
  /** How compile builds the step: optimizer steps per session.run (engine/train/ksteps.ts); default 1. */
  stepsPerRun?: number;
  /** How compile builds the step: half-precision forward/backward (engine/train/precision.ts); default fp32. GPT bases only. */
  mixed?: MixedPrecision;
}

export interface EvalOut {
  loss: number;
  perplexity: number;
  tokens: number;
}

export interface EvalOpts extends Geometry {
  maxBatches: number;
  seed: number;
  session: SessionConfig;
  /** Called after each scored batch with the number so far (a heartbeat; it may throw to stop). */
  onBatch?: (done: number) => void;
}

export interface CompiledLoraStep {
  step: TrainStep;
  runner(init: ShardSnapshot): StepRunner;
}

export interface LoraBase {
  /** `gpt` for our checkpoints; the LoRA family (or `onnx`) for imported files. */
  family: string;
  plan: LoraPlan;
  baseParamCount: number;
  /** Largest token id + 1 the model accepts. */
  vocabSize: number;
  compile(optim: OptimConfig, geo: Geometry, session: SessionConfig): Promise<CompiledLoraStep>;
  /** Validation loss of base + adapters (unmerged; `null`: the base alone). */
  evaluate(adapters: Map<string, Float32Array> | null, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut>;
  /** Validation loss of the merged model (adapters folded into the base weights). */
  evaluateMerged(adapters: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut>;
}

/** What a fine-tune did to its base, as a run's result and its report state it. */
export interface LoraMetrics {
  /** Validation loss of the base (or the adapter it continued from) before training. */
  valLossBefore: number;
  /** Base + trained adapter, unmerged. */
  valLossAfter: number;
  perplexityBefore: number;
  perplexityAfter: number;
  /** Adapter parameters, all parameters (base + adapters), and their ratio. */
  trainable: number;
  total: number;
  trainableFraction: number;
  steps: number;
}

export const sessionOf = (g: Graph, cfg: SessionConfig): Promise<ort.InferenceSession> =>
  createSession(serializeModel(g).model, { graphOptimizationLevel: 'all', ...cfg });

/** Token-weighted mean over batches of a graph that outputs the summed loss. */
export async function scoreBatches(batches: Iterable<LmBatch>, maxBatches: number, run: (b: LmBatch, index: number) => Promise<{ sum: number; tokens: number }>, onBatch?: (done: number) => void): Promise<EvalOut> {
  let sum = 0;
  let tokens = 0;
  let n = 0;
  for (const b of batches) {
    if (n >= maxBatches) break;
    const r = await run(b, n++);
    sum += r.sum;
    tokens += r.tokens;
    onBatch?.(n);
  }
  if (tokens === 0) throw new EngineError('config', 'validation split has no scored tokens');
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}
