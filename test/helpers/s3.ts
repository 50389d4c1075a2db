// A real S3 server per test file on a free loopback port over a temp directory: s3rver (the
// default) or versitygw (a production S3 gateway, built once with go; infra/versitygw.ts), chosen
// per call or, for every suite at once, with TRUTHGPT_S3_SERVER as for the local stack.

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LOCAL_S3_CREDENTIALS, startS3Server, type S3Server } from '../../infra/s3server';
import { ArtifactStore, type S3Settings, type StoreOptions } from '../../infra/store';
import { startVersitygw } from '../../infra/versitygw';

export type S3ServerKind = 's3rver' | 'versitygw';
export const S3_SERVER_KINDS: S3ServerKind[] = ['s3rver', 'versitygw'];

export interface S3Fixture {
  store: ArtifactStore;
  settings: S3Settings;
  server: S3Server;
  kind: S3ServerKind;
  /** The directory the server keeps the bucket in (objects are files under `<dir>/<bucket>/`). */
  dir: string;
  close(): Promise<void>;
}

function defaultServer(): S3ServerKind {
  const env = process.env.TRUTHGPT_S3_SERVER;
  if (env === undefined || env === '') return 's3rver';
  if (env === 's3rver' || env === 'versitygw') return env;
  throw new Error(`TRUTHGPT_S3_SERVER=${JSON.stringify(env)}: expected s3rver or versitygw`);
}

/**
 * Starts an S3 server on a free port in a fresh temp dir and returns a store on its bucket.
 *
 * @example
 *   let s3: S3Fixture;
 *   beforeAll(async () => { s3 = await withS3(); });   // or withS3({ server: 'versitygw' })
 *   afterAll(() => s3.close());
 */
export async function withS3(options: { bucket?: string; store?: StoreOptions; server?: S3ServerKind } = {}): Promise<S3Fixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'truthgpt-s3-'));
  const bucket = options.bucket ?? 'truthgpt-test';
  // TRUTHGPT_S3_SERVER=versitygw runs every suite that takes the default on versitygw.
  const kind = options.server ?? defaultServer();
  const server =
    kind === 'versitygw'
      ? await startVersitygw({ dir, port: 0, bucket, credentials: LOCAL_S3_CREDENTIALS })
      : await startS3Server({ dir, port: 0, bucket });
  const settings: S3Settings = {
    endpoint: server.endpoint,
    region: 'us-east-1',
    bucket,
    ...LOCAL_S3_CREDENTIALS,
    forcePathStyle: true,
  };
  const store = new ArtifactStore(settings, options.store);
  return {
    store,
    settings,
    server,
    kind,
    dir,
    async close() {
      store.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The sha256 each file of a committed prefix carries in its object metadata, found through the
 * manifest (commit keys are content-addressed, `<prefix>/sha256-<hex>/<name>`), by file name.
 */
export async function storedSha256s(store: ArtifactStore, prefix: string): Promise<Record<string, string | undefined>> {
  const m = await store.readManifest(prefix);
  if (!m) throw new Error(`nothing committed under ${prefix}`);
  return Object.fromEntries(await Promise.all(m.files.map(async (f) => [f.name, (await store.head(f.key)).sha256] as const)));
}
