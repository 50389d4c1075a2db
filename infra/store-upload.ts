// Writing objects: one PutObject for small bodies, a multipart upload for large ones, always
// with the body's sha256 in the object metadata.
//
// S3 fixes metadata when an upload starts, so the hash must be known before the first byte is
// sent. Buffers and files are hashed first. A stream that does not fit in one part is spooled to
// a temp file while it is hashed, then uploaded from the file: this costs local disk, but works
// the same on every S3 implementation (no CopyObject to patch metadata afterwards, with its
// 5 GiB limit and the moment where the object exists without its hash).

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export const MiB = 1024 * 1024;
/** S3's floor for every part but the last. */
export const MIN_PART_SIZE = 5 * MiB;
export const MAX_PARTS = 10_000;
export const SHA256_META = 'sha256';

export interface UploadTarget {
  client: S3Client;
  bucket: string;
  key: string;
  contentType: string;
  /** User metadata without the sha256, which is added here. */
  metadata: Record<string, string>;
  partSize: number;
  concurrency: number;
  tmpDir: string;
  /** Send `If-None-Match: *` (single PutObject only). */
  ifNoneMatch?: boolean;
}

export interface PutResult {
  key: string;
  size: number;
  sha256: string;
  /** 1 for a single PutObject, otherwise the number of multipart parts. */
  parts: number;
}

export type PutBody = Buffer | Uint8Array | Readable;

function toBuffer(body: Buffer | Uint8Array): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/** Keeps the part count under S3's 10,000 limit by growing parts for very large bodies. */
function effectivePartSize(size: number, partSize: number): number {
  return Math.max(partSize, Math.ceil(size / MAX_PARTS));
}

async function putSingle(t: UploadTarget, body: Buffer, sha256: string): Promise<PutResult> {
  await t.client.send(
    new PutObjectCommand({
      Bucket: t.bucket,
      Key: t.key,
      Body: body,
      ContentLength: body.length,
      ContentType: t.contentType,
      Metadata: { ...t.metadata, [SHA256_META]: sha256 },
      // Create-only: the server refuses (412 PreconditionFailed) when the key exists. Servers
      // that do not implement it (s3rver) ignore the header; see ArtifactStore.conditionalWrites.
      IfNoneMatch: t.ifNoneMatch ? '*' : undefined,
    }),
  );
  return { key: t.key, size: body.length, sha256, parts: 1 };
}

/**
 * Uploads the parts that `nextPart` produces (in order, null at the end) with up to
 * `t.concurrency` in flight; aborts the upload on any failure so no parts are left behind.
 */
async function putMultipart(t: UploadTarget, sha256: string, nextPart: () => Promise<Buffer | null>): Promise<number> {
  const created = await t.client.send(
    new CreateMultipartUploadCommand({
      Bucket: t.bucket,
      Key: t.key,
      ContentType: t.contentType,
      Metadata: { ...t.metadata, [SHA256_META]: sha256 },
    }),
  );
  const uploadId = created.UploadId;
  if (!uploadId) throw new Error(`S3 returned no UploadId for multipart upload of s3://${t.bucket}/${t.key}`);

  const completed: CompletedPart[] = [];
  const inflight = new Set<Promise<void>>();
  try {
    for (let partNumber = 1; ; partNumber++) {
      const body = await nextPart();
      if (body === null) break;
      if (partNumber > MAX_PARTS) throw new Error(`s3://${t.bucket}/${t.key}: more than ${MAX_PARTS} parts; raise partSize`);
      const p: Promise<void> = t.client
        .send(new UploadPartCommand({ Bucket: t.bucket, Key: t.key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }))
        .then((r) => {
          completed.push({ PartNumber: partNumber, ETag: r.ETag });
        })
        .finally(() => inflight.delete(p));
      // Failures are observed through race/all below; this keeps the others from going unhandled.
      p.catch(() => undefined);
      inflight.add(p);
      if (inflight.size >= t.concurrency) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    completed.sort((a, b) => a.PartNumber! - b.PartNumber!);
    await t.client.send(
      new CompleteMultipartUploadCommand({ Bucket: t.bucket, Key: t.key, UploadId: uploadId, MultipartUpload: { Parts: completed } }),
    );
    return completed.length;
  } catch (err) {
    // Parts still in flight would otherwise land after the abort and be billed forever.
    await Promise.allSettled(inflight);
    await t.client.send(new AbortMultipartUploadCommand({ Bucket: t.bucket, Key: t.key, UploadId: uploadId })).catch(() => undefined);
    throw err;
  }
}

export const sha256OfBuffer = (body: Buffer | Uint8Array) => createHash('sha256').update(body).digest('hex');

/** Uploads bytes; `knownSha256` skips the hashing pass when the caller just computed it. */
export async function putBuffer(t: UploadTarget, body: Buffer | Uint8Array, knownSha256?: string): Promise<PutResult> {
  const buf = toBuffer(body);
  const sha256 = knownSha256 ?? sha256OfBuffer(buf);
  if (t.ifNoneMatch && buf.length > t.partSize) throw new Error(`put ${t.key}: a create-only (If-None-Match) write must fit in one part`);
  if (buf.length <= t.partSize) return putSingle(t, buf, sha256);
  const partSize = effectivePartSize(buf.length, t.partSize);
  let offset = 0;
  const parts = await putMultipart(t, sha256, async () => {
    if (offset >= buf.length) return null;
    const part = buf.subarray(offset, offset + partSize);
    offset += part.length;
    return part;
  });
  return { key: t.key, size: buf.length, sha256, parts };
}

export async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Uploads a local file; `knownSha256` skips the hashing pass when the caller just computed it. */
export async function putFile(t: UploadTarget, file: string, knownSha256?: string): Promise<PutResult> {
  const { size } = await stat(file);
  const sha256 = knownSha256 ?? (await sha256OfFile(file));
  const handle = await open(file, 'r');
  try {
    if (size <= t.partSize) {
      const buf = Buffer.alloc(size);
      await handle.read(buf, 0, size, 0);
      return await putSingle(t, buf, sha256);
    }
    const partSize = effectivePartSize(size, t.partSize);
    let offset = 0;
    const parts = await putMultipart(t, sha256, async () => {
      if (offset >= size) return null;
      const len = Math.min(partSize, size - offset);
      // A fresh buffer per part: earlier parts may still be uploading.
      const buf = Buffer.alloc(len);
      const { bytesRead } = await handle.read(buf, 0, len, offset);
      if (bytesRead !== len) throw new Error(`${file} changed while uploading to s3://${t.bucket}/${t.key} (short read at ${offset})`);
      offset += len;
      return buf;
    });
    return { key: t.key, size, sha256, parts };
  } finally {
    await handle.close();
  }
}

/**
 * Reads up to `limit` + 1 bytes: enough to tell whether the stream fits in one part. Returns the
 * bytes read and whether the stream ended.
 */
async function readHead(iter: AsyncIterator<unknown>, limit: number): Promise<{ chunks: Buffer[]; size: number; ended: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  while (size <= limit) {
    const r = await iter.next();
    if (r.done) return { chunks, size, ended: true };
    const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as string | Uint8Array);
    chunks.push(chunk);
    size += chunk.length;
  }
  return { chunks, size, ended: false };
}

/** A stream's bytes with their sha256: in memory when they fit in one part, else spooled to a file. */
export type HashedBody = { buffer: Buffer; sha256: string } | { file: string; sha256: string };

/**
 * Reads `stream` to its end, hashing it, and hands `use` its bytes: a Buffer when they fit in
 * `partSize`, else a temp file under `tmpDir` (removed afterwards). S3 fixes metadata when an
 * upload starts, so the hash must be known before the first byte is sent.
 */
export async function withHashedStream<T>(stream: Readable, partSize: number, tmpDir: string, use: (body: HashedBody) => Promise<T>): Promise<T> {
  const iter = stream[Symbol.asyncIterator]();
  const head = await readHead(iter, partSize);
  if (head.ended) {
    const buffer = Buffer.concat(head.chunks, head.size);
    return use({ buffer, sha256: sha256OfBuffer(buffer) });
  }
  const dir = await mkdtemp(path.join(tmpDir, 'truthgpt-put-'));
  const spool = path.join(dir, 'body');
  try {
    const hash = createHash('sha256');
    const out = createWriteStream(spool);
    async function* everything(): AsyncGenerator<Buffer> {
      for (const c of head.chunks) {
        hash.update(c);
        yield c;
      }
      for (let r = await iter.next(); !r.done; r = await iter.next()) {
        const c = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as string | Uint8Array);
        hash.update(c);
        yield c;
      }
    }
    await pipeline(everything(), out);
    return await use({ file: spool, sha256: hash.digest('hex') });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function putStream(t: UploadTarget, stream: Readable): Promise<PutResult> {
  return withHashedStream(stream, t.partSize, t.tmpDir, (b) => ('buffer' in b ? putBuffer(t, b.buffer, b.sha256) : putFile(t, b.file, b.sha256)));
}

export function defaultTmpDir(): string {
  return os.tmpdir();
}
