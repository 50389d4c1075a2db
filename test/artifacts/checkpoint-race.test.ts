// Two attempts of one activity committing a training checkpoint to the same prefix at once, on
// versitygw (which honours If-None-Match, so manifests are create-only): one checkpoint wins and
// reads back whole, with checkpoint.json's pins on both tensor files; the other attempt gets a
// CommitConflictError, which is not a vocabulary failure, so Temporal retries the activity and the
// retry finds the committed checkpoint.

import { commitCheckpoint, readCheckpoint, toTensors, type WriteCheckpoint } from '../../artifacts/checkpoints';
import { asFailure } from '../../artifacts/errors';
import { initParams } from '../../engine/models/blocks';
import { gptParams, GptConfigSchema } from '../../engine/models/gpt';
import { CommitConflictError } from '../../infra/store';
import { errorTypeOf } from '../../spec/errors';
import { withS3, type S3Fixture } from '../helpers/s3';

const CFG = GptConfigSchema.parse({ vocab_size: 259, n_layer: 2, n_embd: 32, n_head: 2, block_size: 32 });
const specs = gptParams(CFG);
const shapes = new Map(specs.map((s) => [s.name, s.shape]));

/** The checkpoint an attempt would write after `step` steps from init seed `seed`. */
const checkpoint = (seed: number, step: number): WriteCheckpoint => ({
  weights: toTensors(initParams(specs, seed), shapes),
  optimizer: toTensors(new Map([...initParams(specs, seed + 1000)].map(([n, v]) => [`${n}.m`, v])), new Map(specs.map((s) => [`${s.name}.m`, s.shape]))),
  state: { modelConfig: CFG, runConfig: {}, step, round: 1, bestValLoss: null, dataCursor: null, rng: [] },
});

let s3: S3Fixture;
beforeAll(async () => {
  s3 = await withS3({ server: 'versitygw', bucket: 'truthgpt-race' });
}, 60_000);
afterAll(() => s3?.close());

test('different bytes: exactly one checkpoint is committed and reads back intact; the loser fails with a retryable CommitConflictError', async () => {
  const prefix = 'runs/race/global/r000001';
  const attempts = [checkpoint(1, 40), checkpoint(2, 41)];
  const settled = await Promise.allSettled(attempts.map((c) => commitCheckpoint(s3.store, prefix, c, (ref) => ({ result: { checkpoint: ref } }))));
  expect(settled.map((s) => s.status).sort()).toEqual(['fulfilled', 'rejected']);
  const won = settled.findIndex((s) => s.status === 'fulfilled');
  const lost = settled[1 - won] as PromiseRejectedResult;
  expect(lost.reason).toBeInstanceOf(CommitConflictError);
  expect((lost.reason as Error).message).toContain(`commit ${prefix}: another commit created s3://truthgpt-race/${prefix}/MANIFEST.json first with different files`);
  // Left alone by the vocabulary mapping: a plain error, which the activity's retry policy retries.
  const mapped = asFailure(lost.reason, `checkpoint ${prefix}`);
  expect(mapped).toBe(lost.reason);
  expect(errorTypeOf(mapped)).toBeUndefined();

  // The reader gets the winner's checkpoint, every file verified against the manifest and the pins.
  const ck = await readCheckpoint(s3.store, prefix);
  expect(ck.state.step).toBe(attempts[won]!.state.step);
  const name = specs[0]!.name;
  expect(Array.from(ck.weights.get(name)!.data as Float32Array)).toEqual(Array.from(attempts[won]!.weights.get(name)!.data as Float32Array));
  expect((await s3.store.readManifest(prefix))!.meta).toEqual({ result: { checkpoint: (settled[won] as PromiseFulfilledResult<unknown>).value } });
});

test('the same bytes: both attempts succeed with the same ref', async () => {
  const prefix = 'runs/race/global/r000002';
  const [a, b] = await Promise.all([commitCheckpoint(s3.store, prefix, checkpoint(3, 80)), commitCheckpoint(s3.store, prefix, checkpoint(3, 80))]);
  expect(a).toEqual(b);
  expect((await readCheckpoint(s3.store, prefix)).state.step).toBe(80);
});
