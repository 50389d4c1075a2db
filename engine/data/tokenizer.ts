// Tokenizers, each saved with its dataset and loaded back by id:
//   byte     — 256 byte values + specials (no training, never fails on any input)
//   gpt2     — GPT-2's BPE (50257 ids) through the maintained `gpt-tokenizer` package
//   bpe      — a byte-level BPE trained on the corpus to a chosen vocabulary size by Hugging Face's
//              `tokenizers` library (train-tokenizer.ts) and saved as a standard tokenizer.json; it
//              encodes through that library like any `hf` tokenizer. Datasets prepared before that
//              saved `{ kind: 'bpe', id, merges }` from our own trainer: still loaded (bpe-legacy.ts).
//   wordpiece — a BERT-style WordPiece (uncased, [PAD] [UNK] [CLS] [SEP] [MASK] first), and
//   unigram   — a T5-style Unigram (<pad> </s> <unk> first, 100 sentinels last), both trained by the
//              same library and saved and encoded like `bpe` (train-tokenizer.ts).
//   hf       — an imported model's tokenizer.json (HF fast tokenizer) through Hugging Face's own
//              `tokenizers` package. The JSON can be megabytes, so what is saved is a reference (the
//              store key of the tokenizer.json beside the model, and its sha256); the artifacts layer
//              fetches and verifies the file and hands its text to loadTokenizer.
//
// Data preparation goes through `encodeDocs`: many documents at once, each to a typed array of
// ids ending with EOT, in the width the shard files store (the `tokenizers` library encodes a batch
// on its own threads; the byte tokenizer widens the UTF-8 bytes in one copy).

import { createHash } from 'node:crypto';
import { z } from 'zod';
import * as gpt2 from 'gpt-tokenizer/cjs/encoding/r50k_base';
import { Tokenizer as HfFastTokenizer } from 'tokenizers';
import { EngineError } from '../errors';
import { BpeModel } from './bpe-legacy';
import type { EncodeWorkerData } from './encode-pool';
import { WordCachedBpe } from './word-cache';

export const TokenizerSpecSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('byte') }),
  z.strictObject({ kind: z.literal('gpt2') }),
  z.strictObject({
    kind: z.literal('bpe'),
    /** Ids in all, the 256 bytes and the 3 specials (eot, pad, mask) included. */
    vocabSize: z.number().int().min(259, 'bpe vocabSize must hold the 256 byte tokens and 3 specials').max(30003, 'bpe vocabSize: at most 30003 (the tokenizers library trains 30000 tokens, and its Node binding cannot ask for more)'),
  }),
  z.strictObject({
    kind: z.literal('wordpiece'),
    /** Ids in all, BERT's 5 specials ([PAD] [UNK] [CLS] [SEP] [MASK] = 0..4) included. */
    vocabSize: z.number().int().min(6, 'wordpiece vocabSize must hold the 5 specials and the characters of the corpus').max(30005, 'wordpiece vocabSize: at most 30005 (the tokenizers library trains 30000 tokens, and its Node binding cannot ask for more)'),
  }),
  z.strictObject({
    kind: z.literal('unigram'),
    /** Ids in all: <pad> </s> <unk> = 0 1 2, the pieces, then T5's 100 sentinels (<extra_id_0> the last id). */
    vocabSize: z.number().int().min(104, 'unigram vocabSize must hold the 3 specials, 100 sentinels and the characters of the corpus').max(8103, 'unigram vocabSize: at most 8103 (the tokenizers library trains 8000 pieces, and its Node binding cannot ask for more; plus 3 specials and 100 sentinels)'),
  }),
  z.strictObject({
    kind: z.literal('hf'),
    /** Store key of the tokenizer.json (an imported model's: models/<name>/tokenizer.json). */
    key: z.string().min(1),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits'),
    /** End-of-text id appended between documents; default the tokenizer's own end-of-text token. */
    eot: z.number().int().nonnegative().optional(),
  }),
]);
export type TokenizerSpec = z.infer<typeof TokenizerSpecSchema>;

export interface Tokenizer {
  /** Stable id saved in dataset manifests ("byte", "gpt2", "bpe-4096-<hash>", "wordpiece-8000-<hash>"). */
  readonly id: string;
  readonly vocabSize: number;
  /** End-of-text id, appended between documents. */
  readonly eot: number;
  /** Ids of other special tokens (pad, mask) when the tokenizer has them. */
  readonly specials: Record<string, number>;
  /** Ids of `text` (no special tokens added: text is data). Asynchronous for `hf` tokenizers, whose library only encodes so. */
  encode(text: string): number[] | Promise<number[]>;
  decode(ids: ArrayLike<number>): string | Promise<string>;
  /**
   * Each text's ids followed by EOT, as the shard files store them: Uint16Array when the
   * vocabulary fits 16 bits, else Uint32Array. Same ids as `encode`.
   */
  encodeDocs(texts: readonly string[]): TokenIds[] | Promise<TokenIds[]>;
  /** JSON that `loadTokenizer` turns back into an identical tokenizer. */
  toJSON(): SavedTokenizer;
}

export type TokenIds = Uint16Array | Uint32Array;

/** A standard tokenizer.json (the parts we read), as a dataset of a trained tokenizer stores it (the file itself, no `kind`). */
export interface TokenizerFile {
  kind?: never;
  version: string;
  model: { type: string };
  added_tokens: { id: number; content: string; special: boolean }[];
}

export type SavedTokenizer =
  | { kind: 'byte' }
  | { kind: 'gpt2' }
  /** Our own trainer's BPE (datasets prepared before the `tokenizers` library trained them): load only. */
  | { kind: 'bpe'; id: string; merges: [number, number][] }
  /** `id`: a trained tokenizer's (`bpe-4096-<sha>`), else `hf-<sha>`. */
  | { kind: 'hf'; key: string; sha256: string; eot?: number; id?: string }
  | TokenizerFile;

/** A typed array for `n` ids plus EOT, 16 or 32 bits wide by the vocabulary size. */
function idsFor(n: number, vocabSize: number): TokenIds {
  return vocabSize > 65536 ? new Uint32Array(n + 1) : new Uint16Array(n + 1);
}

/** `encodeDocs` for tokenizers whose library returns plain arrays. */
function docsOf(ids: number[][], vocabSize: number, eot: number): TokenIds[] {
  return ids.map((d) => {
    const out = idsFor(d.length, vocabSize);
    out.set(d);
    out[d.length] = eot;
    return out;
  });
}

const BYTE_SPECIALS = ['<|endoftext|>', '<|pad|>', '<|mask|>'] as const;

/** Bytes 0..255 are ids 0..255; specials follow. */
export class ByteTokenizer implements Tokenizer {
  readonly id = 'byte';
  readonly vocabSize = 256 + BYTE_SPECIALS.length;
  readonly eot = 256;
  readonly specials = { eot: 256, pad: 257, mask: 258 };
  encode(text: string): number[] {
    return Array.from(Buffer.from(text, 'utf8'));
  }
  encodeDocs(texts: readonly string[]): Uint16Array[] {
    return texts.map((text) => {
      const bytes = Buffer.from(text, 'utf8');
      const out = new Uint16Array(bytes.length + 1);
      out.set(bytes); // widens each byte in one native copy
      out[bytes.length] = this.eot;
      return out;
    });
  }
  decode(ids: ArrayLike<number>): string {
    const bytes = Array.from(ids).filter((i) => i < 256);
    return Buffer.from(bytes).toString('utf8');
  }
  toJSON(): SavedTokenizer {
    return { kind: 'byte' };
  }
}

export class Gpt2Tokenizer implements Tokenizer {
  readonly id = 'gpt2';
  readonly vocabSize = 50257;
  readonly eot = 50256;
  readonly specials = { eot: 50256 };
  encode(text: string): number[] {
    // Text is data, not a prompt: special-token strings in it stay plain text.
    return gpt2.encode(text, { allowedSpecial: new Set(), disallowedSpecial: new Set() });
  }
  encodeDocs(texts: readonly string[]): TokenIds[] {
    return docsOf(texts.map((t) => this.encode(t)), this.vocabSize, this.eot);
  }
  decode(ids: ArrayLike<number>): string {
    return gpt2.decode(Array.from(ids));
  }
  toJSON(): SavedTokenizer {
    return { kind: 'gpt2' };
  }
}

/** Our own trainer's byte-level BPE (bpe-legacy.ts), loaded from datasets prepared with it; specials come after the merged ids. */
export class BpeTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eot: number;
  readonly specials: Record<string, number>;
  constructor(
    readonly id: string,
    private readonly model: BpeModel,
  ) {
    this.eot = model.size;
    this.specials = { eot: model.size, pad: model.size + 1, mask: model.size + 2 };
    this.vocabSize = model.size + 3;
  }
  encode(text: string): number[] {
    return this.model.encode(text);
  }
  encodeDocs(texts: readonly string[]): TokenIds[] {
    return docsOf(texts.map((t) => this.encode(t)), this.vocabSize, this.eot);
  }
  decode(ids: ArrayLike<number>): string {
    return this.model.decode(Array.from(ids).filter((i) => i < this.model.size));
  }
  toJSON(): SavedTokenizer {
    return { kind: 'bpe', id: this.id, merges: this.model.merges };
  }
}

/** End-of-text tokens by convention (GPT-2, Llama/Mistral, T5, Gemma, BERT's separator), tried in order when the reference names none. */
const EOT_NAMES = ['<|endoftext|>', '</s>', '<|end_of_text|>', '<eos>', '[SEP]'];
/** Other special tokens by convention (BERT's bracketed names, then RoBERTa/T5's angled ones), recorded in `specials` when the vocabulary has them. */
const SPECIAL_NAMES: Record<string, string[]> = { cls: ['[CLS]', '<s>'], sep: ['[SEP]', '</s>'], pad: ['[PAD]', '<pad>', '<|pad|>'], mask: ['[MASK]', '<mask>', '<|mask|>'] };

/**
 * A Hugging Face fast tokenizer (tokenizer.json) through the `tokenizers` package: encodings are
 * the library's own, so identical to Python `tokenizers` on the same file.
 * @example const tok = HfTokenizer.fromJson(json, { key: 'models/gpt2/tokenizer.json', sha256 }); await tok.encode('Hello')
 */
export class HfTokenizer implements Tokenizer {
  readonly id: string;
  readonly vocabSize: number;
  readonly eot: number;
  readonly specials: Record<string, number>;
  /** For our trained layout: documents through a cache of the library's ids per pre-token (word-cache.ts). */
  private readonly words: WordCachedBpe | null;
  private constructor(
    private readonly tok: HfFastTokenizer,
    private readonly ref: { key: string; sha256: string; id?: string },
    eot: number,
    /** A trained tokenizer's file text, which its dataset saves; an imported one is saved as `ref`. */
    private readonly file?: TokenizerFile,
  ) {
    this.id = ref.id ?? `hf-${ref.sha256.slice(0, 12)}`;
    this.words = file ? WordCachedBpe.fits(tok, file as unknown as Parameters<typeof WordCachedBpe.fits>[1]) : null;
    this.vocabSize = tok.getVocabSize(true);
    this.eot = eot;
    this.specials = { eot };
    for (const [role, names] of Object.entries(SPECIAL_NAMES)) {
      const id = names.map((n) => tok.tokenToId(n)).find((i) => i !== null && i !== undefined);
      if (id !== undefined && id !== null) this.specials[role] = id;
    }
  }

  /** `json` is the tokenizer.json text; `ref` is where it is stored (saved instead of the text). */
  static fromJson(json: string, ref: { key: string; sha256: string; eot?: number; id?: string }, inline = false): HfTokenizer {
    let tok: HfFastTokenizer;
    try {
      tok = HfFastTokenizer.fromString(json);
    } catch (e) {
      throw new EngineError('input', `${ref.key}: not a tokenizer.json the tokenizers library loads (${(e as Error).message})`);
    }
    let eot = ref.eot;
    if (eot === undefined) {
      for (const name of EOT_NAMES) {
        const id = tok.tokenToId(name);
        if (id !== null && id !== undefined) {
          eot = id;
          break;
        }
      }
    }
    if (eot === undefined) throw new EngineError('config', `${ref.key}: has none of the end-of-text tokens ${EOT_NAMES.join(', ')}; give the tokenizer's eot id`);
    return new HfTokenizer(tok, ref, eot, inline ? (JSON.parse(json) as TokenizerFile) : undefined);
  }

  /**
   * A tokenizer trained by train-tokenizer.ts, from its tokenizer.json text: its id is
   * `<model>-<vocabSize>-<sha256 of the text>` (`bpe-4096-1a2b3c4d5e6f`), and its dataset saves
   * the file itself.
   */
  static trained(json: string, key = 'tokenizer.json'): HfTokenizer {
    const sha256 = createHash('sha256').update(json).digest('hex');
    return HfTokenizer.fromJson(json, { key, sha256, id: trainedTokenizerId(json, sha256) }, true);
  }

  async encode(text: string): Promise<number[]> {
    return (await this.tok.encode(text, null, { addSpecialTokens: false })).getIds();
  }
  /** Through the pre-token cache where the layout allows it (word-cache.ts), else one `encodeBatch` call (the library spreads the documents over its threads). */
  async encodeDocs(texts: readonly string[]): Promise<TokenIds[]> {
    if (this.words) return this.words.encodeDocs(texts.map((t) => Buffer.from(t, 'utf8')), this.eot, this.vocabSize > 65536);
    return this.encodeDocsByLibrary(texts);
  }
  /** `encodeDocs` of UTF-8 texts, for the tokenizer workers of encode-pool.ts (which only run tokenizers that `workerData` gives). */
  async encodeBuffers(texts: readonly Uint8Array[]): Promise<TokenIds[]> {
    if (this.words) return this.words.encodeDocs(texts, this.eot, this.vocabSize > 65536);
    return this.encodeDocsByLibrary(texts.map((t) => Buffer.from(t.buffer, t.byteOffset, t.length).toString('utf8')));
  }
  /** What a tokenizer worker needs to encode as this tokenizer does; null when the pre-token cache does not apply (one thread is then as fast: the library has its own). */
  workerData(): EncodeWorkerData | null {
    return this.words && this.file ? { json: JSON.stringify(this.file), wide: this.vocabSize > 65536 } : null;
  }
  /** `encodeDocs` through the library alone, never the word cache (what tests compare the cache with). */
  async encodeDocsByLibrary(texts: readonly string[]): Promise<TokenIds[]> {
    const encodings = await this.tok.encodeBatch(texts as string[], { addSpecialTokens: false });
    return docsOf(encodings.map((e) => e.getIds()), this.vocabSize, this.eot);
  }
  /** The id of one token of the vocabulary (`<extra_id_0>`, `</s>`), or null when it has none. */
  tokenId(token: string): number | null {
    return this.tok.tokenToId(token) ?? null;
  }
  async decode(ids: ArrayLike<number>): Promise<string> {
    return this.tok.decode(Array.from(ids), true);
  }
  toJSON(): SavedTokenizer {
    return this.file ?? { kind: 'hf', key: this.ref.key, sha256: this.ref.sha256, eot: this.eot };
  }
}

/**
 * Rebuilds a tokenizer from its saved JSON (as stored next to a dataset). An `hf` tokenizer also
 * needs the text of the tokenizer.json it references (`hfJson`), which the artifacts layer fetches
 * and verifies against the saved sha256.
 */
export function loadTokenizer(saved: SavedTokenizer, hfJson?: string): Tokenizer {
  if (saved.kind === undefined) return HfTokenizer.trained(JSON.stringify(saved));
  switch (saved.kind) {
    case 'byte':
      return new ByteTokenizer();
    case 'gpt2':
      return new Gpt2Tokenizer();
    case 'bpe':
      return new BpeTokenizer(saved.id, new BpeModel(saved.merges));
    case 'hf':
      if (hfJson === undefined) throw new EngineError('input', `tokenizer ${saved.key}: an hf tokenizer is loaded with the text of its tokenizer.json (artifacts/tokenizers.ts loadStoredTokenizer)`);
      return HfTokenizer.fromJson(hfJson, saved);
  }
}

/** `bpe-4096-<12 hex of sha256>`: a trained tokenizer's id, from its tokenizer.json text. */
export function trainedTokenizerId(json: string, sha256 = createHash('sha256').update(json).digest('hex')): string {
  const file = JSON.parse(json) as TokenizerFile;
  const model = file.model as { type: string; vocab: Record<string, number> | unknown[] };
  // Ids run 0..n-1 over the model's vocabulary and the added tokens (which may repeat vocabulary ids).
  let size = Array.isArray(model.vocab) ? model.vocab.length : 0;
  if (!Array.isArray(model.vocab)) for (const id of Object.values(model.vocab)) size = Math.max(size, id + 1);
  for (const t of file.added_tokens) size = Math.max(size, t.id + 1);
  return `${model.type.toLowerCase()}-${size}-${sha256.slice(0, 12)}`;
}

/** Whether a dataset's saved tokenizer is a tokenizer.json itself (a trained one) rather than our `{ kind }` record. */
export function isTokenizerFile(saved: SavedTokenizer): saved is TokenizerFile {
  return saved.kind === undefined;
}
