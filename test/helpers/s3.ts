// A real S3 server per test file: s3rver on a free loopback port over a temp directory.

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LOCAL_S3_CREDENTIALS, startS3Server, type S3Server } from '../../infra/s3server';
import { ArtifactStore, type S3Settings, type StoreOptions } from '../../infra/store';

export interface S3Fixture {
  store: ArtifactStore;
  settings: S3Settings;
  server: S3Server;
  /** The directory s3rver keeps the bucket in (objects are files under `<dir>/<bucket>/`). */
  dir: string;
  close(): Promise<void>;
}

/**
 * Starts s3rver on a free port in a fresh temp dir and returns a store on its bucket.
 *
 * @example
 *   let s3: S3Fixture;
 *   beforeAll(async () => { s3 = await withS3(); });
 *   afterAll(() => s3.close());
 */
export async function withS3(options: { bucket?: string; store?: StoreOptions } = {}): Promise<S3Fixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'truthgpt-s3-'));
  const bucket = options.bucket ?? 'truthgpt-test';
  const server = await startS3Server({ dir, port: 0, bucket });
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
    dir,
    async close() {
      store.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
