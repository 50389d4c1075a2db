// The artifact store: every tensor, dataset shard, checkpoint and report that outlives an
// activity lives here. It speaks plain S3 through @aws-sdk/client-s3, so AWS S3, MinIO, R2, Ceph
// and the local s3rver are one code path that differs only in S3Settings.
//
// Integrity: every write records the body's sha256 as object metadata (x-amz-meta-sha256) and
// every full read checks it, so a corrupted or truncated object fails loudly with its key
// instead of feeding garbage weights into a run. Multi-file artifacts are committed with a
// manifest written last (store-manifest.ts).

import {
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import { z } from 'zod';
import { joinKey, validateBucketName, validateKey, validatePrefix } from './keys';
import { IntegrityError, isConditionalConflict, isPreconditionFailed, NotFoundError, translateS3Error } from './store-errors';
import { downloadToFile, verifyingStream } from './store-read';
import { commitManifest, contentKeyOf, manifestKeyOf, readManifest, type CommitFile, type HashedBytes, type Manifest } from './store-manifest';
import type { TensorData } from '../engine/graph/ir';
import {
  defaultTmpDir,
  MIN_PART_SIZE,
  MiB,
  putBuffer,
  putFile,
  putStream,
  SHA256_META,
  sha256OfBuffer,
  sha256OfFile,
  withHashedStream,
  type PutBody,
  type PutResult,
  type UploadTarget,
} from './store-upload';
import { UploadThread } from './upload-thread';

export { CommitConflictError, IntegrityError, NotFoundError, RangeNotSatisfiableError, type CommitDifference } from './store-errors';
export { InvalidKeyError, joinKey, validateKey, validatePrefix } from './keys';
export { contentKeyOf, MANIFEST_NAME, parseContentKey, type CommitFile, type HashedBytes, type Manifest, type ManifestFile } from './store-manifest';
export type { PutBody, PutResult } from './store-upload';

/** Where the store lives. infra/config.ts builds this from TRUTHGPT_S3_* variables. */
export const S3SettingsSchema = z.object({
  /** Omit for AWS S3; set for MinIO, R2, Ceph, the local server (`http://127.0.0.1:9000`). */
  endpoint: z.string().url().optional(),
  region: z.string().min(1),
  bucket: z.string().min(1),
  /** Omit both keys to use the SDK's default chain (env, profile, instance role). */
  accessKeyId: z.string().min(1).optional(),
  secretAccessKey: z.string().min(1).optional(),
  sessionToken: z.string().min(1).optional(),
  /** true for MinIO, Ceph and the local server; false for AWS virtual-hosted buckets. */
  forcePathStyle: z.boolean(),
});
export type S3Settings = z.infer<typeof S3SettingsSchema>;

export interface StoreOptions {
  /** Multipart part size and the size above which uploads go multipart. Default 8 MiB, min 5 MiB. */
  partSize?: number;
  /** Parts uploaded at once. Default 4 (memory use is about concurrency x partSize). */
  concurrency?: number;
  /** Where streams larger than one part are spooled while hashed. Default os.tmpdir(). */
  tmpDir?: string;
}

export interface PutOptions {
  contentType?: string;
  /** Extra x-amz-meta-* entries; keys are lowercased by S3. `sha256` is reserved. */
  metadata?: Record<string, string>;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /** Absent on objects that were not written through an ArtifactStore. */
  sha256?: string;
  contentType?: string;
  lastModified?: Date;
  metadata: Record<string, string>;
}

export interface ListedObject {
  key: string;
  size: number;
}

function parseSettings(settings: S3Settings): S3Settings {
  const parsed = S3SettingsSchema.safeParse(settings);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`S3 settings: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const s = parsed.data;
  validateBucketName(s.bucket);
  if (Boolean(s.accessKeyId) !== Boolean(s.secretAccessKey)) {
    throw new Error('S3 settings: accessKeyId and secretAccessKey must be given together (or both left out for the default credential chain)');
  }
  return s;
}

/** The S3 client of `settings` (parsed), as every store and its upload thread use it. */
export function s3Client(s: S3Settings): S3Client {
  return new S3Client({
    endpoint: s.endpoint,
    region: s.region,
    forcePathStyle: s.forcePathStyle,
    credentials: s.accessKeyId
      ? { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey!, sessionToken: s.sessionToken }
      : undefined,
    // The SDK's default since early 2025 sends CRC32 trailers in aws-chunked bodies, which
    // s3rver stores verbatim (the object grows by the framing) and several S3-compatible
    // servers reject. We hash every object with sha256 ourselves, so ask only when required.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export class ArtifactStore {
  readonly bucket: string;
  readonly client: S3Client;
  private readonly partSize: number;
  private readonly concurrency: number;
  private readonly tmpDir: string;
  private conditional?: Promise<boolean>;
  /** Where bodies larger than one part are uploaded (infra/upload-thread.ts). */
  private readonly uploads: UploadThread;

  constructor(settings: S3Settings, options: StoreOptions = {}) {
    const s = parseSettings(settings);
    this.bucket = s.bucket;
    this.partSize = options.partSize ?? 8 * MiB;
    if (!Number.isInteger(this.partSize) || this.partSize < MIN_PART_SIZE) {
      throw new Error(`store option partSize: must be an integer >= ${MIN_PART_SIZE} (5 MiB, the S3 minimum), got ${options.partSize}`);
    }
    this.concurrency = options.concurrency ?? 4;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) {
      throw new Error(`store option concurrency: must be a positive integer, got ${options.concurrency}`);
    }
    this.tmpDir = options.tmpDir ?? defaultTmpDir();
    this.client = s3Client(s);
    this.uploads = new UploadThread(s);
  }

  /** Creates the bucket if it does not exist yet. */
  async ensureBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status !== 404) throw err;
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      // Another worker won the race to create it, which is what we wanted.
      if ((err as Error).name !== 'BucketAlreadyOwnedByYou') throw err;
    }
  }

  private target(key: string, options: PutOptions): UploadTarget {
    validateKey(key);
    const metadata = options.metadata ?? {};
    if (Object.keys(metadata).some((k) => k.toLowerCase() === SHA256_META)) {
      throw new Error(`put ${key}: metadata key "${SHA256_META}" is reserved for the store's own hash`);
    }
    return {
      client: this.client,
      bucket: this.bucket,
      key,
      contentType: options.contentType ?? 'application/octet-stream',
      metadata,
      partSize: this.partSize,
      concurrency: this.concurrency,
      tmpDir: this.tmpDir,
    };
  }

  /** Writes an object, multipart when it is larger than one part; returns its size and sha256. */
  async put(key: string, body: PutBody, options: PutOptions = {}): Promise<PutResult> {
    const t = this.target(key, options);
    try {
      if (body instanceof Readable) return await putStream(t, body);
      if (body instanceof Uint8Array) return await putBuffer(t, body);
    } catch (err) {
      throw translateS3Error(err, this.bucket);
    }
    throw new Error(`put ${key}: body must be a Buffer, Uint8Array or Readable`);
  }

  /** Uploads a local file (hashed first, then sent in parts straight from disk). */
  async putFile(key: string, file: string, options: PutOptions = {}): Promise<PutResult> {
    const t = this.target(key, options);
    try {
      return await putFile(t, file);
    } catch (err) {
      throw translateS3Error(err, this.bucket);
    }
  }

  /**
   * Writes an object whose key depends on its content: hashes the body first, then uploads it to
   * `keyOf(sha256)`. Streams larger than one part are spooled to a temp file meanwhile.
   */
  async putHashed(keyOf: (sha256: string) => string, body: PutBody | { path: string } | HashedBytes, options: PutOptions = {}): Promise<PutResult> {
    try {
      if (body instanceof Readable) {
        return await withHashedStream(body, this.partSize, this.tmpDir, (b) =>
          'buffer' in b ? putBuffer(this.target(keyOf(b.sha256), options), b.buffer, b.sha256) : putFile(this.target(keyOf(b.sha256), options), b.file, b.sha256),
        );
      }
      if (body instanceof Uint8Array) {
        const sha256 = sha256OfBuffer(body);
        return await this.putBytes(this.target(keyOf(sha256), options), body, sha256);
      }
      if (typeof body === 'object' && body !== null && 'bytes' in body) {
        return await this.putBytes(this.target(keyOf(body.sha256), options), body.bytes, body.sha256);
      }
      if (typeof body === 'object' && body !== null && typeof body.path === 'string') {
        const sha256 = await sha256OfFile(body.path);
        return await putFile(this.target(keyOf(sha256), options), body.path, sha256);
      }
    } catch (err) {
      throw translateS3Error(err, this.bucket);
    }
    throw new Error('putHashed: body must be a Buffer, Uint8Array, Readable or { path }');
  }

  /** Whether `bytes` would go up in more than one part (and so on the upload thread). */
  largerThanPart(bytes: number): boolean {
    return bytes > this.partSize;
  }

  /**
   * Writes `tensors` as a safetensors file to its content key under `folder` (as commit() would),
   * serialized, hashed and uploaded on the upload thread; commit() then takes the result as a
   * file already written. `packMs`: the thread's time serializing and hashing.
   */
  async putTensorFile(folder: string, name: string, tensors: Map<string, TensorData>, metadata: Record<string, string> = {}): Promise<PutResult & { packMs: number }> {
    const { client: _client, ...target } = this.target(contentKeyOf(folder, name, '0'.repeat(64)), {});
    try {
      const r = await this.uploads.putTensors(target, folder, name, tensors, metadata);
      return { key: r.key, size: r.size, sha256: r.sha256, parts: r.parts, packMs: r.packMs ?? 0 };
    } catch (err) {
      throw translateS3Error(err, this.bucket);
    }
  }

  /** Bytes of a known sha256: more than one part goes out on the upload thread (a training step may hold this one). */
  private putBytes(t: UploadTarget, body: Uint8Array, sha256: string): Promise<PutResult> {
    if (body.byteLength <= t.partSize) return putBuffer(t, body, sha256);
    const { client: _client, ...target } = t;
    return this.uploads.put(target, body, sha256);
  }

  /**
   * Creates `key` only if no object has it (`If-None-Match: *`); returns null when one does. On a
   * server that ignores the header this overwrites like put(): check conditionalWrites() first.
   */
  async putIfAbsent(key: string, body: Buffer, options: PutOptions = {}): Promise<PutResult | null> {
    const t = { ...this.target(key, options), ifNoneMatch: true };
    for (let attempt = 1; ; attempt++) {
      try {
        return await putBuffer(t, body);
      } catch (err) {
        if (isPreconditionFailed(err)) return null;
        // AWS S3 answers 409 while another conditional write of the key is in flight; its
        // outcome decides ours, so ask again shortly.
        if (isConditionalConflict(err) && attempt < 5) {
          await new Promise((r) => setTimeout(r, 100 * attempt));
          continue;
        }
        throw translateS3Error(err, this.bucket, key);
      }
    }
  }

  /**
   * Whether the server honours `If-None-Match: *` on PutObject (AWS S3, versitygw, MinIO do;
   * s3rver ignores it). Probed once per store, in `folder` (where the caller is about to write,
   * so write access is given): a probe object is written, written again create-only (which must
   * be refused), and deleted.
   */
  conditionalWrites(folder: string): Promise<boolean> {
    this.conditional ??= this.probeConditionalWrites(folder).catch((err: unknown) => {
      this.conditional = undefined;
      throw err;
    });
    return this.conditional;
  }

  private async probeConditionalWrites(folder: string): Promise<boolean> {
    const key = joinKey(folder, `.conditional-write-probe-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`);
    await this.put(key, Buffer.from('probe'));
    try {
      return (await this.putIfAbsent(key, Buffer.from('probe again'))) === null;
    } catch (err) {
      // A server that does not know the header at all may say so instead of ignoring it.
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NotImplemented' || e.$metadata?.httpStatusCode === 501) return false;
      throw err;
    } finally {
      await this.delete(key);
    }
  }

  async putJson(key: string, value: unknown): Promise<PutResult> {
    return this.put(key, Buffer.from(JSON.stringify(value, null, 2) + '\n'), { contentType: 'application/json' });
  }

  private async open(key: string, range?: [number, number]) {
    validateKey(key);
    try {
      return await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range ? `bytes=${range[0]}-${range[1]}` : undefined }),
      );
    } catch (err) {
      throw translateS3Error(err, this.bucket, key, range);
    }
  }

  /** Reads a whole object and checks it against its recorded sha256. */
  async get(key: string): Promise<Buffer> {
    return (await this.getHashed(key)).body;
  }

  /** get() that also returns the body's sha256 when it computed one (the object carries its hash). */
  private async getHashed(key: string): Promise<{ body: Buffer; sha256?: string }> {
    const res = await this.open(key);
    const body = Buffer.from(await res.Body!.transformToByteArray());
    const expected = res.Metadata?.[SHA256_META];
    if (expected === undefined) return { body };
    const actual = createHash('sha256').update(body).digest('hex');
    if (actual !== expected) throw new IntegrityError(this.bucket, key, expected, actual, 'object metadata');
    return { body, sha256: actual };
  }

  async getJson<T = unknown>(key: string): Promise<T> {
    const body = await this.get(key);
    try {
      return JSON.parse(body.toString('utf8')) as T;
    } catch (err) {
      throw new Error(`s3://${this.bucket}/${key} is not valid JSON: ${(err as Error).message}`);
    }
  }

  /**
   * Streams an object. The hash is checked as the bytes pass; on a mismatch the stream fails with
   * an IntegrityError instead of ending.
   */
  async getStream(key: string): Promise<Readable> {
    const res = await this.open(key);
    const expected = res.Metadata?.[SHA256_META];
    const source = res.Body as Readable;
    return expected === undefined ? source : verifyingStream(source, this.bucket, key, expected);
  }

  /** Streams an object into a local file, verified; the file appears only if the bytes check out. */
  async download(key: string, file: string, expectedSha256?: string): Promise<{ size: number; sha256: string }> {
    const res = await this.open(key);
    return downloadToFile(res.Body as Readable, this.bucket, key, file, [
      { sha256: res.Metadata?.[SHA256_META], source: 'object metadata' },
      { sha256: expectedSha256, source: 'the caller' },
    ]);
  }

  /** Bytes start..endInclusive of an object. Partial reads cannot be checked against the hash. */
  async getRange(key: string, start: number, endInclusive: number): Promise<Buffer> {
    if (!Number.isInteger(start) || !Number.isInteger(endInclusive) || start < 0 || endInclusive < start) {
      throw new Error(`getRange ${key}: need integers 0 <= start <= endInclusive, got ${start}..${endInclusive}`);
    }
    const res = await this.open(key, [start, endInclusive]);
    const body = Buffer.from(await res.Body!.transformToByteArray());
    // A server that ignores or misreads the range must not hand back the wrong bytes silently.
    const total = Number(/\/(\d+)$/.exec(res.ContentRange ?? '')?.[1] ?? NaN);
    const want = Number.isNaN(total) ? endInclusive - start + 1 : Math.min(endInclusive, total - 1) - start + 1;
    if (!res.ContentRange?.startsWith(`bytes ${start}-`) || body.length !== want) {
      throw new Error(
        `getRange s3://${this.bucket}/${key}: asked for bytes=${start}-${endInclusive}, server sent ${body.length} bytes (Content-Range: ${res.ContentRange ?? 'missing'})`,
      );
    }
    return body;
  }

  async head(key: string): Promise<ObjectInfo> {
    validateKey(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      const metadata = res.Metadata ?? {};
      return {
        key,
        size: res.ContentLength ?? 0,
        sha256: metadata[SHA256_META],
        contentType: res.ContentType,
        lastModified: res.LastModified,
        metadata,
      };
    } catch (err) {
      throw translateS3Error(err, this.bucket, key);
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.head(key);
      return true;
    } catch (err) {
      if (err instanceof NotFoundError && err.key !== undefined) return false;
      throw err;
    }
  }

  /** Deletes one object; deleting a missing key is not an error (S3 semantics, retry-safe). */
  async delete(key: string): Promise<void> {
    validateKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      throw translateS3Error(err, this.bucket, key);
    }
  }

  /** Deletes every object under a prefix (1000 per request); returns how many were deleted. */
  async deletePrefix(prefix: string): Promise<number> {
    if (prefix === '') throw new Error('deletePrefix: refusing to delete the whole bucket (empty prefix)');
    let deleted = 0;
    for await (const page of this.pages(prefix)) {
      if (page.length === 0) continue;
      try {
        const res = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: page.map((o) => ({ Key: o.key })), Quiet: true } }),
        );
        const failed = res.Errors ?? [];
        if (failed.length > 0) {
          throw new Error(`deletePrefix ${prefix}: could not delete ${failed.map((e) => `${e.Key} (${e.Code})`).join(', ')}`);
        }
      } catch (err) {
        throw translateS3Error(err, this.bucket);
      }
      deleted += page.length;
    }
    return deleted;
  }

  /** One page (up to `pageSize` <= 1000 keys) at a time, so huge prefixes need not fit in memory. */
  async *pages(prefix: string, pageSize = 1000): AsyncGenerator<ListedObject[]> {
    validatePrefix(prefix);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
      throw new Error(`list ${prefix}: pageSize must be an integer in 1..1000, got ${pageSize}`);
    }
    let token: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix || undefined, ContinuationToken: token, MaxKeys: pageSize }),
        );
      } catch (err) {
        throw translateS3Error(err, this.bucket);
      }
      yield (res.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0 }));
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  }

  /** Every object whose key starts with `prefix` (a raw S3 prefix: 'runs/a' also matches 'runs/ab/x'). */
  async list(prefix: string, pageSize = 1000): Promise<ListedObject[]> {
    const all: ListedObject[] = [];
    for await (const page of this.pages(prefix, pageSize)) all.push(...page);
    return all;
  }

  /**
   * Writes `files` under `<prefix>/sha256-<hex>/<name>` (content-addressed), then
   * `<prefix>/MANIFEST.json` with each file's key, size and sha256 plus `meta`. Readers treat the
   * prefix as absent until the manifest exists. Where the server honours conditional writes the
   * first commit of a prefix wins: a later one with the same files returns the committed
   * manifest, one with different files throws CommitConflictError (infra/store-manifest.ts).
   */
  async commit(prefix: string, files: Record<string, CommitFile>, meta: Record<string, unknown> = {}): Promise<Manifest> {
    return commitManifest(this, prefix, files, meta);
  }

  /** The committed manifest under `prefix`, or null when nothing has been committed there. */
  async readManifest(prefix: string): Promise<Manifest | null> {
    return readManifest(this, prefix);
  }

  /** One file of a committed prefix, checked against the manifest's size and sha256. */
  async getVerified(prefix: string, name: string): Promise<Buffer> {
    return this.getListed(await readManifest(this, prefix), prefix, name);
  }

  /**
   * getVerified with a manifest the caller already read (`null`: nothing committed there), so
   * reading several files of one commit reads its manifest once. The body is hashed once.
   */
  async getListed(manifest: Manifest | null, prefix: string, name: string): Promise<Buffer> {
    const entry = this.manifestEntry(manifest, prefix, name);
    const { body, sha256 } = await this.getHashed(entry.key);
    const source = `manifest ${manifestKeyOf(prefix)}`;
    if (body.length !== entry.size) throw new IntegrityError(this.bucket, entry.key, String(entry.size), String(body.length), source, 'size');
    const actual = sha256 ?? createHash('sha256').update(body).digest('hex');
    if (actual !== entry.sha256) throw new IntegrityError(this.bucket, entry.key, entry.sha256, actual, source);
    return body;
  }

  /**
   * getListed as a stream, for files read once and folded as they arrive (the aggregator's shard
   * weights): the bytes are hashed as they pass, and the stream fails with an IntegrityError at
   * its end instead of ending when the size or sha256 differs from the manifest's.
   */
  async getListedStream(manifest: Manifest | null, prefix: string, name: string): Promise<Readable> {
    const entry = this.manifestEntry(manifest, prefix, name);
    const res = await this.open(entry.key);
    const source = res.Body as Readable;
    const meta = res.Metadata?.[SHA256_META];
    const hash = createHash('sha256'); // one hash for both checks: the object's metadata and the manifest
    let size = 0;
    const where = `manifest ${manifestKeyOf(prefix)}`;
    const check = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
      flush: (cb) => {
        const actual = hash.digest('hex');
        if (meta !== undefined && actual !== meta) cb(new IntegrityError(this.bucket, entry.key, meta, actual, 'object metadata'));
        else if (size !== entry.size) cb(new IntegrityError(this.bucket, entry.key, String(entry.size), String(size), where, 'size'));
        else cb(actual === entry.sha256 ? null : new IntegrityError(this.bucket, entry.key, entry.sha256, actual, where));
      },
    });
    source.on('error', (err) => check.destroy(err));
    return source.pipe(check);
  }

  /** Like getVerified, into a local file (for checkpoints too large to hold twice in memory). */
  async downloadVerified(prefix: string, name: string, file: string): Promise<{ size: number; sha256: string }> {
    const manifest = await readManifest(this, prefix);
    const entry = this.manifestEntry(manifest, prefix, name);
    return this.download(entry.key, file, entry.sha256);
  }

  private manifestEntry(manifest: Manifest | null, prefix: string, name: string) {
    if (!manifest) {
      throw new NotFoundError(this.bucket, manifestKeyOf(prefix), 'prefix not committed');
    }
    const entry = manifest.files.find((f) => f.name === name);
    if (!entry) {
      const names = manifest.files.map((f) => f.name).join(', ');
      throw new NotFoundError(this.bucket, `${manifest.prefix}/${name}`, `not in ${manifestKeyOf(prefix)}; it lists: ${names || 'nothing'}`);
    }
    return entry;
  }

  /** Releases the HTTP connections; the store cannot be used afterwards. */
  close(): void {
    this.uploads.close();
    this.client.destroy();
  }
}
