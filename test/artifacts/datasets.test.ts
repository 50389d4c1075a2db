// A dataset's identity: the same spec over a changed file is a new dataset (not the old one
// reused), an unchanged one is reused, and "the newest version of fiction" never picks a dataset
// that merely starts with that name; a trained tokenizer's tokenizer.json comes back as a verified
// reference. Real S3 server, the real prepareDataset in an activity context.

import { MockActivityEnvironment } from '@temporalio/testing';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { prepareDataset } from '../../activities/datasets';
import { newestDataset, readTokenizer, type DatasetRef } from '../../artifacts/datasets';
import { loadStoredTokenizer } from '../../artifacts/tokenizers';
import { isDatasetVersionOf, keys } from '../../artifacts/keys';
import { DatasetSpecSchema, TOKENIZER_FILE } from '../../engine/data/dataset';
import { withS3, type S3Fixture } from '../helpers/s3';

let s3: S3Fixture;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-ds-identity-'));

beforeAll(async () => {
  s3 = await withS3({ bucket: 'truthgpt-ds-identity' });
});
afterAll(async () => {
  await s3?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const text = (n: number) => Array.from({ length: n }, (_, i) => `Document ${i} says something about the weather, the sea and the hills.`).join('\n\n');
// One file is one document: valFraction 0 keeps it in train whatever its hash.
const prepare = (name: string, file: string): Promise<DatasetRef> =>
  new MockActivityEnvironment().run(prepareDataset, s3.store, DatasetSpecSchema.parse({ name, corpus: { kind: 'text', path: file }, tokenizer: { kind: 'byte' }, valFraction: 0, shards: 1 })) as Promise<DatasetRef>;

test('a changed file at the same path is a new dataset; the same bytes are reused', async () => {
  const file = path.join(dir, 'notes.txt');
  fs.writeFileSync(file, text(40));
  const first = await prepare('notes', file);
  expect(first.reused).toBe(false);
  const again = await prepare('notes', file);
  expect(again).toMatchObject({ prefix: first.prefix, contentHash: first.contentHash, reused: true });

  fs.writeFileSync(file, text(60));
  const changed = await prepare('notes', file);
  expect(changed.reused).toBe(false);
  expect(changed.prefix).not.toBe(first.prefix);
  expect(changed.prefix).toMatch(/^datasets\/notes-[0-9a-f]{16}$/);
  expect(changed.contentHash).not.toBe(first.contentHash);
  // The newest version of "notes" is the changed one.
  expect((await newestDataset(s3.store, 'datasets/notes-'))?.prefix).toBe(changed.prefix);
}, 60_000);

test('the newest version of a dataset is matched by its exact name', async () => {
  const file = path.join(dir, 'fiction.txt');
  fs.writeFileSync(file, text(30));
  const fiction = await prepare('fiction', file);
  // Committed later, and its name starts with "fiction-".
  const extra = await prepare('fiction-extra', file);
  expect(extra.prefix.startsWith('datasets/fiction-')).toBe(true);
  expect((await newestDataset(s3.store, 'datasets/fiction-'))?.prefix).toBe(fiction.prefix);
  expect((await newestDataset(s3.store, 'datasets/fiction-extra-'))?.prefix).toBe(extra.prefix);
}, 60_000);

test('a corpus file that cannot be read is a non-retryable InvalidInput naming the field', async () => {
  const err = await prepare('missing', path.join(dir, 'nope.txt')).catch((e: unknown) => e);
  expect(err).toMatchObject({ type: 'InvalidInput', nonRetryable: true });
  expect((err as Error).message).toMatch(/^dataset missing: dataset\.corpus\.path: cannot read .*nope\.txt \(ENOENT\)$/);
});

test('a text corpus that is a folder: prepared from its files, a changed file inside is a new dataset, a folder without text files is refused at once', async () => {
  const folder = path.join(dir, 'notes-folder');
  fs.mkdirSync(path.join(folder, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(folder, 'a.txt'), text(20));
  fs.writeFileSync(path.join(folder, 'sub', 'b.md'), text(10));
  const first = await prepare('folder', folder);
  expect(first.reused).toBe(false);
  expect(await prepare('folder', folder)).toMatchObject({ prefix: first.prefix, reused: true });
  fs.writeFileSync(path.join(folder, 'sub', 'b.md'), text(11));
  const changed = await prepare('folder', folder);
  expect(changed.reused).toBe(false);
  expect(changed.prefix).not.toBe(first.prefix);

  const empty = path.join(dir, 'no-text');
  fs.mkdirSync(empty);
  fs.writeFileSync(path.join(empty, 'data.csv'), 'a,b\n');
  const err = await prepare('no-text', empty).catch((e: unknown) => e);
  expect(err).toMatchObject({ type: 'InvalidInput', nonRetryable: true, message: `dataset no-text: dataset.corpus.path: ${empty}: holds no .txt or .md files` });
}, 60_000);

const prepareJsonl = (name: string, file: string): Promise<DatasetRef> =>
  new MockActivityEnvironment().run(prepareDataset, s3.store, DatasetSpecSchema.parse({ name, corpus: { kind: 'jsonl', path: file }, tokenizer: { kind: 'byte' }, valFraction: 0, shards: 1 })) as Promise<DatasetRef>;

test('a jsonl corpus that is a folder, a FIFO, or has a null line: a non-retryable InvalidInput naming the field and the path (or file:line)', async () => {
  const folder = path.join(dir, 'rows.jsonl');
  fs.mkdirSync(folder);
  const fifo = path.join(dir, 'pipe.jsonl');
  execFileSync('mkfifo', [fifo]);
  const nullLine = path.join(dir, 'null.jsonl');
  fs.writeFileSync(nullLine, '{"text":"one"}\nnull\n');
  const cases: [string, string, string][] = [
    ['jsonl-folder', folder, `dataset jsonl-folder: dataset.corpus.path: ${folder} is a folder; a jsonl corpus is one file`],
    ['fifo', fifo, `dataset fifo: dataset.corpus.path: ${fifo} is not a regular file; a jsonl corpus is one file`],
    ['null-line', nullLine, `dataset null-line: ${nullLine}:2: is null, not a JSON object with a "text" field`],
  ];
  for (const [name, file, message] of cases) {
    const err = await prepareJsonl(name, file).catch((e: unknown) => e);
    expect(err).toMatchObject({ type: 'InvalidInput', nonRetryable: true, message });
  }
  // Nothing was committed for any of them.
  expect((await s3.store.list('datasets/')).map((o) => o.key).filter((k) => /datasets\/(jsonl-folder|fifo|null-line)-/.test(k))).toEqual([]);
}, 60_000);

test('isDatasetVersionOf: the name, then exactly the 16-hex spec hash', () => {
  const v = keys.dataset('fiction', 'ab'.repeat(32));
  expect(isDatasetVersionOf(v, 'datasets/fiction-')).toBe(true);
  expect(isDatasetVersionOf(keys.dataset('fiction-extra', 'ab'.repeat(32)), 'datasets/fiction-')).toBe(false);
  expect(isDatasetVersionOf(`${v}/x`, 'datasets/fiction-')).toBe(false);
});

test('a trained tokenizer is stored as its tokenizer.json and read back as a verified reference to it', async () => {
  const spec = DatasetSpecSchema.parse({ name: 'humor-bpe', corpus: { kind: 'brown', categories: ['humor'] }, tokenizer: { kind: 'bpe', vocabSize: 400 }, valFraction: 0.1, shards: 1 });
  const ref = (await new MockActivityEnvironment().run(prepareDataset, s3.store, spec)) as DatasetRef;
  const file = await s3.store.getVerified(ref.prefix, TOKENIZER_FILE);
  expect(JSON.parse(file.toString('utf8')).model.type).toBe('BPE'); // the standard file, which Python loads
  const saved = await readTokenizer(s3.store, ref);
  const sha = createHash('sha256').update(file).digest('hex');
  expect(saved).toEqual({ kind: 'hf', key: `${ref.prefix}/${TOKENIZER_FILE}`, sha256: sha, id: `bpe-400-${sha.slice(0, 12)}` });
  const tok = await loadStoredTokenizer(s3.store, saved);
  expect([tok.id, tok.vocabSize, tok.eot, tok.specials]).toEqual([`bpe-400-${sha.slice(0, 12)}`, 400, 397, { eot: 397, pad: 398, mask: 399 }]);
  const [ids] = await tok.encodeDocs(['The jury said "no".']);
  expect(await tok.decode(ids)).toBe('The jury said "no".');
}, 120_000);
