// A word cache in front of the `tokenizers` library, for data preparation with our trained
// byte-level BPEs. The library encodes about 1 MB of text per CPU-second here (bench/RESULTS.md,
// issue 12), mostly spent building its per-token Encoding objects; but a byte-level BPE with GPT-2's
// pre-tokenizer encodes each pre-token (" the", "'s", "  ") on its own, so the ids of a document
// are the concatenation of the ids of its pre-tokens, and a corpus has few distinct ones.
//
// Every id still comes from the library: a pre-token not in the cache is encoded by it (in one
// batch per document) and remembered. What is ours is only the split, and it is exact only where
// JavaScript's regex and the library's agree, so it is used only when both hold:
//   - the tokenizer.json is our trained layout (no normalizer, ByteLevel pre-tokenizer without
//     prefix space, BPE without dropout, added tokens matched as plain strings), checked by `fits`;
//   - the document is ASCII, where \s, \p{L} and \p{N} mean the same in both engines (beyond it the
//     Unicode versions and \s differ at the edges, e.g. U+0085 and U+FEFF): other documents go to the
//     library whole.
// test/engine/tokenizer-train.test.ts compares it with the library on the whole Brown corpus and on
// a random ASCII stress text.

import type { Tokenizer as HfFastTokenizer } from 'tokenizers';

/** GPT-2's pre-tokenizer pattern, as the library's ByteLevel pre-tokenizer (use_regex) has it. */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;
const NON_ASCII = /[\u0080-\uffff]/; // any UTF-16 unit above ASCII, surrogates included
/** Distinct pre-tokens kept; past it a new one costs a library call each time it appears. */
const MAX_CACHED = 1 << 20;

interface LayoutJson {
  normalizer: unknown;
  pre_tokenizer: { type?: string; add_prefix_space?: boolean; use_regex?: boolean; trim_offsets?: boolean } | null;
  model: { type?: string; dropout?: unknown; byte_fallback?: boolean; ignore_merges?: boolean; continuing_subword_prefix?: unknown; end_of_word_suffix?: unknown };
  added_tokens: { id: number; content: string; single_word?: boolean; lstrip?: boolean; rstrip?: boolean; normalized?: boolean }[];
}

export class WordCachedBpe {
  private readonly cache = new Map<string, number[]>();
  private readonly specials: Map<string, number>;
  private readonly specialSplit: RegExp | null;

  private constructor(
    private readonly lib: HfFastTokenizer,
    added: { id: number; content: string }[],
  ) {
    this.specials = new Map(added.map((t) => [t.content, t.id]));
    const escaped = added.map((t) => t.content.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).sort((a, b) => b.length - a.length); // longest first, as the library matches
    this.specialSplit = escaped.length ? new RegExp(escaped.join('|'), 'g') : null;
  }

  /** The cache for `json` (a tokenizer.json's parsed text) when its layout allows it, else null. */
  static fits(lib: HfFastTokenizer, json: LayoutJson): WordCachedBpe | null {
    const p = json.pre_tokenizer;
    const m = json.model;
    const ok =
      json.normalizer === null &&
      p?.type === 'ByteLevel' &&
      p.add_prefix_space === false &&
      p.use_regex === true &&
      m.type === 'BPE' &&
      (m.dropout === null || m.dropout === undefined) &&
      !m.byte_fallback &&
      !m.ignore_merges &&
      !m.continuing_subword_prefix &&
      !m.end_of_word_suffix &&
      json.added_tokens.every((t) => !t.single_word && !t.lstrip && !t.rstrip && !t.normalized && !NON_ASCII.test(t.content));
    return ok ? new WordCachedBpe(lib, json.added_tokens) : null;
  }

  /** The ids of an ASCII `text` (no EOT), or null when the text is not ASCII (the library's then). */
  async encode(text: string): Promise<number[] | null> {
    if (NON_ASCII.test(text)) return null;
    const out: number[] = [];
    // Pre-tokens the cache lacks: their place in `out`, filled after one library call.
    const missing: { at: number; word: string }[] = [];
    const words = (segment: string) => {
      for (const m of segment.matchAll(GPT2_SPLIT)) {
        const ids = this.cache.get(m[0]);
        if (ids === undefined) missing.push({ at: out.length, word: m[0] });
        else for (let i = 0; i < ids.length; i++) out.push(ids[i]);
      }
    };
    if (this.specialSplit && text.includes('<')) {
      let from = 0;
      for (const m of text.matchAll(this.specialSplit)) {
        words(text.slice(from, m.index));
        out.push(this.specials.get(m[0])!);
        from = m.index + m[0].length;
      }
      words(text.slice(from));
    } else words(text);
    if (missing.length === 0) return out;

    const unique = [...new Set(missing.map((w) => w.word))];
    const encoded = await this.lib.encodeBatch(unique, { addSpecialTokens: false });
    const found = new Map(unique.map((w, i) => [w, encoded[i].getIds()]));
    if (this.cache.size < MAX_CACHED) for (const [w, ids] of found) this.cache.set(w, ids);
    const full: number[] = [];
    let from = 0;
    for (const { at, word } of missing) {
      for (let i = from; i < at; i++) full.push(out[i]);
      for (const id of found.get(word)!) full.push(id);
      from = at;
    }
    for (let i = from; i < out.length; i++) full.push(out[i]);
    return full;
  }
}
