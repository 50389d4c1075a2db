// The store layout: every key that is listed and parsed back comes out as it was built, and keys
// that merely look similar are not taken for it.

import { ftKeys, keys, manifestPrefix, modelKeys, modelNameProblem, parseGlobalManifestKey, parseImportedManifestKey, parseSnapshotManifestKey, snapshotsUnder } from '../../artifacts/keys';
import { MANIFEST_NAME } from '../../infra/store';

const manifestOf = (prefix: string) => `${prefix}/${MANIFEST_NAME}`;

test('a global checkpoint key parses back to its run, round and prefix', () => {
  const prefix = keys.global('brown-1', 12);
  expect(prefix).toBe('runs/brown-1/global/r000012');
  expect(parseGlobalManifestKey(manifestOf(prefix))).toEqual({ runId: 'brown-1', round: 12, prefix });
  expect(manifestOf(prefix).startsWith(keys.globalRoot('brown-1'))).toBe(true);
});

test('only a manifest directly under a global round counts', () => {
  expect(parseGlobalManifestKey('runs/a/global/r000001/model.safetensors')).toBeNull();
  expect(parseGlobalManifestKey(manifestOf(keys.shardFinal('a', 0, 1)))).toBeNull();
  expect(parseGlobalManifestKey('runs/a/global/r000001/x/MANIFEST.json')).toBeNull();
  expect(parseGlobalManifestKey('runs/a/global/r000001/MANIFEST.jsonx')).toBeNull();
});

test('shard and fine-tune snapshots parse back to their step under the listing prefix', () => {
  const shard = keys.shardProgress('a', 1, 3, 40);
  expect(shard).toBe('runs/a/shards/s1/r000003/step-000040');
  expect(parseSnapshotManifestKey(manifestOf(shard))).toEqual({ step: 40, prefix: shard });
  expect(manifestOf(shard).startsWith(snapshotsUnder(keys.shardRound('a', 1, 3)))).toBe(true);

  const chunk = ftKeys.chunkProgress('ft', 2, 7);
  expect(parseSnapshotManifestKey(manifestOf(chunk))).toEqual({ step: 7, prefix: chunk });
  expect(manifestOf(chunk).startsWith(snapshotsUnder(ftKeys.chunk('ft', 2)))).toBe(true);
  expect(parseSnapshotManifestKey(manifestOf(keys.shardFinal('a', 1, 3)))).toBeNull();
});

test('manifestPrefix gives the committed prefix of a manifest key and nothing for other keys', () => {
  expect(manifestPrefix('datasets/fiction-0123/MANIFEST.json')).toBe('datasets/fiction-0123');
  expect(manifestPrefix('datasets/fiction-0123/train-000.bin')).toBeNull();
});

test('an imported model key parses back to its name; names follow the run-id rules', () => {
  const prefix = modelKeys.model('tiny-gpt2');
  expect(prefix).toBe('models/tiny-gpt2');
  expect(parseImportedManifestKey(`${prefix}/MANIFEST.json`)).toEqual({ name: 'tiny-gpt2', prefix });
  expect(parseImportedManifestKey(`${prefix}/model.safetensors`)).toBeNull();
  expect(parseImportedManifestKey('models/a/b/MANIFEST.json')).toBeNull();
  expect(modelNameProblem('tiny-gpt2')).toBeNull();
  expect(modelNameProblem('my model')).toMatch(/a model name is one name of A-Z a-z 0-9/);
  expect(modelNameProblem('..')).toBe("'..' is not a name");
});
