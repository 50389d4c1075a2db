// Tokenizers trained and loaded through Hugging Face's `tokenizers` library: parity with Python
// (golden fixture from test/fixtures/tokenizers/make_tokenizer_fixtures.py), determinism, the old
// saved BPE format still loading, and byte-tokenizer shards identical to the code before the
// typed-array path.

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readBrown } from '../../engine/data/corpus';
import { DatasetSpecSchema, prepareDataset, shardTokens, TOKENIZER_FILE } from '../../engine/data/dataset';
import { HfTokenizer, loadTokenizer, type SavedTokenizer } from '../../engine/data/tokenizer';
import { trainBpeTokenizer } from '../../engine/data/train-tokenizer';
import { FIXTURE_DIR, parityTexts, trainingTexts } from '../fixtures/tokenizers/make_node_bpe';

const fixture = (name: string) => readFileSync(join(FIXTURE_DIR, name), 'utf8');
const golden = JSON.parse(fixture('python-golden.json')) as {
  checked: Record<string, boolean | boolean[]>;
  node_bpe_ids: number[][];
  python_wordpiece_ids: number[][];
  python_bpe_specials_first_ids: number[][];
};
const texts = JSON.parse(fixture('texts.json')) as string[];
const tmp = () => mkdtempSync(join(tmpdir(), 'truthgpt-tok-'));
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('a BPE trained by the tokenizers library', () => {
  test('gives the committed tokenizer.json byte for byte, run after run (the texts are the fixture\'s)', async () => {
    expect(parityTexts()).toEqual(texts);
    const a = await trainBpeTokenizer(trainingTexts(), 1000);
    const b = await trainBpeTokenizer(trainingTexts(), 1000);
    expect(b).toBe(a);
    expect(sha(a)).toBe(sha(fixture('node-bpe-1000.json')));
  });

  test('is what Python trains with the same settings, and encodes real text to the ids Python gives', async () => {
    // Checked by the Python script: Python's BpeTrainer(vocab_size=997, initial_alphabet=ByteLevel.alphabet())
    // plus the 3 specials gives the same vocab, merges and specials; tokenizers and transformers agree.
    expect(golden.checked).toEqual({
      tokenizers_equals_transformers_ids: true,
      decode_roundtrips: texts.map(() => true),
      python_trainer_same_vocab: true,
      python_trainer_same_merges: true,
      python_trainer_same_specials: true,
    });
    const tok = HfTokenizer.trained(fixture('node-bpe-1000.json'));
    expect(tok.id).toBe(`bpe-1000-${sha(fixture('node-bpe-1000.json')).slice(0, 12)}`);
    expect([tok.vocabSize, tok.eot, tok.specials]).toEqual([1000, 997, { eot: 997, pad: 998, mask: 999 }]);
    const one = await Promise.all(texts.map((t) => tok.encode(t)));
    expect(one).toEqual(golden.node_bpe_ids);
    const docs = await tok.encodeDocs(texts);
    expect(docs.map((d) => d instanceof Uint16Array)).toEqual(texts.map(() => true));
    expect(docs.map((d) => Array.from(d))).toEqual(golden.node_bpe_ids.map((ids) => [...ids, 997]));
    // As in Python: a special-token string inside text is that special token.
    expect(one[texts.findIndex((t) => t.includes('<|endoftext|>'))]).toContain(997);
    for (let i = 0; i < texts.length; i++) expect(await tok.decode(one[i])).toBe(texts[i].replace(/<\|endoftext\|>|<\|pad\|>|<\|mask\|>/g, ''));
  });

  test('the pre-token cache gives the library\'s ids: the whole Brown corpus, random ASCII and Unicode stress texts, specials', async () => {
    const tok = HfTokenizer.trained(fixture('node-bpe-1000.json'));
    const brown = [...readBrown()].map((d) => d.text);
    // Characters where regex engines could disagree: every kind of ASCII space and control, quotes
    // of contractions, digits, letters, punctuation runs, the specials and their fragments.
    const alphabet = [' ', '  ', '\t', '\n', '\r\n', '\v', '\f', '\x00', '\x1c', '\x1f', '\x7f', "'", "'s", "'t", "'re", "'ll", "'d", "'m", "'ve", 'a', 'Z', 'the', ' the', '9', '12', '.', '...', '!?', '-', '<', '|', '>', '<|endoftext|>', '<|pad|>', '<|mask|>', '<|endof', 'text|>'];
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const stress = Array.from({ length: 40 }, () => Array.from({ length: 400 }, () => alphabet[Math.floor(rand() * alphabet.length)]).join(''));
    // Beyond ASCII the library's Unicode classes decide (the scanner cuts around such text): letters
    // with and without marks, CJK, emoji, other scripts' digits and number signs, Unicode spaces and
    // the characters JavaScript and Rust classify differently (U+0085, U+FEFF, U+180E), mixed with
    // long whitespace runs, contractions and punctuation runs.
    const unicode = ['é', 'café', 'naïve', 'e\u0301', '東京', '🚀', '👍🏽', 'Ωμέγα', 'Привет', '٣٤', '½', 'Ⅻ', '²', '\u00a0', '\u0085', '\u2028', '\u3000', '\u2009', '\ufeff', '\u180e', '\u200b', '—', '«', '»', '…', "'s", "'ll", '  ', '     \n\n', '\t\t', ' ', 'a', 'x1', '7', '.', '?!', ' é', ' 東', '\n'];
    const pick = () => {
      const from = rand() < 0.5 ? unicode : alphabet;
      return from[Math.floor(rand() * from.length)];
    };
    const wide = Array.from({ length: 60 }, () => Array.from({ length: 300 }, pick).join(''));
    const docs = [...brown, ...stress, ...wide, ...texts];
    const cached = await tok.encodeDocs(docs); // the first pass fills the cache, the second reads it
    const again = await tok.encodeDocs(docs);
    const library = await tok.encodeDocsByLibrary(docs);
    expect(cached.map((d) => sha(Buffer.from(d.buffer, d.byteOffset, d.byteLength)))).toEqual(library.map((d) => sha(Buffer.from(d.buffer, d.byteOffset, d.byteLength))));
    expect(again.map((d) => sha(Buffer.from(d.buffer, d.byteOffset, d.byteLength)))).toEqual(library.map((d) => sha(Buffer.from(d.buffer, d.byteOffset, d.byteLength))));
    expect(brown.some((t) => /[\u0080-\uffff]/.test(t))).toBe(false); // so Brown is split by the ASCII scanner alone
    expect(wide.filter((t) => /[\u0080-\uffff]/.test(t)).length).toBe(wide.length);
    // Calls that overlap (prepareDataset encodes the next batch while it writes one) give the same ids.
    const overlapping = await Promise.all([tok.encodeDocs(docs.slice(0, 300)), tok.encodeDocs(docs.slice(300))]);
    expect(overlapping.flat().map((d) => sha(Buffer.from(d.buffer, d.byteOffset, d.byteLength)))).toEqual(library.map((d) => sha(Buffer.from(d.buffer, d.byteOffset, d.byteLength))));
  });

  test('a BPE dataset large enough for the tokenizer workers is byte-identical to the code before them', async () => {
    // 9 MiB with a non-ASCII line in every 4 MiB document: the first batch is encoded in this thread,
    // the second by the workers (encode-pool.ts), with the non-ASCII pieces cut out for the library.
    // sha256s from prepareDataset at commit 4a6b812 (regex word cache; these documents went to the
    // library whole) on the same corpus.
    const dir = tmp();
    const unit = [...readBrown(['humor'])].map((d) => d.text).join('\n') + 'naïve café — 東京 🚀\n';
    let s = '';
    for (let i = 0; Buffer.byteLength(s) < 9 << 20; i++) s += `== copy ${i} ==\n` + unit;
    writeFileSync(join(dir, 'big.txt'), s);
    const m = await prepareDataset({ name: 'y', corpus: { kind: 'text', path: dir }, tokenizer: { kind: 'bpe', vocabSize: 1000 }, shards: 2, valFraction: 0.2, bpeTrainChars: 1_000_000 }, tmp());
    expect(m.tokenizer.id).toBe('bpe-1000-ebc8f8a4ffd1');
    expect([...m.splits.train, ...m.splits.val].map((t) => [t.tokens, t.sha256])).toEqual([
      [3217389, '0f8846fc5b3b9de7da2517a176cbe15c66b50f18d25b5d637ce85884539e6e29'],
      [0, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
      [421844, 'e0954202b68e787b3a5d0724c3c9933f9eca9e9cdc319d05be58ace25f02328a'],
      [0, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
    ]);
  });

  test('bad input after the tokenizer workers started fails in one line naming the file', async () => {
    const dir = tmp();
    const unit = [...readBrown(['humor'])].map((d) => d.text).join('\n') + '\n';
    let s = '';
    while (Buffer.byteLength(s) < 13 << 20) s += unit; // 4 documents of 4 MiB: the workers take the second batch
    writeFileSync(join(dir, 'a.txt'), s);
    writeFileSync(join(dir, 'z.txt'), ' \n\t\n');
    const spec = { name: 'y', corpus: { kind: 'text' as const, path: dir }, tokenizer: { kind: 'bpe' as const, vocabSize: 1000 }, bpeTrainChars: 500_000 };
    await expect(prepareDataset(spec, tmp())).rejects.toThrow(`${join(dir, 'z.txt')}: is empty`);
  });

  test('tokenizers trained in Python load here and encode identically', async () => {
    for (const [file, ids] of [
      ['python-wordpiece.json', golden.python_wordpiece_ids],
      ['python-bpe-specials-first.json', golden.python_bpe_specials_first_ids],
    ] as const) {
      const tok = loadTokenizer(JSON.parse(fixture(file)) as SavedTokenizer);
      expect(await Promise.all(texts.map((t) => tok.encode(t)))).toEqual(ids);
      expect((await tok.encodeDocs(texts)).map((d) => Array.from(d))).toEqual(ids.map((d) => [...d, tok.eot]));
    }
  });

  test('a dataset saves the standard tokenizer.json; the same spec gives the same file and shards', async () => {
    const spec = { name: 'brown-bpe', corpus: { kind: 'brown' as const, categories: ['humor'] }, tokenizer: { kind: 'bpe' as const, vocabSize: 1000 }, shards: 2, valFraction: 0.2 };
    const [outA, outB] = [tmp(), tmp()];
    const a = await prepareDataset(spec, outA);
    const b = await prepareDataset(spec, outB);
    const file = readFileSync(join(outA, TOKENIZER_FILE));
    expect(sha(readFileSync(join(outB, TOKENIZER_FILE)))).toBe(sha(file));
    // Brown humor is exactly the fixture's training sample.
    expect(sha(file)).toBe(sha(fixture('node-bpe-1000.json')));
    expect(b.splits).toEqual(a.splits);
    expect(a.tokenizer).toEqual({ id: `bpe-1000-${sha(file).slice(0, 12)}`, vocabSize: 1000, eot: 997, file: TOKENIZER_FILE });
    // The shards hold the library's ids of each document, then EOT.
    const tok = loadTokenizer(JSON.parse(file.toString('utf8')) as SavedTokenizer);
    const docs = [...readBrown(['humor'])];
    const expected = await tok.encodeDocs(docs.map((d) => d.text));
    const total = expected.reduce((n, d) => n + d.length, 0);
    expect(a.tokens).toBe(total);
    const stored = [...a.splits.train, ...a.splits.val].map((s) => shardTokens(readFileSync(join(outA, s.file)), a.dtype));
    expect(stored.reduce((n, s) => n + s.length, 0)).toBe(total);
    expect(stored.flatMap((s) => Array.from(s)).filter((i) => i === 997).length).toBe(docs.length);
  });

  test('a vocabulary the trainer cannot give is refused, naming the field', async () => {
    expect(() => DatasetSpecSchema.parse({ name: 'x', corpus: { kind: 'brown' }, tokenizer: { kind: 'bpe', vocabSize: 40000 } })).toThrow(/at most 30003/);
    await expect(trainBpeTokenizer(['tiny text, tiny text'], 2000)).rejects.toThrow(/^tokenizer\.vocabSize: the training sample yields only \d+ ids, fewer than the 2000 asked/);
  });
});

describe('what datasets were saved with before', () => {
  test('our own trainer\'s BPE ({ kind: "bpe", merges }) still loads and encodes as it did', async () => {
    // legacy-bpe-300.json and its golden ids were made by engine/data/bpe-train.ts before it was removed.
    const saved = JSON.parse(fixture('legacy-bpe-300.json')) as SavedTokenizer;
    const { text, ids } = JSON.parse(fixture('legacy-bpe-300.golden.json')) as { text: string; ids: number[] };
    const tok = loadTokenizer(saved);
    expect([tok.id, tok.vocabSize, tok.eot]).toEqual(['bpe-303-legacy', 303, 300]);
    expect(tok.encode(text)).toEqual(ids);
    expect(Array.from((await tok.encodeDocs([text]))[0])).toEqual([...ids, 300]);
    expect(tok.decode(ids)).toBe(text);
  });

  test('byte-tokenizer shards are byte-identical to the code before the typed-array path', async () => {
    // sha256s from prepareDataset at commit 1c7fb3b (number[] per document) on the same corpora.
    const brown = await prepareDataset({ name: 'x', corpus: { kind: 'brown', categories: ['news', 'humor'] }, shards: 2, valFraction: 0.1, seed: 3 }, tmp());
    expect([...brown.splits.train, ...brown.splits.val].map((s) => s.sha256)).toEqual([
      '5d9bddece706f47ff7cfa6b7c3e4f31e1729cb30d85cf7c174cbfd1f697c09b5',
      '861a21c2f99997ce3e5b86ccdad04833555f25578fc39ca36d54cd7a816bb9ff',
      '9dcafa475e6f7ed93ba8320e26038acb86c8f45e3c1ac50f53783b0ebb75e8cd',
      'b32cede3f95c2d3d571cd259fbf5e44f2baf4affcda65a3765c6cbc039b6fde0',
    ]);
    // A 9 MiB file with non-ASCII text: read in 4 MiB chunks, so documents cross batch boundaries.
    const dir = tmp();
    const unit = [...readBrown(['humor'])].map((d) => d.text).join('\n') + 'naïve café — 東京 🚀\n';
    let s = '';
    for (let i = 0; Buffer.byteLength(s) < 9 << 20; i++) s += `== copy ${i} ==\n` + unit;
    writeFileSync(join(dir, 'big.txt'), s);
    const big = await prepareDataset({ name: 'y', corpus: { kind: 'text', path: dir }, shards: 2, valFraction: 0.2 }, tmp());
    expect([...big.splits.train, ...big.splits.val].map((t) => [t.tokens, t.sha256])).toEqual([
      [8388473, 'e4d9da0683d5b37efb172ee3f4e0391a96595b64da4bbaa3e5078b597580663a'],
      [0, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
      [1098870, '8620034ecdf9aa6b57d3c7942402f580810691712d020ed586b643388590f60a'],
      [0, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
    ]);
  });
});
