// The resumable inner loop of sharded training: from the round's global weights and this worker's
// inner optimizer state, run steps on one data shard up to `endStep`, handing a resumable snapshot
// (weights, optimizer state, data cursor) to a callback every N steps or T seconds.
//
// Why a resumed run ends bit-identical to an uninterrupted one: the batch of step s is a pure
// function of (seed, shard, s) (engine/data/sampler.ts), the optimizer's step counter is the same
// s, and a snapshot holds exactly the float32 buffers the next step reads. Nothing else carries
// state from one step to the next. With K steps per session.run (stepsPerRun, ksteps.ts) the same
// steps run in groups of K, giving the same bits; snapshots, heartbeats and cancellation then
// happen between runs, so a snapshot's step is always a run boundary.

import * as os from 'node:os';
import type * as ort from 'onnxruntime-node';
import { z } from 'zod';
import { EngineError } from '../errors';
import { sampleLmBatch } from '../data/sampler';
import type { TensorData } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { GptConfigSchema, gptParams, gptTrainLoss, type GptConfig } from '../models/gpt';
import { estimateTrainStepBytes, gib } from '../models/memory';
import { memoryConfigOf, memoryGptParams, memoryGptTrainLoss, type MemoryVariant } from '../models/memory-slots';
import type { OptimConfig } from '../optim';
import { createSession, StepRunner, type SessionConfig } from '../runtime';
import type { ActivationCheckpointing } from './checkpointing';
import { stepGraph } from './ksteps';
import { reportCudaFallbacks, type MixedPrecision } from './precision';
import { buildTrainStep, type TrainStep } from './step';

/** When the inner loop hands out a resumable snapshot; whichever comes first. */
export const CheckpointPolicySchema = z.strictObject({
  /** Every this many inner steps (0: never by count). */
  everySteps: z.number().int().nonnegative().default(25),
  /** Every this many seconds of training (0: never by time). */
  everySeconds: z.number().nonnegative().default(60),
});
export type CheckpointPolicy = z.infer<typeof CheckpointPolicySchema>;

/** Everything the next step reads: resuming from it continues the run exactly. */
export interface ShardSnapshot {
  /** The step the next run will make (also the data cursor: batches consumed so far). */
  step: number;
  params: Record<string, Float32Array>;
  state: Record<string, Float32Array>;
}

export interface ShardStepMetrics {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

export interface RunShardOptions {
  /** Loaded with the weights, optimizer state and step to continue from. */
  runner: StepRunner;
  ids: Uint16Array | Uint32Array;
  seed: number;
  shard: number;
  batchSize: number;
  contextLength: number;
  /** Runs until the runner's step reaches this value. */
  endStep: number;
  /** The feeds of step `step` for a model that is not a GPT language model (BERT: engine/train/bert.ts); default the LM windows of `ids`. */
  batch?: (step: number) => Record<string, TensorData>;
  checkpoint?: CheckpointPolicy & { save(snapshot: ShardSnapshot): Promise<void> };
  /**
   * Called after each step; throwing stops the loop (cancellation). May be async (heartbeats).
   * With K steps per run (the runner's stepsPerRun) it is called for each of a run's steps after
   * the run, and a throw stops the loop there: the runner then already stands at the run's end.
   */
  onStep?(m: ShardStepMetrics): void | Promise<void>;
  /** Milliseconds clock, injectable so tests need not sleep. */
  now?: () => number;
}

export interface ShardRunResult {
  history: ShardStepMetrics[];
  /** Snapshots handed to `checkpoint.save`, by step. */
  checkpoints: number[];
  tokens: number;
}

export function snapshotOf(runner: StepRunner): ShardSnapshot {
  return { step: runner.step, params: runner.getParams(), state: runner.getState() };
}

/** Loads a snapshot (or global weights plus carried optimizer state) into the runner. */
export function restoreSnapshot(runner: StepRunner, s: ShardSnapshot): void {
  runner.setParams(s.params);
  runner.setState(s.state);
  runner.setStep(s.step);
}

/**
 * Runs the shard's inner steps. The final state is not checkpointed here: the caller commits it
 * as the round's result.
 * @example await runShard({ runner, ids, seed: 0, shard: 1, batchSize: 4, contextLength: 32, endStep: 50 })
 */
export async function runShard(o: RunShardOptions): Promise<ShardRunResult> {
  const now = o.now ?? (() => performance.now());
  if (o.runner.step > o.endStep) throw new Error(`shard ${o.shard}: runner is at step ${o.runner.step}, past endStep ${o.endStep}`);
  const history: ShardStepMetrics[] = [];
  const checkpoints: number[] = [];
  const policy = o.checkpoint;
  let lastSave = now();
  let lastSaveStep = o.runner.step;
  const K = o.runner.stepsPerRun;
  if (policy && K > 1 && policy.everySteps % K !== 0) throw new EngineError('config', `checkpoint.everySteps (${policy.everySteps}) must be a multiple of stepsPerRun (${K}): a snapshot can only be taken between runs`);
  while (o.runner.step < o.endStep) {
    const step = o.runner.step;
    const feeds = (s: number) => (o.batch ? o.batch(s) : lmFeeds(o, s));
    // The last run of a span may be shorter than K: the same session takes any k <= K.
    const rs = K === 1 ? [await o.runner.run(feeds(step))] : await o.runner.runSteps(Array.from({ length: Math.min(K, o.endStep - step) }, (_, i) => feeds(step + i)));
    for (const r of rs) {
      const m = { step: r.step, loss: r.loss, gradNorm: r.gradNorm, lr: r.scalars.lr ?? NaN };
      history.push(m);
      await o.onStep?.(m);
    }
    const next = o.runner.step;
    if (policy && next < o.endStep) {
      const bySteps = policy.everySteps > 0 && next - lastSaveStep >= policy.everySteps;
      const byTime = policy.everySeconds > 0 && now() - lastSave >= policy.everySeconds * 1000;
      if (bySteps || byTime) {
        await policy.save(snapshotOf(o.runner));
        checkpoints.push(next);
        lastSave = now();
        lastSaveStep = next;
      }
    }
  }
  return { history, checkpoints, tokens: history.length * o.batchSize * o.contextLength };
}

/** The (B, T) token and next-token feeds of a GPT step. */
function lmFeeds(o: RunShardOptions, step: number): Record<string, TensorData> {
  const b = sampleLmBatch(o.ids, { seed: o.seed, shard: o.shard, step, batchSize: o.batchSize, contextLength: o.contextLength });
  const dims = [o.batchSize, o.contextLength];
  return { tokens: { dtype: 'int64', dims, data: b.tokens }, targets: { dtype: 'int64', dims, data: b.targets } };
}

/** The language-model training setup a shard runs: model, optimizer and batch geometry. */
export interface LmTrainSetup {
  model: GptConfig;
  optim: OptimConfig;
  batchSize: number;
  contextLength: number;
  /** Recompute blocks in the backward (engine/train/checkpointing.ts); default off. */
  activationCheckpointing?: ActivationCheckpointing;
  /** Optimizer steps per session.run (engine/train/ksteps.ts); default 1. */
  stepsPerRun?: number;
  /** Learned memory slots read by cross-attention in chosen layers (engine/models/memory-slots.ts); default none. */
  memory?: MemoryVariant;
  /** Half-precision forward/backward over fp32 master weights (engine/train/precision.ts); default fp32. */
  precision?: MixedPrecision;
}

/** The one-graph training step of a GPT language model with (B, T) token batches. */
export function buildLmTrainStep(s: LmTrainSetup): TrainStep {
  const cfg = GptConfigSchema.parse(s.model);
  if (s.memory) {
    const m = memoryConfigOf(cfg, s.memory);
    return buildTrainStep({ params: memoryGptParams(m), loss: memoryGptTrainLoss(m, s.batchSize, s.contextLength) }, s.optim, { activationCheckpointing: s.activationCheckpointing, precision: s.precision });
  }
  return buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, s.batchSize, s.contextLength) }, s.optim, { activationCheckpointing: s.activationCheckpointing, precision: s.precision });
}

export interface TrainMemoryLimits {
  /** The configured budget of a step on this worker (TRUTHGPT_WORKER_MEMORY_GB); the check uses the smaller of it and machineMemoryLimit(). */
  memoryLimitBytes?: number;
}

/** What a training step may use on this machine whatever the configuration: 80 % of its memory. */
export const machineMemoryLimit = () => Math.floor(os.totalmem() * 0.8);

/**
 * Throws EngineError('config') when the config is invalid or the step's memory estimate
 * (engine/models/memory.ts) is above the limit: checked before anything is allocated, so a step
 * too big for this worker fails at once and is not retried, instead of swapping the machine to a
 * halt.
 */
export function checkTrainMemory(s: LmTrainSetup, limits: TrainMemoryLimits = {}, session: Pick<SessionConfig, 'memPattern' | 'cpuArena'> = {}): void {
  const parsed = GptConfigSchema.safeParse(s.model);
  if (!parsed.success) throw new EngineError('config', `model config: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const cfg = parsed.data;
  const limitBytes = Math.min(limits.memoryLimitBytes ?? Infinity, machineMemoryLimit());
  const est = estimateTrainStepBytes(cfg, s.batchSize, s.contextLength, s.optim.optimizer, {
    activationCheckpointing: s.activationCheckpointing,
    ortMemory: { pattern: session.memPattern ?? true, arena: session.cpuArena ?? true },
  });
  if (est.bytes > limitBytes) {
    throw new EngineError(
      'config',
      `a training step of this model needs about ${gib(est.bytes)} (n_layer ${cfg.n_layer} × n_embd ${cfg.n_embd}, batch ${s.batchSize} × context ${s.contextLength}), above this worker's memory limit of ${gib(limitBytes)}`,
      { details: { estimateBytes: est.bytes, limitBytes } },
    );
  }
}

/** A compiled training step: build the graph and the ORT session once, then make runners over it. */
export interface CompiledTrainStep {
  step: TrainStep;
  session: ort.InferenceSession;
  /** A runner over the shared session, loaded with `init`. */
  runner(init: ShardSnapshot): StepRunner;
  /**
   * Hands back a runner its caller is done with (what it keeps is copied out): the next `runner()`
   * reloads it instead of allocating and filling new buffers (0.4–1.6 s a shard at medium under
   * load, bench/RESULTS.md). Absent: every runner is new.
   */
  recycle?(runner: StepRunner): void;
}

export async function compileLmTrainStep(s: LmTrainSetup, sessionConfig: SessionConfig = {}, limits: TrainMemoryLimits = {}): Promise<CompiledTrainStep> {
  checkTrainMemory(s, limits, sessionConfig);
  const step = buildLmTrainStep(s);
  if (s.precision?.mode === 'half') reportCudaFallbacks(step);
  const stepsPerRun = s.stepsPerRun ?? 1;
  const session = await createSession(serializeModel(stepGraph(step, stepsPerRun)).model, { graphOptimizationLevel: 'all', ...sessionConfig });
  const idle: StepRunner[] = [];
  return {
    step,
    session,
    runner: (init) => {
      const r = idle.pop();
      if (!r) return new StepRunner(session, { params: init.params, state: init.state, step: init.step, stepsPerRun });
      // Every param and state value is overwritten (a slot missing from `init.state` starts at
      // zero, as in a new runner), so a reused runner runs the same steps bit for bit.
      r.setParams(init.params);
      r.setState(Object.fromEntries(step.state.map((x) => [x.key, init.state[x.key] ?? new Float32Array(x.shape.reduce((a, b) => a * b, 1))])));
      r.setStep(init.step);
      return r;
    },
    recycle: (r) => {
      if (idle.length === 0) idle.push(r);
    },
  };
}

/**
 * The step `build` makes, compiled with `stepsPerRun` steps a call, and plain runners over it (the
 * other families' compile functions). Building the graph is deterministic, so a failure to build
 * fails the same way on every retry: a config error naming `what`.
 */
export async function compileBuiltStep(what: string, build: () => TrainStep, stepsPerRun: number, sessionConfig: SessionConfig): Promise<CompiledTrainStep> {
  let step: TrainStep;
  try {
    step = build();
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw new EngineError('config', `${what}: ${(err as Error).message}`);
  }
  const session = await createSession(serializeModel(stepGraph(step, stepsPerRun)).model, { graphOptimizationLevel: 'all', ...sessionConfig });
  return { step, session, runner: (init) => new StepRunner(session, { params: init.params, state: init.state, step: init.step, stepsPerRun }) };
}

/** Zero optimizer state for every slot of the step (what a worker starts its first round with). */
export function zeroState(step: TrainStep): Record<string, Float32Array> {
  const out: Record<string, Float32Array> = {};
  for (const s of step.state) out[s.key] = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
  return out;
}

/** Names of the trainable parameters and their shapes, for checkpoint tensors. */
export function paramShapes(step: TrainStep): Map<string, number[]> {
  return new Map(step.trainable.map((p) => [p.name, p.shape]));
}

export function stateShapes(step: TrainStep): Map<string, number[]> {
  return new Map(step.state.map((s) => [s.key, s.shape]));
}
