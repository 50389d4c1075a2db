// Where typed errors become the closed vocabulary (spec/errors.ts), for the readers here and for
// every activity: the engine's kinds (engine/errors.ts) and the store's read errors. An error of
// any other type is left as it is, so the activity that met it is retried.

import { EngineError, type EngineErrorKind } from '../engine/errors';
import { InvalidKeyError } from '../infra/keys';
import { IntegrityError, NotFoundError } from '../infra/store';
import { failure, type ErrorType } from '../spec/errors';

const VOCABULARY: Record<EngineErrorKind, ErrorType> = {
  config: 'InvalidConfig',
  input: 'InvalidInput',
  corrupt: 'CorruptCheckpoint',
  'non-finite': 'NonFiniteLoss',
  'cuda-unavailable': 'CudaUnavailable',
  'quant-rejected': 'QuantRejected',
};

export interface FailureContext {
  /** Merged over the error's own details. */
  details?: Record<string, unknown>;
  /** Appended to the message in parentheses: what the error cannot know (where the last good weights are). */
  note?: string;
}

/**
 * `err` as a non-retryable failure whose message starts with `what`, when its type says no retry
 * can fix it; otherwise `err` unchanged.
 * @example throw asFailure(err, `checkpoint ${prefix}`)
 */
export function asFailure(err: unknown, what: string, ctx: FailureContext = {}): unknown {
  const message = (e: Error) => `${what}: ${e.message}${ctx.note ? ` (${ctx.note})` : ''}`;
  if (err instanceof IntegrityError) return failure('CorruptCheckpoint', message(err), { key: err.key ?? null, ...ctx.details });
  if (err instanceof NotFoundError) return failure('MissingArtifact', message(err), { key: err.key ?? null, ...ctx.details });
  // A key that breaks the store's rules ('..', a bad character) is wrong on every attempt.
  if (err instanceof InvalidKeyError) return failure('InvalidInput', message(err), { key: err.key, ...ctx.details });
  if (err instanceof EngineError) {
    const details = err.details || ctx.details ? { ...err.details, ...ctx.details } : undefined;
    return failure(VOCABULARY[err.kind], message(err), details);
  }
  return err;
}

/**
 * Runs `fn`, rethrowing its typed errors as failures named by `what` (asFailure).
 * @example const r = await failingAs(`evaluate ${prefix}`, () => evaluator.evaluate(weights, ids, o))
 */
export async function failingAs<T>(what: string, fn: () => T | Promise<T>, ctx?: FailureContext): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asFailure(err, what, ctx);
  }
}
