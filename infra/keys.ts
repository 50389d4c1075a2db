// Object keys and prefixes for the artifact store.
//
// The alphabet is deliberately narrow: every key must mean the same object on AWS S3, MinIO,
// R2, Ceph and the local s3rver (which maps keys onto file paths), and must survive a round trip
// through Temporal history, URLs and shell commands without escaping.

export const MAX_KEY_LENGTH = 1024;

const ALLOWED = /^[A-Za-z0-9._\-/=+]*$/;

/** A key or prefix broke one of the rules below; the message names the key and the rule. */
export class InvalidKeyError extends Error {
  override readonly name = 'InvalidKeyError';
  constructor(
    readonly key: string,
    readonly rule: string,
  ) {
    super(`invalid object key ${JSON.stringify(key)}: ${rule}`);
  }
}

function firstBadChar(key: string): string | undefined {
  for (const ch of key) {
    if (!ALLOWED.test(ch)) return ch;
  }
  return undefined;
}

/** Rules shared by keys and prefixes; `what` says which one is being checked in messages. */
function check(key: string, what: 'key' | 'prefix'): void {
  if (typeof key !== 'string') throw new InvalidKeyError(String(key), `${what} must be a string`);
  if (key.length > MAX_KEY_LENGTH) {
    throw new InvalidKeyError(key, `${what} is ${key.length} characters, longer than ${MAX_KEY_LENGTH}`);
  }
  if (key.startsWith('/')) throw new InvalidKeyError(key, `${what} must not start with '/'`);
  if (key.includes('\\')) throw new InvalidKeyError(key, `${what} must not contain a backslash`);
  if (key.includes('//')) throw new InvalidKeyError(key, `${what} must not contain an empty segment '//'`);
  const bad = firstBadChar(key);
  if (bad !== undefined) {
    const shown = bad.trim() === '' ? `U+${bad.codePointAt(0)!.toString(16).padStart(4, '0')}` : `'${bad}'`;
    throw new InvalidKeyError(key, `${what} contains ${shown}; allowed characters are A-Z a-z 0-9 . _ - / = +`);
  }
  for (const segment of key.split('/')) {
    if (segment === '..' || segment === '.') {
      throw new InvalidKeyError(key, `${what} must not contain a '${segment}' segment`);
    }
  }
}

/** Throws InvalidKeyError unless `key` names a single object; returns it for chaining. */
export function validateKey(key: string): string {
  if (key === '') throw new InvalidKeyError(key, 'key must not be empty');
  check(key, 'key');
  if (key.endsWith('/')) throw new InvalidKeyError(key, "key must not end with '/' (that names a folder)");
  return key;
}

/**
 * Validates a listing prefix and returns it. The empty prefix (whole bucket) and a trailing '/'
 * are allowed here, unlike in keys.
 */
export function validatePrefix(prefix: string): string {
  check(prefix, 'prefix');
  return prefix;
}

/**
 * Joins key parts with '/', ignoring slashes at the ends of each part, and validates the result.
 * An empty part is an error rather than skipped, because it almost always means an id that was
 * never filled in.
 *
 * @example joinKey('runs', runId, 'ckpt/v3/') === 'runs/abc/ckpt/v3'
 */
export function joinKey(...parts: string[]): string {
  if (parts.length === 0) throw new InvalidKeyError('', 'joinKey needs at least one part');
  const trimmed = parts.map((part, i) => {
    if (typeof part !== 'string') {
      throw new InvalidKeyError(parts.join('/'), `part ${i} is ${String(part)}, not a string`);
    }
    const t = part.replace(/^\/+|\/+$/g, '');
    if (t === '') throw new InvalidKeyError(parts.join('/'), `part ${i} is empty`);
    return t;
  });
  return validateKey(trimmed.join('/'));
}

/** The prefix without its trailing '/', validated as a key; used where a prefix names a folder. */
export function folderOf(prefix: string): string {
  return validateKey(prefix.replace(/\/+$/, ''));
}

/**
 * Checks the bucket name against the rules every S3 implementation shares (3-63 characters of
 * lowercase letters, digits, '.', '-', starting and ending with a letter or digit, no '..').
 */
export function validateBucketName(bucket: string): string {
  const rule = (msg: string) => new Error(`invalid bucket name ${JSON.stringify(bucket)}: ${msg}`);
  if (typeof bucket !== 'string' || bucket.length < 3 || bucket.length > 63) {
    throw rule('must be 3 to 63 characters long');
  }
  if (!/^[a-z0-9][a-z0-9.-]*[a-z0-9]$/.test(bucket)) {
    throw rule("use only lowercase letters, digits, '.' and '-', starting and ending with a letter or digit");
  }
  if (bucket.includes('..')) throw rule("must not contain '..'");
  if (/^\d+\.\d+\.\d+\.\d+$/.test(bucket)) throw rule('must not look like an IP address');
  return bucket;
}
