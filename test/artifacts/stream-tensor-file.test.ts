// streamTensorFile on a real S3 server: a committed checkpoint's weights streamed tensor by tensor
// are the tensors readCheckpoint returns; a file damaged behind the store's back, or replaced under
// the manifest, fails as CorruptCheckpoint naming the checkpoint, and errors of the caller's fold
// pass unchanged (issue 14: the aggregator streams shard weights instead of reading them whole).

import { ApplicationFailure } from '@temporalio/common';
import { commitCheckpoint, readCheckpoint, refOf, streamTensorFile, toTensors } from '../../artifacts/checkpoints';
import { WEIGHTS_FILE } from '../../engine/checkpoint/checkpoint';
import type { TensorData } from '../../engine/graph/ir';
import { withS3, type S3Fixture } from '../helpers/s3';

let s3: S3Fixture;
beforeAll(async () => {
  s3 = await withS3();
});
afterAll(() => s3?.close());

const weights = new Map([
  ['wte', Float32Array.from({ length: 3000 }, (_, i) => Math.cos(i) * 0.02)],
  ['ln_f.weight', Float32Array.from({ length: 64 }, (_, i) => 1 + i / 1000)],
]);
const shapes = new Map([
  ['wte', [100, 30]],
  ['ln_f.weight', [64]],
]);
const state = { modelConfig: { n_layer: 1 }, runConfig: {}, step: 4, round: 1, bestValLoss: null, dataCursor: null, rng: [] };

async function streamed(ref: Parameters<typeof streamTensorFile>[1]): Promise<Map<string, TensorData>> {
  const out = new Map<string, TensorData>();
  await streamTensorFile(s3.store, ref, WEIGHTS_FILE, (name, t) => out.set(name, t));
  return out;
}

test('streamed tensors equal readCheckpoint; damaged or replaced files fail as CorruptCheckpoint', async () => {
  const { store } = s3;
  const ref = await commitCheckpoint(store, 'runs/s/shards/s0/r000001/final', { weights: toTensors(weights, shapes), optimizer: new Map(), state });
  const whole = (await readCheckpoint(store, ref.prefix, { weightsOnly: true })).weights;
  const got = await streamed(ref);
  expect([...got.keys()].sort()).toEqual([...whole.keys()].sort());
  for (const [name, t] of got) {
    expect(t.dims).toEqual(whole.get(name)!.dims);
    expect(Buffer.from(t.data.buffer).equals(Buffer.from(whole.get(name)!.data.buffer))).toBe(true);
  }

  // The fold's own error comes out as it was thrown.
  const boom = new Error('fold failed');
  await expect(streamTensorFile(store, ref, WEIGHTS_FILE, () => { throw boom; })).rejects.toBe(boom);

  // A ref that records other bytes than the manifest now lists: refused before anything is read.
  const other = { ...ref, files: { ...ref.files, [WEIGHTS_FILE]: { ...ref.files[WEIGHTS_FILE]!, sha256: 'f'.repeat(64) } } };
  const replaced = await streamed(other).catch((e: unknown) => e);
  expect(replaced).toBeInstanceOf(ApplicationFailure);
  expect((replaced as ApplicationFailure).type).toBe('CorruptCheckpoint');
  expect((replaced as ApplicationFailure).message).toContain(`checkpoint ${ref.prefix}: ${ref.prefix}/${WEIGHTS_FILE}: the manifest lists sha256`);

  // One bit flipped in the stored object (its own metadata rewritten to match): the manifest's sha256 catches it at the end.
  const manifest = (await store.readManifest(ref.prefix))!;
  const key = manifest.files.find((f) => f.name === WEIGHTS_FILE)!.key;
  const bytes = Buffer.from(await store.get(key));
  bytes[bytes.length - 5] ^= 0x10;
  await store.put(key, bytes);
  const flipped = await streamed(refOf(manifest)).catch((e: unknown) => e);
  expect(flipped).toBeInstanceOf(ApplicationFailure);
  expect((flipped as ApplicationFailure).type).toBe('CorruptCheckpoint');
  expect((flipped as ApplicationFailure).message).toContain(`checkpoint ${ref.prefix}: integrity check failed for s3://`);
  expect((flipped as ApplicationFailure).message).toContain(`sha256`);

  // Truncated: the size check (or the reader) refuses it, never a silent short fold.
  await store.put(key, bytes.subarray(0, bytes.length - 100));
  const cut = await streamed(refOf(manifest)).catch((e: unknown) => e);
  expect(cut).toBeInstanceOf(ApplicationFailure);
  expect((cut as ApplicationFailure).type).toBe('CorruptCheckpoint');
  expect((cut as ApplicationFailure).message).toContain(`checkpoint ${ref.prefix}: `);
});
