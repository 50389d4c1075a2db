// Tokenizers, each saved with its dataset and loaded back by id:
//   byte     — 256 byte values + specials (no training, never fails on any input)
//   gpt2     — GPT-2's BPE (50257 ids) through the maintained `gpt-tokenizer` package
//   bpe      — a byte-level BPE trained on the corpus to a chosen vocabulary size (bpe-train.ts)

import { z } from 'zod';
import * as gpt2 from 'gpt-tokenizer/cjs/encoding/r50k_base';
import { BpeModel } from './bpe-train';

export const TokenizerSpecSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('byte') }),
  z.strictObject({ kind: z.literal('gpt2') }),
  z.strictObject({
    kind: z.literal('bpe'),
    vocabSize: z.number().int().min(257, 'bpe vocabSize must exceed the 256 byte tokens').max(65536),
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
  encode(text: string): number[];
  decode(ids: ArrayLike<number>): string;
  /** JSON that `loadTokenizer` turns back into an identical tokenizer. */
  toJSON(): SavedTokenizer;
}

export type SavedTokenizer =
  | { kind: 'byte' }
  | { kind: 'gpt2' }
  | { kind: 'bpe'; id: string; merges: [number, number][] };

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

/** Rebuilds a tokenizer from its saved JSON (as stored next to a dataset). */
export function loadTokenizer(saved: SavedTokenizer): Tokenizer {
  switch (saved.kind) {
    case 'byte':
      return new ByteTokenizer();
    case 'gpt2':
      return new Gpt2Tokenizer();
    case 'bpe':
      return new BpeTokenizer(saved.id, new BpeModel(saved.merges));
  }
}
