// The closed error vocabulary (sdk-typescript common/src/failure.ts): deterministic problems fail
// with ApplicationFailure.nonRetryable and one of these stable `type`s, so a workflow's retry
// policy, a CLI and a user's catch block can all tell them apart. Infrastructure errors (a worker
// that died, S3 or Temporal briefly away) are left as plain errors and retry.
// Pure: workflows import this file.

import { ApplicationFailure } from '@temporalio/common';

export const ERROR_TYPES = {
  /** A spec or config field is invalid; the message names the field. */
  InvalidConfig: 'InvalidConfig',
  /** Input that is well-formed but unusable (unknown corpus genre, ...). */
  InvalidInput: 'InvalidInput',
  /** A training step produced a NaN/inf loss or weight; names step, shard and tensor. */
  NonFiniteLoss: 'NonFiniteLoss',
  /** A checkpoint or dataset file does not match its pinned sha256 or cannot be parsed; names the file. */
  CorruptCheckpoint: 'CorruptCheckpoint',
  /** A committed artifact the run depends on is gone; names the key. */
  MissingArtifact: 'MissingArtifact',
  /** The ORT result of a runtime probe disagrees with its reference. */
  RuntimeMismatch: 'RuntimeMismatch',
  /** TRUTHGPT_EP=cuda on a worker without the CUDA provider libraries. */
  CudaUnavailable: 'CudaUnavailable',
  /** A quantized variant marked `required` rose above its perplexity bound; names bound and figure. */
  QuantRejected: 'QuantRejected',
  /** A pipeline stage ended without its result (a child run that stopped early); names the stage. */
  StageFailed: 'StageFailed',
  /** A workflow or activity payload above Temporal's 256 KiB (spec/payloads.ts); names it and its size. */
  PayloadTooLarge: 'PayloadTooLarge',
} as const;
export type ErrorType = keyof typeof ERROR_TYPES;

/** Every type above: retry policies list these as non-retryable. */
export const NON_RETRYABLE_ERROR_TYPES: string[] = Object.values(ERROR_TYPES);

/**
 * A non-retryable failure of a vocabulary type; `details` (small JSON) travel with it.
 * @example throw failure('NonFiniteLoss', 'trainShard shard 1 round 3: step 151: loss is NaN', { shard: 1, step: 151 })
 */
export function failure(type: ErrorType, message: string, details?: Record<string, unknown>, cause?: Error): ApplicationFailure {
  return ApplicationFailure.create({ type: ERROR_TYPES[type], message, nonRetryable: true, details: details ? [details] : undefined, cause });
}

/** The vocabulary type of an error (or its cause chain), if it has one. */
export function errorTypeOf(err: unknown): ErrorType | undefined {
  for (let e = err as { type?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) {
    if (typeof e.type === 'string' && e.type in ERROR_TYPES) return e.type as ErrorType;
  }
  return undefined;
}

/**
 * The one retryable type of our own: an activity attempt whose worker process died (killed, crashed,
 * stalled past the watchdog). The stack's supervisor fails the dead worker's attempts with it at
 * once, so the retry starts now instead of after the heartbeat timeout. Not in ERROR_TYPES: a
 * retry policy must retry it.
 */
export const WORKER_LOST = 'WorkerLost';

/**
 * A retryable failure for an attempt whose worker is gone; the retry starts after `nextRetryDelayMs`.
 * @example await client.activity.fail(taskToken, workerLost('gpu worker pid 123 exited (SIGKILL)'))
 */
export function workerLost(message: string, details?: Record<string, unknown>, nextRetryDelayMs = 100): ApplicationFailure {
  return ApplicationFailure.create({ type: WORKER_LOST, message, nonRetryable: false, details: details ? [details] : undefined, nextRetryDelay: nextRetryDelayMs });
}
