// A seq2seq dataset (engine/data/dataset.ts with `pairs`): a jsonl corpus with textField and
// targetField is written as source ids + EOT then target ids + EOT per example, `<shard>.docs`
// holding (source tokens, target tokens); the ids are the ones tokenizeSeq2seq gives the same lines.
// A line without the target field is an error naming file:line.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { prepareDataset } from '../../engine/data/dataset';
import { readSeq2seqJsonl, tokenizeSeq2seq } from '../../engine/data/seq2seq';
import { HfTokenizer } from '../../engine/data/tokenizer';

const FIX = path.join(__dirname, '..', 'fixtures', 't5-tiny');
const tokJson = fs.readFileSync(path.join(FIX, 'model', 'tokenizer.json'), 'utf8');
const tokenizer = { kind: 'hf' as const, key: 'models/t5-tiny/tokenizer.json', sha256: '0'.repeat(64), eot: 1 };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'seq2seq-dataset-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('pairs: every example is its source and target ids with EOS, cut by the .docs pairs, split by file:line', async () => {
  const file = path.join(FIX, 'opposites.jsonl');
  const out = path.join(tmp, 'opposites');
  const m = await prepareDataset({ name: 'opposites', corpus: { kind: 'jsonl', path: file, textField: 'input', targetField: 'target' }, tokenizer, shards: 2, valFraction: 0.25, pairs: true }, out, undefined, tokJson);
  expect(m.documents).toBe(32);
  const files = [...m.splits.train, ...m.splits.val];
  expect(files.every((s) => s.docs === s.file.replace('.bin', '.docs'))).toBe(true);

  const got: string[] = [];
  for (const s of files) {
    const ids = new Uint16Array(new Uint8Array(fs.readFileSync(path.join(out, s.file))).buffer);
    const docs = new Uint32Array(new Uint8Array(fs.readFileSync(path.join(out, s.docs!))).buffer);
    expect(docs.length).toBe(2 * s.documents);
    let at = 0;
    for (let i = 0; i < docs.length; i += 2) {
      got.push(JSON.stringify([Array.from(ids.subarray(at, at + docs[i])), Array.from(ids.subarray(at + docs[i], at + docs[i] + docs[i + 1]))]));
      at += docs[i] + docs[i + 1];
    }
    expect(at).toBe(ids.length);
  }
  const tok = HfTokenizer.fromJson(tokJson, tokenizer);
  const want = await tokenizeSeq2seq(readSeq2seqJsonl(file), tok, { eosId: 1, maxSourceLength: 64, maxTargetLength: 64 });
  expect(got.sort()).toEqual(want.map((p) => JSON.stringify([p.inputs, p.targets])).sort());
  expect(m.splits.val.reduce((n, s) => n + s.documents, 0)).toBeGreaterThan(0);
});

test('pairs: a line without the target field is refused, naming file:line and the field', async () => {
  const file = path.join(tmp, 'bad.jsonl');
  fs.writeFileSync(file, '{"input": "say hot", "target": "hot"}\n{"input": "say cold"}\n');
  await expect(prepareDataset({ name: 'bad', corpus: { kind: 'jsonl', path: file, textField: 'input', targetField: 'target' }, tokenizer, pairs: true }, path.join(tmp, 'bad'), undefined, tokJson)).rejects.toThrow(
    `${file}:2: field "target" (the targetField) is missing or not a string`,
  );
  // A corpus without targetField gives documents without targets: pairs asks for one per example.
  await expect(prepareDataset({ name: 'bad', corpus: { kind: 'jsonl', path: file, textField: 'input' }, tokenizer, pairs: true }, path.join(tmp, 'bad2'), undefined, tokJson)).rejects.toThrow(
    `${file}:1: has no target, and dataset.pairs asks for one per example (a jsonl corpus names its targetField)`,
  );
});
