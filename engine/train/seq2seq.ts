// The T5 (encoder-decoder) training step, the seq2seq counterpart of shard.ts's compileLmTrainStep:
// forward (t5.ts) → mean cross-entropy over the decoder targets with teacher forcing (labels −100
// ignored: padding) → reverse-mode gradients → the optimizer, in one graph, so one session.run is
// one step. Batch inputs are t5TrainLoss's: input_ids, attention_mask (B, srcLen) and
// decoder_input_ids, labels (B, tgtLen); engine/data/t5-span.ts (span corruption) and
// engine/data/seq2seq.ts (input/target jsonl) make them. With `lora` only the adapters train and
// the base weights are `frozen:` inputs.
//
// The returned CompiledTrainStep is the one shard.ts's runShard-style loops and the StepRunner use,
// so an activity drives it as it drives the GPT step: runner(snapshot).run(batch).

import '../autodiff/rules';
import { EngineError } from '../errors';
import { serializeModel } from '../graph/onnx';
import { isAdapterParam, loraModel, planLora, type LoraConfigInput, type LoraPlan } from '../lora';
import { T5ConfigSchema, t5Params, t5TrainLoss, type T5Config, type T5ConfigInput } from '../models/t5';
import type { OptimConfig } from '../optim';
import { createSession, StepRunner, type SessionConfig } from '../runtime';
import type { CompiledTrainStep } from './shard';
import { buildTrainStep, type TrainableModel, type TrainStep, type TrainStepOptions } from './step';
import { stepGraph } from './ksteps';

export interface Seq2seqTrainSetup {
  model: T5ConfigInput;
  optim: OptimConfig;
  batchSize: number;
  /** Encoder length (input_ids, attention_mask). */
  srcLen: number;
  /** Decoder length (decoder_input_ids, labels). */
  tgtLen: number;
  /** Train LoRA adapters (HF module names: q, k, v, o, wi / wi_0, wi_1, wo, or all-linear) instead of the weights. */
  lora?: LoraConfigInput | LoraPlan;
  /** Optimizer steps per session.run (an ONNX Loop over K steps, engine/train/ksteps.ts); default 1. */
  stepsPerRun?: number;
  /** Passed to appendOptimizer (e.g. `{ layout: 'flat' }`). */
  optimizer?: TrainStepOptions['optimizer'];
}

export interface Seq2seqTrainStep extends TrainStep {
  config: T5Config;
  /** The adapters' plan when the step trains LoRA (save with saveAdapter / hfT5AdapterFiles, merge with mergeWeights). */
  lora: LoraPlan | null;
}

function parseConfig(model: T5ConfigInput): T5Config {
  const parsed = T5ConfigSchema.safeParse(model);
  if (!parsed.success) throw new EngineError('config', `model config: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** The T5 as the trainer sees it, for (B, srcLen) → (B, tgtLen) batches. */
export function t5TrainableModel(cfg: T5Config, batchSize: number, srcLen: number, tgtLen: number): TrainableModel {
  return { params: t5Params(cfg), loss: t5TrainLoss(cfg, batchSize, srcLen, tgtLen) };
}

/** The LoRA plan of a T5 for `lora` (family t5 fills in PEFT's defaults, q and v). */
export function planT5Lora(cfg: T5Config, lora: LoraConfigInput): LoraPlan {
  return planLora(t5TrainableModel(cfg, 1, 2, 2), { family: 't5', ...lora });
}

/**
 * The one-graph training step of a T5: full weights, or LoRA adapters with the base frozen.
 * @example const step = buildT5TrainStep({ model: cfg, optim, batchSize: 8, srcLen: 64, tgtLen: 16 })
 */
export function buildT5TrainStep(s: Seq2seqTrainSetup): Seq2seqTrainStep {
  for (const [k, v] of [['batchSize', s.batchSize], ['srcLen', s.srcLen], ['tgtLen', s.tgtLen]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new EngineError('config', `seq2seq training: ${k} must be a positive integer, got ${v}`);
  }
  const config = parseConfig(s.model);
  const base = t5TrainableModel(config, s.batchSize, s.srcLen, s.tgtLen);
  if (!s.lora) return { ...buildTrainStep(base, s.optim, { graphName: 't5_train_step', optimizer: s.optimizer }), config, lora: null };
  const plan = 'modules' in s.lora ? s.lora : planT5Lora(config, s.lora);
  const step = buildTrainStep(loraModel(base, plan), s.optim, { graphName: 't5_lora_step', trainable: isAdapterParam, optimizer: s.optimizer });
  return { ...step, config, lora: plan };
}

/**
 * Builds the step and its ORT session once; `runner(init)` loads trainable weights (adapters under
 * LoRA), optimizer state and step; `frozen` (the base weights under LoRA) is shared by every runner.
 */
export async function compileT5TrainStep(
  s: Seq2seqTrainSetup,
  sessionConfig: SessionConfig = {},
  frozen: Map<string, Float32Array> = new Map(),
): Promise<CompiledTrainStep & { step: Seq2seqTrainStep }> {
  const step = buildT5TrainStep(s);
  const missing = step.frozen.filter((p) => !frozen.has(p.name)).map((p) => p.name);
  if (missing.length) throw new EngineError('input', `seq2seq training: the frozen base weights lack ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? `, … (${missing.length})` : ''}`);
  const stepsPerRun = s.stepsPerRun ?? 1;
  const session = await createSession(serializeModel(stepGraph(step, stepsPerRun)).model, { graphOptimizationLevel: 'all', ...sessionConfig });
  const frozenFeeds = Object.fromEntries(step.frozen.map((p) => [p.name, frozen.get(p.name)!]));
  return {
    step,
    session,
    runner: (init) => new StepRunner(session, { params: init.params, frozen: frozenFeeds, state: init.state, step: init.step, stepsPerRun }),
  };
}
