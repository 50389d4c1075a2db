// Fixes for s3rver 3.7.1 under today's Node, kept apart from the server wiring.
//
// ListObjectsV2 pagination: s3rver encrypts its continuation tokens with single DES, which the
// OpenSSL 3 build inside Node >= 17 refuses unless the process starts with
// --openssl-legacy-provider. Every listing that has more keys than max-keys then fails with
// InternalError. We answer V2 listings through s3rver's V1 (marker) path instead and hand out
// our own opaque token: the last key of the page, base64url-encoded with a version tag.
//
// One-byte range at the start: s3rver reads `Range: bytes=0-0` as "from 0 to the end" (it tests
// the end offset for truthiness) and sends the whole object as a 206. We cut the reply to the
// single byte that was asked for.
//
// Atomic objects: s3rver keeps an object as three files (bytes, metadata JSON, md5) that it
// rewrites in place, one after the other, and answers a PUT before its bytes are flushed. Two
// requests on one key at once could then leave one's bytes under the other's metadata (our
// sha256 check fails, or a GET whose Content-Length is not the body's hangs until the socket
// drops), and a GET during a PUT could read half an object. S3 makes every object write atomic,
// and racing commits write one manifest key at once (infra/store-manifest.ts), so requests on one
// key run one at a time here (a GET until its body is sent), and a PUT answers once its bytes are
// on disk.
//
// Crash-safe objects: a server killed mid-PUT (SIGKILL, power loss of the process) must leave
// either the old object or none, never a torn one. s3rver wrote the three files in place, so a
// kill could leave an empty metadata file that makes every later GET and every listing of its
// folder answer InternalError until someone deletes it by hand (seen in the fault campaign). Each
// file is now written beside its place under a `.partial-` name and renamed over it (rename is
// atomic on POSIX), md5 and metadata first and the bytes last, so a key's object file appears only
// once everything it needs is there. At start, `recoverTornWrites` removes leftover `.partial-`
// files and the remains of PUTs torn by older versions (a metadata file that is not JSON): a PUT
// is answered only after its metadata is written, so none of them was ever acknowledged.

import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type S3rver from 's3rver';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

type Ctx = {
  res: NodeJS.WritableStream;
  method: string;
  headers: Record<string, string | undefined>;
  length: number;
  set(field: string, value: string): void;
  response: { get(field: string): string };
  path: string;
  query: Record<string, string | undefined>;
  status: number;
  type: string;
  body: unknown;
};

const TOKEN_TAG = 'truthgpt-v1:';

function encodeToken(lastKey: string): string {
  return Buffer.from(TOKEN_TAG + lastKey, 'utf8').toString('base64url');
}

function decodeToken(token: string): string | undefined {
  const text = Buffer.from(token, 'base64url').toString('utf8');
  return text.startsWith(TOKEN_TAG) ? text.slice(TOKEN_TAG.length) : undefined;
}

function invalidArgument(ctx: Ctx, message: string): void {
  ctx.status = 400;
  ctx.type = 'application/xml';
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>InvalidArgument</Code><Message>${message}</Message></Error>`;
}

interface V1Result {
  '@'?: unknown;
  Name: string;
  Prefix: string;
  MaxKeys: string | number;
  Delimiter?: string;
  IsTruncated: boolean;
  Contents: { Key: string; Owner?: unknown }[];
  CommonPrefixes: { Prefix: string }[];
}

async function listObjectsV2ViaV1(ctx: Ctx, next: () => Promise<void>): Promise<void> {
  // A bucket listing is GET /<bucket> (path style, or after the vhost rewrite) with list-type=2.
  if (ctx.method !== 'GET' || ctx.query['list-type'] !== '2' || !/^\/[^/]+\/?$/.test(ctx.path)) {
    return next();
  }
  const { 'list-type': _listType, 'continuation-token': token, 'start-after': startAfter, 'fetch-owner': fetchOwner, ...rest } =
    ctx.query;
  let marker = startAfter;
  if (token) {
    marker = decodeToken(token);
    if (marker === undefined) return invalidArgument(ctx, 'The continuation token provided is incorrect');
  }
  ctx.query = { ...rest, ...(marker ? { marker } : {}) } as Record<string, string>;
  await next();

  const body = ctx.body as { ListBucketResult?: V1Result } | undefined;
  const v1 = body?.ListBucketResult;
  if (!v1) return;
  const contents = v1.Contents.map((c) => (fetchOwner === 'true' ? c : { ...c, Owner: undefined }));
  const last = contents.at(-1)?.Key ?? v1.CommonPrefixes.at(-1)?.Prefix;
  ctx.body = {
    ListBucketResult: {
      '@': v1['@'],
      Name: v1.Name,
      Prefix: v1.Prefix,
      StartAfter: token ? undefined : startAfter,
      ContinuationToken: token || undefined,
      NextContinuationToken: v1.IsTruncated && last !== undefined ? encodeToken(last) : undefined,
      KeyCount: contents.length + v1.CommonPrefixes.length,
      MaxKeys: v1.MaxKeys,
      Delimiter: v1.Delimiter,
      IsTruncated: v1.IsTruncated,
      Contents: contents,
      CommonPrefixes: v1.CommonPrefixes,
    },
  };
}

async function firstByteRange(ctx: Ctx, next: () => Promise<void>): Promise<void> {
  if (ctx.method !== 'GET' || !/^bytes=0+-0+$/.test(ctx.headers['range'] ?? '')) return next();
  await next();
  const total = /^bytes \d+-\d+\/(\d+)$/.exec(ctx.response.get('Content-Range'));
  if (ctx.status !== 206 || !total) return;
  const body = ctx.body;
  let first = Buffer.alloc(0);
  if (body instanceof Readable) {
    for await (const chunk of body) {
      first = Buffer.from(chunk as Buffer).subarray(0, 1);
      break;
    }
    body.destroy();
  }
  ctx.set('Content-Range', `bytes 0-0/${total[1]}`);
  ctx.body = first;
  ctx.length = 1;
}

/** Requests on one object key run one after another; others are not held up. */
function oneRequestPerKey(): (ctx: Ctx, next: () => Promise<void>) => Promise<void> {
  const tails = new Map<string, Promise<void>>();
  return async (ctx, next) => {
    // `/<bucket>/<key>` after the vhost rewrite; a multipart part goes to its upload's folder,
    // not to the object, so parts of one upload still go up in parallel.
    const key = /^\/[^/]+\/.+/.test(ctx.path) && ctx.query.partNumber === undefined ? ctx.path : undefined;
    if (!key) return next();
    const before = tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = before.then(() => mine);
    tails.set(key, tail);
    await before;
    let streaming = false;
    try {
      await next();
      const body = ctx.body;
      if (body instanceof Readable && !body.destroyed) {
        // Koa sends the body after the middleware returns: hold the key until it is out.
        streaming = true;
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          release();
        };
        ctx.res.once('close', finish);
        body.once('close', finish);
        body.once('error', finish);
      }
    } finally {
      if (!streaming) release();
      void tail.then(() => {
        if (tails.get(key) === tail) tails.delete(key);
      });
    }
  };
}

interface S3rverObject {
  bucket: string;
  key: string;
  content: Buffer | Readable;
  metadata: Record<string, string>;
}

interface S3rverFilesystemStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  putObject(object: S3rverObject): Promise<{ size: number; md5: string }>;
}

/** The metadata s3rver keeps for an object: its standard headers and the user's `x-amz-meta-*`. */
const STORED_HEADERS = new Set(['cache-control', 'content-disposition', 'content-encoding', 'content-language', 'content-type', 'expires', 'x-amz-storage-class', 'x-amz-website-redirect-location']);
const storedMetadata = (metadata: Record<string, string>) => Object.fromEntries(Object.entries(metadata).filter(([k]) => STORED_HEADERS.has(k) || k.startsWith('x-amz-meta-')));

/** Where a file is written before it is renamed into place; never ends in `._S3rver_object`. */
const PARTIAL = '.partial-';
let partials = 0;
const partialOf = (file: string) => `${file}${PARTIAL}${process.pid}-${++partials}`;

/** Writes `data` beside `file` and renames it over `file`. */
async function replaceFile(file: string, data: string): Promise<void> {
  const tmp = partialOf(file);
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * s3rver's FilesystemStore.putObject, except that it returns once the bytes are written and that
 * a crash at any moment leaves the key as it was (each file renamed into place, the bytes last).
 */
function putObjectAtomic(store: S3rverFilesystemStore): S3rverFilesystemStore['putObject'] {
  return async (object) => {
    const objectPath = store.getResourcePath(object.bucket, object.key, 'object');
    mkdirSync(path.dirname(objectPath), { recursive: true });
    const md5 = createHash('md5');
    let size = 0;
    const source = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
    const tmp = partialOf(objectPath);
    try {
      await pipeline(
        source,
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            md5.update(chunk);
            size += chunk.length;
            cb(null, chunk);
          },
        }),
        createWriteStream(tmp),
      );
      const digest = md5.digest('hex');
      await replaceFile(store.getResourcePath(object.bucket, object.key, 'object.md5'), digest);
      await replaceFile(store.getResourcePath(object.bucket, object.key, 'metadata.json'), JSON.stringify(storedMetadata(object.metadata), null, 2));
      await rename(tmp, objectPath);
      return { size, md5: digest };
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  };
}

/**
 * Removes what killed PUTs left under `dir` (the folder of buckets): `.partial-` files, and every
 * file of a key whose metadata is not JSON (a torn in-place write of an older version). Run before
 * the server answers its first request. Returns the paths removed.
 */
export function recoverTornWrites(dir: string): string[] {
  const removed: string[] = [];
  const remove = (f: string) => {
    rmSync(f, { force: true });
    removed.push(f);
  };
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      if (e.isDirectory()) walk(f);
      else if (e.name.includes(PARTIAL)) remove(f);
      else if (e.name.endsWith('._S3rver_metadata.json') && !isJsonFile(f)) {
        const base = f.slice(0, -'metadata.json'.length);
        for (const other of [`${base}object`, `${base}object.md5`]) if (existsSync(other)) remove(other);
        remove(f);
      }
    }
  };
  if (existsSync(dir)) walk(dir);
  return removed;
}

function isJsonFile(f: string): boolean {
  try {
    JSON.parse(readFileSync(f, 'utf8'));
    return true;
  } catch {
    return false;
  }
}

/** Installs the fixes; call before app.callback(), which freezes the middleware stack. */
export function installS3rverCompat(app: S3rver): void {
  const store = (app as unknown as { store: S3rverFilesystemStore }).store;
  store.putObject = putObjectAtomic(store);
  // Just before the router, so the vhost rewrite has run and the XML encoder sees our body.
  app.middleware.splice(app.middleware.length - 1, 0, oneRequestPerKey(), listObjectsV2ViaV1, firstByteRange);
}
