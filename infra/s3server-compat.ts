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

import type S3rver from 's3rver';
import { Readable } from 'node:stream';

type Ctx = {
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

/** Installs the fixes; call before app.callback(), which freezes the middleware stack. */
export function installS3rverCompat(app: S3rver): void {
  // Just before the router, so the vhost rewrite has run and the XML encoder sees our body.
  app.middleware.splice(app.middleware.length - 1, 0, listObjectsV2ViaV1, firstByteRange);
}
