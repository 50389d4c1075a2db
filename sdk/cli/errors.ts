// How the CLI reports an error: one line a person can act on, never a stack trace (unless asked for
// with TRUTHGPT_DEBUG=1). Errors written for users print their message; errors from S3 or
// Temporal that users cause (wrong keys, an unknown bucket) get what to check; anything else is a
// bug or an outage and says how to see more.

import { EngineError } from '../../engine/errors';
import { SDK_USER_ERRORS } from '../index';

/** Errors whose message is written for the user who caused them. */
const USER_ERRORS = new Set([
  'ConfigError',
  'StackError',
  'TemporalCliNotFound',
  'WorkflowFailedError',
  'UsageError',
  'InvalidKeyError',
  'IntegrityError',
  'NotFoundError',
  'UnknownScheduleError',
  ...SDK_USER_ERRORS,
]);

/** S3 error codes that mean the credentials or the bucket are wrong, and what to check. */
const S3_SETUP_ERRORS: Record<string, string> = {
  InvalidAccessKeyId: 'S3 does not know this access key: check TRUTHGPT_S3_ACCESS_KEY_ID (and TRUTHGPT_S3_ENDPOINT)',
  SignatureDoesNotMatch: 'S3 refused the request signature: check TRUTHGPT_S3_SECRET_ACCESS_KEY',
  AccessDenied: 'S3 denied access: check the credentials and that they may read and write TRUTHGPT_S3_BUCKET',
  NoSuchBucket: 'the bucket does not exist: check TRUTHGPT_S3_BUCKET, or create it',
  ExpiredToken: 'the S3 session token has expired: refresh TRUTHGPT_S3_SESSION_TOKEN',
  InvalidToken: 'S3 refused the session token: check TRUTHGPT_S3_SESSION_TOKEN',
};

const firstLine = (s: string) => s.split('\n')[0]!;

/** The text the CLI prints for `err` (without the `truthgpt: ` prefix). */
export function describeCliError(err: unknown, env: NodeJS.ProcessEnv = process.env): string {
  const e = err instanceof Error ? err : new Error(String(err));
  if (env.TRUTHGPT_DEBUG === '1') return e.stack ?? e.message;
  if (USER_ERRORS.has(e.name) || e instanceof EngineError) return `${e.message}${e.cause instanceof Error ? `\n  cause: ${e.cause.message}` : ''}`;
  const s3 = S3_SETUP_ERRORS[e.name] ?? S3_SETUP_ERRORS[(e as { Code?: string }).Code ?? ''];
  if (s3) return `${s3} (S3 said ${e.name}: ${firstLine(e.message)})`;
  return `${e.name}: ${firstLine(e.message)} (this looks like a bug or an outage; TRUTHGPT_DEBUG=1 shows the stack trace)`;
}
