// versitygw as a go-installed tool (found like the Temporal CLI: VERSITYGW_PATH, PATH, the cache)
// and as a process: a real gateway on a free loopback port, with our credentials and its health
// check. What the store does on it is in store-conformance.test.ts.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildLogProgress, formatBuildProgress } from '../../infra/go-tool';
import { isPortFree } from '../../infra/ports';
import { LOCAL_S3_CREDENTIALS } from '../../infra/s3server';
import { ArtifactStore } from '../../infra/store';
import { ensureVersitygw, findVersitygw, startVersitygw, VERSITYGW_MODULE, versitygwHealthy, VersitygwNotFound } from '../../infra/versitygw';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-vgw-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('found in order VERSITYGW_PATH, PATH, cache; without Go the error says how to get one', async () => {
  const cache = path.join(tmp, 'cache');
  const bin = path.join(tmp, 'bin');
  const fake = (p: string) => {
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, '#!/bin/sh\n', { mode: 0o755 });
    return p;
  };
  const empty = { PATH: '/nonexistent', TRUTHGPT_CACHE_DIR: cache };
  expect(findVersitygw(empty)).toBeUndefined();
  const err = await ensureVersitygw(empty).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(VersitygwNotFound);
  expect((err as Error).message).toMatch(/^No versitygw found and no Go toolchain to build it\. .*VERSITYGW_PATH.*go install github\.com\/versity\/versitygw\/cmd\/versitygw@v1\.8\.0`\.$/);
  expect((err as Error).message).toContain(`GOBIN=${path.join(cache, 'bin')} `);
  const cached = fake(path.join(cache, 'bin', 'versitygw'));
  expect(findVersitygw(empty)).toBe(cached);
  const onPath = fake(path.join(bin, 'versitygw'));
  expect(findVersitygw({ ...empty, PATH: bin })).toBe(onPath);
  expect(findVersitygw({ ...empty, PATH: bin, VERSITYGW_PATH: cached })).toBe(cached);
  expect(() => findVersitygw({ VERSITYGW_PATH: path.join(bin, 'missing') })).toThrow(/VERSITYGW_PATH=.*missing is not an executable file/);
});

test('its build reports progress under its own name', () => {
  expect(buildLogProgress(`github.com/klauspost/compress/zstd\n${VERSITYGW_MODULE}\n`, VERSITYGW_MODULE)).toEqual({ packages: 2, activity: 'linking the binary' });
  const line = formatBuildProgress({ tool: 'versitygw v1.8.0', elapsedMs: 61_000, packages: 173, activity: 'compiling runtime', buildLog: 'cache/versitygw-build.log', done: false });
  expect(line).toBe('building versitygw v1.8.0: 1m01s, 173 packages compiled, compiling runtime (log: cache/versitygw-build.log)');
});

describe('the gateway process', () => {
  // The real binary: VERSITYGW_PATH (.ci/run), PATH or the cache, else built once with go.
  let bin: string;
  beforeAll(async () => {
    bin = await ensureVersitygw();
  }, 600_000);

  test('answers its health check on a free port, signs with our credentials only, and stops on close', async () => {
    const s3 = await startVersitygw({ dir: path.join(tmp, 'root'), port: 0, bucket: 'health-check', credentials: LOCAL_S3_CREDENTIALS, bin });
    try {
      expect(await versitygwHealthy(s3.endpoint)).toEqual({ ok: true, detail: `${s3.endpoint}/health answers 200` });
      // The bucket exists as a folder of the POSIX root.
      expect(fs.statSync(path.join(tmp, 'root', 'health-check')).isDirectory()).toBe(true);
      const settings = { endpoint: s3.endpoint, region: 'us-east-1', bucket: 'health-check', forcePathStyle: true };
      const good = new ArtifactStore({ ...settings, ...LOCAL_S3_CREDENTIALS });
      const bad = new ArtifactStore({ ...settings, accessKeyId: LOCAL_S3_CREDENTIALS.accessKeyId, secretAccessKey: 'not-the-secret' });
      try {
        await good.put('a.txt', Buffer.from('hi'));
        expect((await good.get('a.txt')).toString()).toBe('hi');
        await expect(bad.get('a.txt')).rejects.toMatchObject({ name: 'SignatureDoesNotMatch' });
      } finally {
        good.close();
        bad.close();
      }
    } finally {
      await s3.close();
    }
    expect(await isPortFree(s3.port)).toBe(true);
    expect((await versitygwHealthy(s3.endpoint, 500)).ok).toBe(false);
  });

  test('a port already in use is refused with the port named', async () => {
    const holder = net.createServer();
    const taken = await new Promise<number>((resolve) => holder.listen(0, '127.0.0.1', () => resolve((holder.address() as net.AddressInfo).port)));
    try {
      await expect(startVersitygw({ dir: path.join(tmp, 'taken'), port: taken, bucket: 'x-bucket', credentials: LOCAL_S3_CREDENTIALS, bin })).rejects.toThrow(
        `versitygw: port ${taken} on 127.0.0.1 is already in use`,
      );
    } finally {
      holder.close();
    }
  });
});
