// Tokenizers, each saved with its dataset and loaded back by id:
//   byte     — 256 byte values + specials (no training, never fails on any input)
//   gpt2     — GPT-2's BPE (50257 ids) through the maintained `gpt-tokenizer` package
//   bpe      — a byte-level BPE trained on the corpus to a chosen vocabulary size (bpe-train.ts)
//   hf       — an imported model's tokenizer.json (HF fast tokenizer) through Hugging Face's own
//              `tokenizers` package. The JSON can be megabytes, so what is saved is a reference (the
//              store key of the tokenizer.json beside the model, and its sha256); the artifacts layer
//              fetches and verifies the file and hands its text to loadTokenizer.

import { z } from 'zod';
import * as gpt2 from 'gpt-tokenizer/cjs/encoding/r50k_base';
import { Tokenizer as HfFastTokenizer } from 'tokenizers';
import { EngineError } from '../errors';
import { BpeModel } from './bpe-train';

export const TokenizerSpecSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('byte') }),
  z.strictObject({ kind: z.literal('gpt2') }),
  z.strictObject({
    kind: z.literal('bpe'),
    vocabSize: z.number().int().min(257, 'bpe vocabSize must exceed the 256 byte tokens').max(65536),
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
  /** Stable id saved in dataset manifests ("byte", "gpt2", "bpe-4096-<hash>"). */
  readonly id: string;
  readonly vocabSize: number;
  /** End-of-text id, appended between documents. */
  readonly eot: number;
  /** Ids of other special tokens (pad, mask) when the tokenizer has them. */
  readonly specials: Record<string, number>;
  /** Ids of `text` (no special tokens added: text is data). Asynchronous for `hf` tokenizers, whose library only encodes so. */
  encode(text: string): number[] | Promise<number[]>;
  decode(ids: ArrayLike<number>): string | Promise<string>;
  /** JSON that `loadTokenizer` turns back into an identical tokenizer. */
  toJSON(): SavedTokenizer;
}

export type SavedTokenizer =
  | { kind: 'byte' }
  | { kind: 'gpt2' }
  | { kind: 'bpe'; id: string; merges: [number, number][] }
  | { kind: 'hf'; key: string; sha256: string; eot?: number };

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
  decode(ids: ArrayLike<number>): string {
    return gpt2.decode(Array.from(ids));
  }
  toJSON(): SavedTokenizer {
    return { kind: 'gpt2' };
  }
}

/** Byte-level BPE: merges learned on the corpus; specials come after the merged ids. */
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
const SPECIAL_NAMES: Record<string, string[]> = { cls: ['[CLS]', '<s>'], sep: ['[SEP]', '</s>'], pad: ['[PAD]', '<pad>'], mask: ['[MASK]', '<mask>'] };

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
  private constructor(
    private readonly tok: HfFastTokenizer,
    private readonly ref: { key: string; sha256: string },
    eot: number,
  ) {
    this.id = `hf-${ref.sha256.slice(0, 12)}`;
    this.vocabSize = tok.getVocabSize(true);
    this.eot = eot;
    this.specials = { eot };
    for (const [role, names] of Object.entries(SPECIAL_NAMES)) {
      const id = names.map((n) => tok.tokenToId(n)).find((i) => i !== null && i !== undefined);
      if (id !== undefined && id !== null) this.specials[role] = id;
    }
  }

  /** `json` is the tokenizer.json text; `ref` is where it is stored (saved instead of the text). */
  static fromJson(json: string, ref: { key: string; sha256: string; eot?: number }): HfTokenizer {
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
    return new HfTokenizer(tok, ref, eot);
  }

  async encode(text: string): Promise<number[]> {
    return (await this.tok.encode(text, null, { addSpecialTokens: false })).getIds();
  }
  /** The id of one token of the vocabulary (`<extra_id_0>`, `</s>`), or null when it has none. */
  tokenId(token: string): number | null {
    return this.tok.tokenToId(token) ?? null;
  }
  async decode(ids: ArrayLike<number>): Promise<string> {
    return this.tok.decode(Array.from(ids), true);
  }
  toJSON(): SavedTokenizer {
    return { kind: 'hf', key: this.ref.key, sha256: this.ref.sha256, eot: this.eot };
  }
}

/**
 * Rebuilds a tokenizer from its saved JSON (as stored next to a dataset). An `hf` tokenizer also
 * needs the text of the tokenizer.json it references (`hfJson`), which the artifacts layer fetches
 * and verifies against the saved sha256.
 */
export function loadTokenizer(saved: SavedTokenizer, hfJson?: string): Tokenizer {
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
