// Trains tokenizers with Hugging Face's `tokenizers` library and returns a standard tokenizer.json
// (Python `tokenizers.Tokenizer.from_file` and `transformers` `PreTrainedTokenizerFast(tokenizer_file=...)`
// load it): a byte-level BPE (below), a BERT-style WordPiece and a T5-style Unigram (at the end).
//
// What the Node binding (0.23) exposes, and how we live with it: `Tokenizer.train(files)` takes
// file paths only and always runs the model's DEFAULT trainer (BpeTrainer: vocab_size 30000,
// min_frequency 0, no special tokens, no initial alphabet); no trainer option reaches it. So:
//   - the training sample is written to a temp file (one document after another);
//   - the library trains to its 30000 tokens, and we keep the first merges, up to the asked size.
//     BPE training is greedy, so its first k merges are exactly what training to a smaller
//     vocabulary gives (the test compares with Python's BpeTrainer(vocab_size=...) run);
//   - the vocabulary is laid out as Python's trainer lays it out with
//     `initial_alphabet=ByteLevel.alphabet()`: all 256 byte symbols first (sorted by code point, so
//     no input byte is ever unknown), then each merge's new token in merge order;
//   - the specials come last: <|endoftext|>, <|pad|>, <|mask|> = vocabSize-3 .. vocabSize-1,
//     the same places our earlier BPE gave eot, pad and mask.
// The BPE trainer is deterministic (merge ties break on the smaller pair, the alphabet is sorted),
// and the JSON is written by JSON.stringify in a fixed key order, so one spec gives one file, byte
// for byte. The WordPiece and Unigram trainers are not (see each function): a dataset keeps the file
// its shards were made with, and every reader takes the ids from that file.

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BPE, bertNormalizer, bertPreTokenizer, byteLevelAlphabet, byteLevelPreTokenizer, metaspacePreTokenizer, nfkcNormalizer, Tokenizer as HfFastTokenizer, Unigram, WordPiece, type Model } from 'tokenizers';
import { EngineError } from '../errors';

/** The library's default BpeTrainer vocabulary (its Node binding cannot change it). */
export const BPE_TRAINER_MAX_VOCAB = 30000;
/** Our specials, in id order after the trained vocabulary. */
export const TRAINED_SPECIALS = ['<|endoftext|>', '<|pad|>', '<|mask|>'] as const;

/** The parts of a tokenizer.json that training writes or reads. */
interface TokenizerFileJson {
  added_tokens: unknown[];
  pre_tokenizer: unknown;
  decoder: unknown;
  model: { type: string; vocab: Record<string, number>; merges: [string, string][] | string[] } & Record<string, unknown>;
  [key: string]: unknown;
}

/**
 * Trains a byte-level BPE of `vocabSize` ids (specials included) on `texts` and returns the
 * tokenizer.json text. Throws when the sample is too small to reach the size (it names how many
 * ids it could learn), so a dataset's vocabulary is always the one its spec asked for.
 */
export async function trainBpeTokenizer(texts: AsyncIterable<string> | Iterable<string>, vocabSize: number): Promise<string> {
  const target = vocabSize - TRAINED_SPECIALS.length;
  const alphabet = byteLevelAlphabet().sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  if (target < alphabet.length) throw new EngineError('config', `tokenizer.vocabSize: a byte-level BPE needs at least ${alphabet.length + TRAINED_SPECIALS.length} ids (256 bytes + 3 specials), got ${vocabSize}`);
  if (target > BPE_TRAINER_MAX_VOCAB) throw new EngineError('config', `tokenizer.vocabSize: at most ${BPE_TRAINER_MAX_VOCAB + TRAINED_SPECIALS.length} for a trained bpe (the tokenizers library trains ${BPE_TRAINER_MAX_VOCAB} tokens, and its Node binding cannot ask for more), got ${vocabSize}`);

  // The trainer reads files line by line (line ends kept); documents follow one another.
  const trained = await trainWith(texts, () => {
    const tok = new HfFastTokenizer(BPE.empty());
    tok.setPreTokenizer(byteLevelPreTokenizer(false, true));
    return tok;
  });
  return layOut(trained, alphabet, target, vocabSize);
}

/** The trained file with the full byte alphabet, the first merges up to `target` ids, and our specials. */
function layOut(trained: TokenizerFileJson, alphabet: string[], target: number, vocabSize: number): string {
  const vocab: Record<string, number> = {};
  let size = 0;
  for (const c of alphabet) vocab[c] = size++;
  const merges: [string, string][] = [];
  for (const m of trained.model.merges) {
    if (size >= target) break;
    const [a, b] = typeof m === 'string' ? (m.split(' ') as [string, string]) : m;
    // A merge may rebuild a token an earlier merge made (another split of the same string): it is kept, with no new id.
    if (!(a + b in vocab)) vocab[a + b] = size++;
    merges.push([a, b]);
  }
  if (size < target) throw new EngineError('config', `tokenizer.vocabSize: the training sample yields only ${size + TRAINED_SPECIALS.length} ids, fewer than the ${vocabSize} asked (a larger corpus or bpeTrainChars, or a smaller vocabSize)`);
  const file: TokenizerFileJson = {
    ...trained,
    added_tokens: TRAINED_SPECIALS.map((content, i) => ({ id: target + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { ...trained.model, vocab, merges },
  };
  return JSON.stringify(file);
}

/** BERT's specials, first in a trained WordPiece (ids 0..4, the order of Hugging Face's BertWordPieceTokenizer). */
export const WORDPIECE_SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;
/** T5's specials, first in a trained Unigram (ids 0..2 as in t5-small); its 100 sentinels come last, <extra_id_0> the last id. */
export const UNIGRAM_SPECIALS = ['<pad>', '</s>', '<unk>'] as const;
export const UNIGRAM_SENTINELS = 100;
/** The library's default UnigramTrainer vocabulary (its Node binding cannot change it). */
export const UNIGRAM_TRAINER_MAX_VOCAB = 8000;

/**
 * Trains a BERT-style WordPiece of `vocabSize` ids (its 5 specials included) on `texts` with the
 * library's WordPiece trainer (BERT's uncased normalizer and pre-tokenizer, `##` continuations) and
 * returns the tokenizer.json text: the specials first, then the trained vocabulary in the trainer's
 * id order (characters, their `##` forms, then each merge's token), cut at `vocabSize`. WordPiece
 * encodes greedily by longest match, so any such prefix of the vocabulary encodes every word the
 * characters spell. The library trains its default 30000 tokens; it iterates a hash map while it
 * numbers the `##` forms, so two trainings on one sample may differ (the dataset keeps the file).
 */
export async function trainWordPieceTokenizer(texts: AsyncIterable<string> | Iterable<string>, vocabSize: number): Promise<string> {
  const max = BPE_TRAINER_MAX_VOCAB + WORDPIECE_SPECIALS.length;
  if (vocabSize > max) throw new EngineError('config', `tokenizer.vocabSize: at most ${max} for a trained wordpiece (the tokenizers library trains ${BPE_TRAINER_MAX_VOCAB} tokens, and its Node binding cannot ask for more), got ${vocabSize}`);
  const trained = await trainWith(texts, () => {
    const tok = new HfFastTokenizer(WordPiece.empty() as unknown as Model);
    tok.setNormalizer(bertNormalizer({ cleanText: true, handleChineseChars: true, lowercase: true }));
    tok.setPreTokenizer(bertPreTokenizer());
    return tok;
  });
  const byId = Object.entries(trained.model.vocab as Record<string, number>).sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const alphabet = byId.filter((t) => [...t.replace(/^##/, '')].length === 1).length;
  const need = WORDPIECE_SPECIALS.length + alphabet;
  if (vocabSize < need) throw new EngineError('config', `tokenizer.vocabSize: the training sample has ${alphabet} characters and ## continuations, so a wordpiece needs at least ${need} ids (with its ${WORDPIECE_SPECIALS.length} specials), got ${vocabSize}`);
  const vocab: Record<string, number> = {};
  let size = 0;
  for (const t of [...WORDPIECE_SPECIALS, ...byId]) if (size < vocabSize && !(t in vocab)) vocab[t] = size++;
  if (size < vocabSize) throw new EngineError('config', `tokenizer.vocabSize: the training sample yields only ${size} ids, fewer than the ${vocabSize} asked (a larger corpus or bpeTrainChars, or a smaller vocabSize)`);
  const file: TokenizerFileJson = {
    ...trained,
    added_tokens: WORDPIECE_SPECIALS.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { ...trained.model, unk_token: '[UNK]', vocab },
  };
  return JSON.stringify(file);
}

/**
 * Trains a T5-style Unigram (SentencePiece's model) of `vocabSize` ids on `texts` with the library's
 * Unigram trainer (NFKC, Metaspace "▁" pre-tokenizer) and returns the tokenizer.json text, laid out
 * as t5-small's: <pad> </s> <unk> = 0 1 2, the pieces by descending score, then the 100 sentinels
 * counting down to <extra_id_0> = vocabSize − 1. The library trains its default 8000 pieces; a
 * smaller vocabulary keeps every single character and the highest-scoring other pieces (what the
 * trainer's own last step keeps), so it is not what training to that size would give. Its EM runs on
 * several threads, so scores may differ in the last digits from one training to the next (the
 * dataset keeps the file).
 */
export async function trainUnigramTokenizer(texts: AsyncIterable<string> | Iterable<string>, vocabSize: number): Promise<string> {
  const extra = UNIGRAM_SPECIALS.length + UNIGRAM_SENTINELS;
  const max = UNIGRAM_TRAINER_MAX_VOCAB + extra;
  if (vocabSize > max) throw new EngineError('config', `tokenizer.vocabSize: at most ${max} for a trained unigram (the tokenizers library trains ${UNIGRAM_TRAINER_MAX_VOCAB} pieces, and its Node binding cannot ask for more; plus ${extra} specials and sentinels), got ${vocabSize}`);
  const trained = await trainWith(texts, () => {
    const tok = new HfFastTokenizer(Unigram.empty());
    tok.setNormalizer(nfkcNormalizer());
    tok.setPreTokenizer(metaspacePreTokenizer());
    return tok;
  });
  const pieces = (trained.model.vocab as unknown as [string, number][]).filter(([p]) => !(UNIGRAM_SPECIALS as readonly string[]).includes(p) && !/^<extra_id_\d+>$/.test(p));
  const target = vocabSize - extra;
  const chars = pieces.filter(([p]) => [...p].length === 1);
  if (target < chars.length) throw new EngineError('config', `tokenizer.vocabSize: the training sample has ${chars.length} characters, so a unigram needs at least ${chars.length + extra} ids (with ${extra} specials and sentinels), got ${vocabSize}`);
  if (target > pieces.length) throw new EngineError('config', `tokenizer.vocabSize: the training sample yields only ${pieces.length + extra} ids, fewer than the ${vocabSize} asked (a larger corpus or bpeTrainChars, or a smaller vocabSize)`);
  const byScore = (a: [string, number], b: [string, number]) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
  const others = pieces.filter(([p]) => [...p].length > 1).sort(byScore).slice(0, target - chars.length);
  const kept = [...chars, ...others].sort(byScore);
  const sentinels = Array.from({ length: UNIGRAM_SENTINELS }, (_, k) => `<extra_id_${UNIGRAM_SENTINELS - 1 - k}>`);
  const vocab: [string, number][] = [...UNIGRAM_SPECIALS.map((p): [string, number] => [p, 0]), ...kept, ...sentinels.map((p): [string, number] => [p, 0])];
  const specials = [...UNIGRAM_SPECIALS, ...sentinels];
  const file: TokenizerFileJson = {
    ...trained,
    added_tokens: specials.map((content) => ({ id: vocab.findIndex(([p]) => p === content), content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { ...trained.model, unk_id: 2, vocab: vocab as unknown as Record<string, number> },
  };
  return JSON.stringify(file);
}

/** Writes the sample to a file (the Node binding trains on files only), trains the tokenizer `make` sets up, and returns its tokenizer.json. */
async function trainWith(texts: AsyncIterable<string> | Iterable<string>, make: () => HfFastTokenizer): Promise<TokenizerFileJson> {
  const dir = mkdtempSync(join(tmpdir(), 'truthgpt-tokenizer-'));
  try {
    const sample = join(dir, 'sample.txt');
    const fd = openSync(sample, 'w');
    try {
      for await (const text of texts) {
        writeSync(fd, text);
        if (!text.endsWith('\n')) writeSync(fd, '\n');
      }
    } finally {
      closeSync(fd);
    }
    const tok = make();
    tok.train([sample]);
    tok.save(join(dir, 'trained.json'), false);
    return JSON.parse(readFileSync(join(dir, 'trained.json'), 'utf8')) as TokenizerFileJson;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
