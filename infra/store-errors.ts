// Errors the artifact store raises on purpose. Anything else that comes out of the store is an
// S3/network error from the SDK, left as it is so that Temporal's retry policy can see it.

/** The bytes read do not match the sha256 (or size) recorded when they were written. */
export class IntegrityError extends Error {
  override readonly name = 'IntegrityError';
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly expected: string,
    readonly actual: string,
    /** Where `expected` came from, e.g. "object metadata" or "manifest runs/a/MANIFEST.json". */
    readonly source: string,
    readonly field: 'sha256' | 'size' = 'sha256',
  ) {
    super(`integrity check failed for s3://${bucket}/${key}: ${field} is ${actual} but ${source} says ${expected}`);
  }
}

/** The object (or the bucket itself) does not exist. */
export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
  constructor(
    readonly bucket: string,
    readonly key: string | undefined,
    detail?: string,
  ) {
    super(
      key === undefined
        ? `bucket "${bucket}" does not exist${detail ? ` (${detail})` : ''}`
        : `s3://${bucket}/${key} not found${detail ? ` (${detail})` : ''}`,
    );
  }
}

/** A requested byte range lies outside the object. */
export class RangeNotSatisfiableError extends Error {
  override readonly name = 'RangeNotSatisfiableError';
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly start: number,
    readonly endInclusive: number,
  ) {
    super(`range bytes=${start}-${endInclusive} is outside s3://${bucket}/${key}`);
  }
}

interface SdkErrorShape {
  name?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

/**
 * Turns the SDK's not-found shapes (NoSuchKey on GET, a bare 404 "NotFound" on HEAD,
 * NoSuchBucket, 416 on a range) into our typed errors; returns anything else unchanged.
 */
export function translateS3Error(err: unknown, bucket: string, key?: string, range?: [number, number]): unknown {
  if (typeof err !== 'object' || err === null) return err;
  const e = err as SdkErrorShape;
  const code = e.name ?? e.Code;
  const status = e.$metadata?.httpStatusCode;
  if (code === 'NoSuchBucket') return new NotFoundError(bucket, undefined, 'NoSuchBucket');
  if (code === 'NoSuchKey' || code === 'NotFound' || status === 404) {
    return new NotFoundError(bucket, key, code === 'NoSuchKey' || code === 'NotFound' ? code : `HTTP ${status}`);
  }
  if (range && key !== undefined && (code === 'InvalidRange' || status === 416)) {
    return new RangeNotSatisfiableError(bucket, key, range[0], range[1]);
  }
  return err;
}

/** One file on which two commits of a prefix disagree; a side is absent when it lacks the file. */
export interface CommitDifference {
  name: string;
  ours?: string;
  committed?: string;
}

/**
 * Another commit of the same prefix created its manifest first, with different files. Its
 * checkpoint stands and stays intact (our files went to other keys, and those we alone wrote are
 * deleted again); re-read the prefix to use it. Only raised where the server honours
 * `If-None-Match: *` (ArtifactStore.conditionalWrites).
 */
export class CommitConflictError extends Error {
  override readonly name = 'CommitConflictError';
  constructor(
    readonly bucket: string,
    readonly prefix: string,
    readonly manifestKey: string,
    readonly differences: CommitDifference[],
  ) {
    const short = (h?: string) => (h ? `${h.slice(0, 12)}…` : 'absent');
    const shown = differences.slice(0, 5).map((d) => `${d.name} sha256 ${short(d.ours)} (ours) vs ${short(d.committed)} (committed)`);
    const more = differences.length > 5 ? `, and ${differences.length - 5} more` : '';
    super(
      `commit ${prefix}: another commit created s3://${bucket}/${manifestKey} first with different files (${shown.join('; ')}${more}); ` +
        `that commit stands, read it with readManifest("${prefix}")`,
    );
  }
}

/** True for the SDK's answer to a create-only write whose key exists (412 PreconditionFailed). */
export function isPreconditionFailed(err: unknown): boolean {
  const e = err as SdkErrorShape | null;
  return typeof e === 'object' && e !== null && (e.name === 'PreconditionFailed' || e.$metadata?.httpStatusCode === 412);
}

/** AWS S3's 409 for a create-only write that raced another write of the same key: retry it. */
export function isConditionalConflict(err: unknown): boolean {
  const e = err as SdkErrorShape | null;
  return typeof e === 'object' && e !== null && e.name === 'ConditionalRequestConflict';
}
