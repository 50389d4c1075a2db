// `truthgpt verify` on a real S3 server: committed objects overwritten with flipped or truncated
// bytes, or deleted, behind the store's back (as a disk or an operator would) are each named once;
// intact commits pass; a prefix limits the walk; the CLI exits 1 with one line per damaged object.

import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { verifyCommitted } from '../../artifacts/verify';
import { withS3, type S3Fixture } from '../helpers/s3';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');

let s3: S3Fixture;
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

beforeAll(async () => {
  s3 = await withS3();
});
afterAll(() => s3?.close());

test('flipped, truncated and deleted committed files are each named; intact commits pass', async () => {
  const { store } = s3;
  const a = await store.commit('runs/v1/global/r000001', { 'model.safetensors': bytes(5000, 1), 'checkpoint.json': Buffer.from('{"step":1}') });
  const b = await store.commit('runs/v1/shards/s0/r000000/final', { 'model.safetensors': bytes(3000, 2) });
  const d = await store.commit('datasets/v1-abc', { 'train-0.bin': bytes(4000, 3), 'val.bin': bytes(1000, 4) });
  await store.commit('runs/v2/global/r000000', { 'model.safetensors': bytes(2000, 5) });
  const key = (m: typeof a, name: string) => m.files.find((f) => f.name === name)!.key;

  // Before any damage: everything verifies.
  const clean = await verifyCommitted(store, '');
  expect(clean).toEqual({ manifests: 4, files: 6, bytes: 5000 + 10 + 3000 + 4000 + 1000 + 2000, problems: [] });

  const flipped = bytes(5000, 1);
  flipped[1234] ^= 0x10;
  await store.put(key(a, 'model.safetensors'), flipped);
  await store.put(key(d, 'train-0.bin'), bytes(4000, 3).subarray(0, 2500));
  await store.delete(key(b, 'model.safetensors'));

  const r = await verifyCommitted(store, '');
  expect(r.manifests).toBe(4);
  expect(r.files).toBe(3);
  expect(r.problems.map((p) => [p.kind, p.key]).sort()).toEqual(
    [
      ['corrupt', key(a, 'model.safetensors')],
      ['corrupt', key(d, 'train-0.bin')],
      ['missing', key(b, 'model.safetensors')],
    ].sort(),
  );
  expect(r.problems.find((p) => p.key === key(d, 'train-0.bin'))!.detail).toMatch(/^2500 bytes hashing to [0-9a-f]{12}, committed as 4000 bytes [0-9a-f]{12}$/);

  // A prefix limits the walk.
  const ds = await verifyCommitted(store, 'datasets/');
  expect([ds.manifests, ds.files, ds.problems.map((p) => p.key)]).toEqual([1, 1, [key(d, 'train-0.bin')]]);

  // The CLI: one line per problem, the summary last, exit 1.
  const env = {
    ...process.env,
    TRUTHGPT_S3_ENDPOINT: s3.settings.endpoint!,
    TRUTHGPT_S3_BUCKET: s3.settings.bucket,
    TRUTHGPT_S3_ACCESS_KEY_ID: s3.settings.accessKeyId!,
    TRUTHGPT_S3_SECRET_ACCESS_KEY: s3.settings.secretAccessKey!,
  };
  const cli = await run(process.execPath, [path.join(REPO, 'bin/truthgpt.js'), 'verify', 'runs/'], { cwd: REPO, env }).then(
    (o) => ({ code: 0, ...o }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  expect(cli.code).toBe(1);
  const lines = cli.stdout.trim().split('\n');
  expect(lines).toHaveLength(3);
  expect(lines[0]).toMatch(new RegExp(`^(CORRUPT|MISSING) +s3://${s3.settings.bucket}/runs/v1/`));
  expect(lines.slice(0, 2).map((l) => l.split(/\s+/)[0]).sort()).toEqual(['CORRUPT', 'MISSING']);
  expect(lines[2]).toBe('runs/: 3 commits, 2 files (0.0 MiB) verified, 2 damaged or missing');

  const ok = await run(process.execPath, [path.join(REPO, 'bin/truthgpt.js'), 'verify', 'runs/v2/'], { cwd: REPO, env });
  expect(ok.stdout.trim()).toBe('runs/v2/: 1 commits, 1 files (0.0 MiB) verified, 0 damaged or missing');
}, 120_000);
