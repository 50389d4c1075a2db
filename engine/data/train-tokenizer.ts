// Trains a byte-level BPE tokenizer with Hugging Face's `tokenizers` library and returns a standard
// tokenizer.json (Python `tokenizers.Tokenizer.from_file` and `transformers`
// `PreTrainedTokenizerFast(tokenizer_file=...)` load it).
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
// The trainer is deterministic (merge ties break on the smaller pair, the alphabet is sorted), and
// the JSON is written by JSON.stringify in a fixed key order, so one spec gives one file, byte for
// byte: datasets are content-addressed and DiLoCo workers must read the same ids.

import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BPE, byteLevelAlphabet, byteLevelPreTokenizer, Tokenizer as HfFastTokenizer } from 'tokenizers';
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

  const dir = mkdtempSync(join(tmpdir(), 'truthgpt-tokenizer-'));
  try {
    // The trainer reads files line by line (line ends kept); documents follow one another.
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
    const tok = new HfFastTokenizer(BPE.empty());
    tok.setPreTokenizer(byteLevelPreTokenizer(false, true));
    tok.train([sample]);
    tok.save(join(dir, 'trained.json'), false);
    const trained = JSON.parse(readFileSync(join(dir, 'trained.json'), 'utf8')) as TokenizerFileJson;
    return layOut(trained, alphabet, target, vocabSize);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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
