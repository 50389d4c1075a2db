// WordPiece (BERT) and Unigram (T5) tokenizers trained through Hugging Face's `tokenizers` library:
// a file we trained encodes real text exactly as Python `tokenizers` and `transformers` encode it
// (golden ids from test/fixtures/tokenizers/check_node_kinds.py), the trained layout is the one BERT
// and T5 runs expect, a dataset of each kind saves its tokenizer.json, and bad sizes are refused
// naming the field.

import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readBrown } from '../../engine/data/corpus';
import { DatasetSpecSchema, prepareDataset, shardTokens, TOKENIZER_FILE } from '../../engine/data/dataset';
import { t5SpanOptions } from '../../engine/data/t5-span';
import { HfTokenizer, loadTokenizer, type SavedTokenizer } from '../../engine/data/tokenizer';
import { trainUnigramTokenizer, trainWordPieceTokenizer } from '../../engine/data/train-tokenizer';
import { FIXTURE_DIR, trainingTexts } from '../fixtures/tokenizers/make_node_bpe';
import { editorialTexts } from '../fixtures/tokenizers/make_node_kinds';

const fixture = (name: string) => readFileSync(join(FIXTURE_DIR, name), 'utf8');
const golden = JSON.parse(fixture('python-kinds-golden.json')) as {
  checked: Record<'wordpiece' | 'unigram', { tokenizers_equals_transformers_ids: boolean; vocab_size: number; special_ids: Record<string, number>; unknown_ids: number; tokens: number }>;
} & Record<'wordpiece_ids' | 'wordpiece_brown_ids' | 'unigram_ids' | 'unigram_brown_ids', number[][]>;
const texts = JSON.parse(fixture('texts.json')) as string[];

describe.each(['wordpiece', 'unigram'] as const)('a %s trained by our code', (kind) => {
  test('encodes real text to the ids Python tokenizers and transformers give', async () => {
    expect(editorialTexts()).toEqual(JSON.parse(fixture('brown-editorial.json')));
    expect(golden.checked[kind].tokenizers_equals_transformers_ids).toBe(true);
    const tok = loadTokenizer(JSON.parse(fixture(`node-${kind}-1000.json`)) as SavedTokenizer);
    expect(tok.id).toMatch(new RegExp(`^${kind}-1000-[0-9a-f]{12}$`));
    expect(tok.vocabSize).toBe(golden.checked[kind].vocab_size);
    const brown = editorialTexts();
    expect(await Promise.all(texts.map((t) => tok.encode(t)))).toEqual(golden[`${kind}_ids`]);
    const docs = await tok.encodeDocs(brown);
    expect(docs.map((d) => Array.from(d))).toEqual(golden[`${kind}_brown_ids`].map((ids) => [...ids, tok.eot]));
    // Python saw the specials where our layout puts them, and few unknown pieces in text the tokenizer was not trained on.
    expect(golden.checked[kind].special_ids).toEqual(kind === 'wordpiece' ? { '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, '[MASK]': 4 } : { '<pad>': 0, '</s>': 1, '<unk>': 2, '<extra_id_0>': 999, '<extra_id_99>': 900 });
    expect(golden.checked[kind].unknown_ids / golden.checked[kind].tokens).toBeLessThan(0.002); // observed 24 of 24 559 (wordpiece), 20 of 29 006 (unigram)
  });
});

describe('training', () => {
  test('a WordPiece has BERT\'s specials first and the size asked; the tokenizer finds them by name', async () => {
    const tok = HfTokenizer.trained(await trainWordPieceTokenizer(trainingTexts(), 700));
    expect([tok.vocabSize, tok.eot, tok.specials]).toEqual([700, 3, { eot: 3, cls: 2, sep: 3, pad: 0, mask: 4 }]);
    expect(tok.id).toMatch(/^wordpiece-700-[0-9a-f]{12}$/);
    const ids = await tok.encode('The Unbelievable jokes were told twice.');
    expect(await tok.decode(ids)).toBe('the unbelievable jokes were told twice.'); // uncased, as BERT's uncased models
    expect(ids).not.toContain(1); // no [UNK]
  });

  test('a Unigram has T5\'s layout: <pad> </s> <unk> first, sentinels counting down from the last id', async () => {
    const tok = HfTokenizer.trained(await trainUnigramTokenizer(trainingTexts(), 600));
    expect([tok.vocabSize, tok.eot, tok.specials.pad]).toEqual([600, 1, 0]);
    expect(t5SpanOptions(tok, 64, 'trained unigram')).toEqual({ sentinelStart: 599, eosId: 1 });
    expect(tok.tokenId('<extra_id_99>')).toBe(500);
    const text = 'The jokes were told twice.';
    expect(await tok.decode(await tok.encode(text))).toBe(text);
  });

  test('a dataset of each kind saves the trained tokenizer.json, and its shards hold the library\'s ids', async () => {
    for (const kind of ['wordpiece', 'unigram'] as const) {
      const out = mkdtempSync(join(tmpdir(), 'truthgpt-kinds-'));
      const m = await prepareDataset({ name: `humor-${kind}`, corpus: { kind: 'brown', categories: ['humor'] }, tokenizer: { kind, vocabSize: 800 }, shards: 1, valFraction: 0 }, out);
      const tok = loadTokenizer(JSON.parse(readFileSync(join(out, TOKENIZER_FILE), 'utf8')) as SavedTokenizer);
      expect(m.tokenizer).toEqual({ id: tok.id, vocabSize: 800, eot: kind === 'wordpiece' ? 3 : 1, file: TOKENIZER_FILE });
      const expected = await tok.encodeDocs([...readBrown(['humor'])].map((d) => d.text));
      const stored = shardTokens(readFileSync(join(out, m.splits.train[0].file)), m.dtype);
      expect(stored.length).toBe(expected.reduce((n, d) => n + d.length, 0));
    }
  });

  test('sizes the trainers cannot give are refused, naming the field', async () => {
    const parse = (tokenizer: unknown) => DatasetSpecSchema.safeParse({ name: 'x', corpus: { kind: 'brown' }, tokenizer });
    expect(parse({ kind: 'wordpiece', vocabSize: 40000 }).error?.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toEqual(['tokenizer.vocabSize: wordpiece vocabSize: at most 30005 (the tokenizers library trains 30000 tokens, and its Node binding cannot ask for more)']);
    expect(parse({ kind: 'unigram', vocabSize: 9000 }).error?.issues[0].message).toMatch(/^unigram vocabSize: at most 8103/);
    expect(parse({ kind: 'unigram', vocabSize: 1000, lowercase: true }).error?.issues[0].code).toBe('unrecognized_keys');
    await expect(trainWordPieceTokenizer(trainingTexts(), 50)).rejects.toThrow(/^tokenizer\.vocabSize: the training sample has \d+ characters and ## continuations, so a wordpiece needs at least \d+ ids/);
    await expect(trainUnigramTokenizer(['tiny text, tiny text'], 5000)).rejects.toThrow(/^tokenizer\.vocabSize: the training sample yields only \d+ ids, fewer than the 5000 asked/);
  });
});
