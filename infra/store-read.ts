// Reading objects back with their sha256 checked, for the two shapes that do not fit in one
// Buffer comparison: a stream handed to the caller, and a download into a local file.

import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { IntegrityError } from './store-errors';

/**
 * Passes `source` through, hashing it; at the end a mismatch fails the stream with an
 * IntegrityError instead of ending it, so a consumer that waits for 'end' never accepts bad data.
 */
export function verifyingStream(source: Readable, bucket: string, key: string, expected: string): Readable {
  const hash = createHash('sha256');
  const check = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb) {
      const actual = hash.digest('hex');
      cb(actual === expected ? null : new IntegrityError(bucket, key, expected, actual, 'object metadata'));
    },
  });
  source.on('error', (err) => check.destroy(err));
  return source.pipe(check);
}

/** One hash a download must match, and where it came from (for the error message). */
export interface Expectation {
  sha256: string | undefined;
  source: string;
}

/**
 * Writes `source` to `file` through a temp name and renames it only after every expectation
 * holds, so a reader of `file` never sees corrupt or partial bytes.
 */
export async function downloadToFile(
  source: Readable,
  bucket: string,
  key: string,
  file: string,
  expectations: Expectation[],
): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  const partial = `${file}.partial-${process.pid}`;
  try {
    await pipeline(
      source,
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          size += chunk.length;
          cb(null, chunk);
        },
      }),
      createWriteStream(partial),
    );
    const actual = hash.digest('hex');
    for (const { sha256, source: from } of expectations) {
      if (sha256 !== undefined && sha256 !== actual) throw new IntegrityError(bucket, key, sha256, actual, from);
    }
    await rename(partial, file);
    return { size, sha256: actual };
  } finally {
    await rm(partial, { force: true });
  }
}
