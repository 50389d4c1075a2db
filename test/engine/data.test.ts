import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { ByteTokenizer, Gpt2Tokenizer, loadTokenizer } from '../../engine/data/tokenizer';
import { CorpusError, readBrown, readJsonl, readTextPath, readSpamAssassin, stripBrownTags, LARGE_FILE_BYTES } from '../../engine/data/corpus';
import { prepareDataset, shardTokens, DATASET_MANIFEST_FILE, TOKENIZER_FILE } from '../../engine/data/dataset';
import { sampleLmBatch, evalLmBatches } from '../../engine/data/sampler';

const tmp = () => mkdtempSync(join(tmpdir(), 'truthgpt-data-'));

describe('tokenizers', () => {
  test('byte tokenizer round-trips any UTF-8 and has specials after the bytes', () => {
    const t = new ByteTokenizer();
    const s = 'naïve café — 東京';
    expect(t.decode(t.encode(s))).toBe(s);
    expect(t.vocabSize).toBe(259);
    expect(t.eot).toBe(256);
  });

  test('GPT-2 BPE gives the ids GPT-2 gives', () => {
    const t = new Gpt2Tokenizer();
    expect(t.encode('Hello world')).toEqual([15496, 995]);
    expect(t.decode([15496, 995])).toBe('Hello world');
    // Special-token text inside data is plain text, not an EOT.
    expect(t.encode('<|endoftext|>')).not.toContain(50256);
  });

  test('encodeDocs gives encode\'s ids then EOT, as uint16', () => {
    for (const t of [new ByteTokenizer(), new Gpt2Tokenizer()]) {
      const texts = ['naïve café — 東京', 'Hello world', ''];
      const docs = t.encodeDocs(texts);
      expect(docs.every((d) => d instanceof Uint16Array)).toBe(true);
      expect(docs.map((d) => Array.from(d))).toEqual(texts.map((s) => [...t.encode(s), t.eot]));
    }
  });
});

describe('corpus readers', () => {
  test('Brown: POS tags stripped, genre kept from the file name', () => {
    expect(stripBrownTags("\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n")).toBe('The jury said "no".\n');
    const docs = [...readBrown(['humor'])];
    expect(docs.length).toBe(9); // cr01..cr09
    expect(docs.every((d) => d.label === 'humor')).toBe(true);
    expect(docs[0].text).not.toMatch(/\/(at|nn|vbd)\b/);
  });

  test('SpamAssassin: labelled spam and ham messages', () => {
    let spam = 0;
    let ham = 0;
    for (const d of readSpamAssassin()) {
      if (d.label === 'spam') spam++;
      else ham++;
    }
    expect(spam).toBe(1896);
    expect(ham).toBe(4150);
  });

  test('text folders, JSONL, and errors that name the file', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'b'));
    writeFileSync(join(dir, 'a.txt'), 'first file');
    writeFileSync(join(dir, 'b', 'c.md'), 'second file');
    expect([...readTextPath(dir)].map((d) => d.source)).toEqual(['a.txt', join('b', 'c.md')]);
    writeFileSync(join(dir, 'empty.txt'), '  \n');
    expect(() => [...readTextPath(join(dir, 'empty.txt'))]).toThrow(`${join(dir, 'empty.txt')}: is empty`);
    writeFileSync(join(dir, 'bin.txt'), Buffer.from([0xff, 0xfe, 0x00, 0x41]));
    expect(() => [...readTextPath(join(dir, 'bin.txt'))]).toThrow(`${join(dir, 'bin.txt')}: is not valid UTF-8 text`);
    const jl = join(dir, 'd.jsonl');
    writeFileSync(jl, '{"text":"one","y":1}\n{"body":"two"}\n');
    const got: string[] = [];
    await expect(
      (async () => {
        for await (const d of readJsonl(jl, 'text', 'y')) got.push(d.text + d.label);
      })(),
    ).rejects.toThrow(`${jl}:2: field "text" is missing or not a string`);
    expect(got).toEqual(['one1']);
  });

  test('a JSONL line that is not an object, a JSONL path that is a folder: errors naming file:line or the file', async () => {
    const dir = tmp();
    const read = async (file: string) => {
      for await (const d of readJsonl(file)) void d;
    };
    const cases: [string, string][] = [
      ['{"text":"one"}\nnull\n', 'is null, not a JSON object with a "text" field'],
      ['{"text":"one"}\n[1, 2]\n', 'is an array, not a JSON object with a "text" field'],
      ['{"text":"one"}\n"two"\n', 'is a string, not a JSON object with a "text" field'],
      ['{"text":"one"}\n3\n', 'is a number, not a JSON object with a "text" field'],
    ];
    for (const [i, [content, message]] of cases.entries()) {
      const file = join(dir, `${i}.jsonl`);
      writeFileSync(file, content);
      await expect(read(file)).rejects.toThrow(new CorpusError(`${file}:2`, message));
    }
    await expect(read(dir)).rejects.toThrow(new CorpusError(dir, 'is a folder; a JSONL corpus is one file'));
  });
});

describe('large text files', () => {
  test('stream in line-aligned chunks whose concatenation is the file, multi-byte characters intact', () => {
    const dir = tmp();
    const line = 'naïve café — 東京 résumé line\n';
    const file = join(dir, 'big.txt');
    writeFileSync(file, line.repeat(Math.ceil((LARGE_FILE_BYTES * 1.5) / Buffer.byteLength(line))));
    const docs = [...readTextPath(file)];
    expect(docs.length).toBeGreaterThan(2);
    expect(docs.every((d) => d.text.endsWith('\n'))).toBe(true);
    expect(docs.map((d) => d.source)).toEqual(docs.map((_, i) => `${file}#${i}`));
    expect(docs.map((d) => d.text).join('')).toBe(readFileSync(file, 'utf8'));
  });
});

describe('prepareDataset', () => {
  test('Brown becomes deterministic uint16 shards with a manifest that pins every file', async () => {
    const out1 = tmp();
    const spec = { name: 'brown-humor', corpus: { kind: 'brown' as const, categories: ['humor', 'science_fiction'] }, shards: 2, valFraction: 0.2, seed: 3 };
    const m = await prepareDataset(spec, out1);
    expect(m.dtype).toBe('uint16');
    expect(m.documents).toBe(15);
    expect(m.labels).toEqual({ humor: 9, science_fiction: 6 });
    const all = [...m.splits.train, ...m.splits.val];
    expect(all.reduce((a, s) => a + s.tokens, 0)).toBe(m.tokens);
    expect(m.splits.val.some((s) => s.tokens > 0)).toBe(true);
    for (const s of all) {
      const bytes = readFileSync(join(out1, s.file));
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(s.sha256);
      expect(shardTokens(bytes, m.dtype).length).toBe(s.tokens);
    }
    expect(JSON.parse(readFileSync(join(out1, DATASET_MANIFEST_FILE), 'utf8')).tokens).toBe(m.tokens);
    expect(JSON.parse(readFileSync(join(out1, TOKENIZER_FILE), 'utf8'))).toEqual({ kind: 'byte' });
    // Same spec → same bytes.
    const m2 = await prepareDataset(spec, tmp());
    expect(m2.splits).toEqual(m.splits);
  });

  test('a BPE tokenizer is trained and saved with the dataset', async () => {
    const out = tmp();
    const m = await prepareDataset({ name: 'brown-bpe', corpus: { kind: 'brown', categories: ['humor'] }, tokenizer: { kind: 'bpe', vocabSize: 512 }, valFraction: 0.1 }, out);
    expect(m.tokenizer.vocabSize).toBe(512);
    expect(m.tokenizer.id).toMatch(/^bpe-512-[0-9a-f]{12}$/);
    // A standard tokenizer.json (test/engine/tokenizer-train.test.ts checks it against Python).
    const saved = JSON.parse(readFileSync(join(out, TOKENIZER_FILE), 'utf8'));
    expect(saved.model.type).toBe('BPE');
    const tok = loadTokenizer(saved);
    const ids = shardTokens(readFileSync(join(out, m.splits.train[0].file)), m.dtype);
    const text = await tok.decode(ids.subarray(0, 200));
    expect(text.length).toBeGreaterThan(200); // compresses: more than one char per token
  });
});

describe('batch sampler', () => {
  test('a batch is a pure function of (seed, shard, step), targets shifted by one', () => {
    const ids = Uint16Array.from({ length: 1000 }, (_, i) => i % 97);
    const req = { seed: 1, shard: 0, step: 5, batchSize: 4, contextLength: 8 };
    const a = sampleLmBatch(ids, req);
    const b = sampleLmBatch(ids, req);
    expect(a.tokens).toEqual(b.tokens);
    expect(sampleLmBatch(ids, { ...req, step: 6 }).tokens).not.toEqual(a.tokens);
    for (let i = 0; i < 4 * 8; i++) expect(Number(a.targets[i])).toBe((Number(a.tokens[i]) + 1) % 97);
  });

  test('eval batches cover every window once', () => {
    const ids = Uint16Array.from({ length: 101 }, (_, i) => i);
    const batches = [...evalLmBatches(ids, 3, 10)];
    expect(batches.map((b) => b.dims[0])).toEqual([3, 3, 3, 1]);
    expect(Number(batches[3].targets[9])).toBe(100);
  });
});
