// A checkpoint larger than one upload part is serialized, hashed and uploaded on the store's upload
// thread (artifacts/checkpoints.ts commitOffThread, infra/upload-thread.ts) instead of on the
// caller's thread: its committed files must be the very bytes the one-thread path writes
// (packCheckpointHashed), read back whole, and kept in the caller's tensor cache the same way.

import { commitCheckpoint, readCheckpoint, toTensors } from '../../artifacts/checkpoints';
import { TensorCache } from '../../artifacts/tensor-cache';
import { OPTIMIZER_FILE, packCheckpointHashed, STATE_FILE, WEIGHTS_FILE } from '../../engine/checkpoint/checkpoint';
import { MiB } from '../../infra/store-upload';
import { withS3, type S3Fixture } from '../helpers/s3';

let s3: S3Fixture;
beforeAll(async () => {
  s3 = await withS3({ store: { partSize: 5 * MiB } });
});
afterAll(() => s3?.close());

// 2.5 M weights (10 MB) and twice that of optimizer state: both files above the 5 MiB part.
const n = 2_500_000;
const weights = new Map([
  ['wte', Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.02)],
  ['ln_f.weight', Float32Array.from({ length: 64 }, (_, i) => 1 + i / 1000)],
]);
const shapes = new Map([
  ['wte', [n / 100, 100]],
  ['ln_f.weight', [64]],
  ['wte.m', [n / 100, 100]],
  ['wte.v', [n / 100, 100]],
]);
const optimizer = new Map([
  ['wte.m', Float32Array.from({ length: n }, (_, i) => Math.cos(i) * 1e-3)],
  ['wte.v', Float32Array.from({ length: n }, (_, i) => (i % 97) * 1e-6)],
]);
const state = { modelConfig: { n_layer: 1 }, runConfig: { name: 'off-thread' }, step: 40, round: 2, bestValLoss: null, dataCursor: { shard: 1, step: 40, seed: 0 }, rng: [] };

test('committed off the caller thread: the same bytes as packCheckpointHashed, verified on read, the optimizer state kept in the cache', async () => {
  const ckpt = { weights: toTensors(weights, shapes), optimizer: toTensors(optimizer, shapes), state };
  expect(s3.store.largerThanPart(n * 4)).toBe(true);
  const cache = new TensorCache(1 << 30);
  const timing = { packMs: 0, uploadMs: 0, bytes: 0 };
  const ref = await commitCheckpoint(s3.store, 'runs/t/shards/s1/r000002/final', ckpt, (r) => ({ result: { checkpoint: r } }), new Map([['notes.txt', Buffer.from('extra')]]), { cache, cacheWeights: false, timing });
  const packed = packCheckpointHashed(ckpt);
  for (const name of [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE]) {
    expect(ref.files[name]).toEqual({ sha256: packed.get(name)!.sha256, size: packed.get(name)!.bytes.length });
    expect((await s3.store.getVerified(ref.prefix, name)).equals(packed.get(name)!.bytes)).toBe(true);
  }
  const manifest = (await s3.store.readManifest(ref.prefix))!;
  expect(manifest.files.map((f) => f.name)).toEqual([WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE, 'notes.txt']);
  expect((manifest.meta.result as { checkpoint: { files: unknown } }).checkpoint.files).toEqual(ref.files);
  expect(timing.bytes).toBe(Object.values(ref.files).reduce((a, f) => a + f.size, 0));

  const back = await readCheckpoint(s3.store, ref.prefix);
  expect(back.state).toMatchObject({ step: 40, round: 2, dataCursor: { shard: 1, step: 40, seed: 0 } });
  expect(Buffer.from((back.weights.get('wte')!.data as Float32Array).buffer).equals(Buffer.from(weights.get('wte')!.buffer))).toBe(true);
  // Only the optimizer state stays in this process (cacheWeights: false), under its file's sha256.
  expect(cache.has(ref.files[OPTIMIZER_FILE]!.sha256)).toBe(true);
  expect(cache.has(ref.files[WEIGHTS_FILE]!.sha256)).toBe(false);
});
