// The sizes a spec may ask for: integer ranges for the loops and the batch geometry, and the
// memory a training step may need on a worker. A spec that passes validation must not be able to
// freeze the stack (issue 15: a tiny spec with n_layer 10000 wrote a 496 MB checkpoint and then
// hung a worker at 3.8 GB).
//
// spec/ reads no environment: the worker memory limit comes in as SpecLimits, which the SDK and the
// CLI fill from infra/config.ts (TRUTHGPT_WORKER_MEMORY_GB); parsing without limits uses the
// documented default, DEFAULT_WORKER_MEMORY_GB.

import type { z } from 'zod';
import { GPT_SIZE_LIMITS, type GptConfig } from '../engine/models/gpt';
import { estimateTrainStepBytes, gib, type OptimizerMemoryKind, type TrainStepMemoryOptions } from '../engine/models/memory';

/** Upper bounds of the loops and of a batch (lower bounds are on the fields themselves). */
export const LOOP_LIMITS = {
  rounds: 100_000,
  innerSteps: 1_000_000,
  /** A fine-tune's total adapter steps. */
  steps: 10_000_000,
  batchSize: 65_536,
  contextLength: GPT_SIZE_LIMITS.block_size,
  /** batchSize × contextLength: tokens in one step's batch. */
  tokensPerStep: 2 ** 20,
} as const;

/** Adds an issue on `batchSize` when batchSize × contextLength is above LOOP_LIMITS.tokensPerStep. */
export function checkTokensPerStep(s: { batchSize: number; contextLength: number }, ctx: z.RefinementCtx, path: PropertyKey[] = []): void {
  const tokens = s.batchSize * s.contextLength;
  if (tokens > LOOP_LIMITS.tokensPerStep) {
    ctx.addIssue({ code: 'custom', path: [...path, 'batchSize'], message: `batchSize × contextLength must be at most ${LOOP_LIMITS.tokensPerStep} tokens per step (${s.batchSize} × ${s.contextLength} = ${tokens})` });
  }
}

/** The env var that sets the worker memory limit (read by infra/config.ts, never here). */
export const WORKER_MEMORY_ENV = 'TRUTHGPT_WORKER_MEMORY_GB';
/** The worker memory limit when none is configured, in GiB. */
export const DEFAULT_WORKER_MEMORY_GB = 16;

/** What a spec is checked against beyond its own fields. */
export interface SpecLimits {
  /** Bytes one training step may use on a worker. */
  workerMemoryBytes: number;
}

export const DEFAULT_SPEC_LIMITS: SpecLimits = { workerMemoryBytes: DEFAULT_WORKER_MEMORY_GB * 2 ** 30 };

/** SpecLimits for a limit in GiB (a config's TRUTHGPT_WORKER_MEMORY_GB). */
export const specLimits = (workerMemoryGb: number): SpecLimits => ({ workerMemoryBytes: workerMemoryGb * 2 ** 30 });

/** `bytes` as the message prints a limit: whole GiB without decimals. */
const limitText = (bytes: number) => (Number.isInteger(bytes / 2 ** 30) ? `${bytes / 2 ** 30} GiB` : gib(bytes));

/**
 * The message when a training step of `cfg` at (batchSize, contextLength) is estimated above the
 * worker memory limit (engine/models/memory.ts), else null.
 * @example trainingMemoryIssue(cfg, 8, 64, { kind: 'adamw' }, DEFAULT_SPEC_LIMITS)
 */
export function trainingMemoryIssue(cfg: GptConfig, batchSize: number, contextLength: number, optimizer: OptimizerMemoryKind, limits: SpecLimits, opts: TrainStepMemoryOptions = {}): string | null {
  const est = estimateTrainStepBytes(cfg, batchSize, contextLength, optimizer, opts);
  if (est.bytes <= limits.workerMemoryBytes) return null;
  return (
    `this model needs about ${gib(est.bytes)} per training step (n_layer ${cfg.n_layer} × n_embd ${cfg.n_embd}, batch ${batchSize} × context ${contextLength}), ` +
    `above the worker memory limit of ${limitText(limits.workerMemoryBytes)} (${WORKER_MEMORY_ENV})`
  );
}
