// A pre-token cache in front of the `tokenizers` library, for data preparation with byte-level
// BPEs of our trained layout. The library encodes about 1 MB of text per CPU-second here
// (bench/RESULTS.md, issue 12), mostly spent building its per-token Encoding objects; but a
// byte-level BPE with GPT-2's pre-tokenizer encodes each pre-token (" the", "'s", "  ") on its own,
// so the ids of a document are the concatenation of the ids of its pre-tokens, and a corpus has
// few distinct ones.
//
// Every id still comes from the library: a pre-token not in the cache is encoded by it (one batch
// per call) and remembered. What is ours is the split, done by a scanner over the UTF-8 bytes (no
// regex, no JS string per pre-token) with the ids kept in an open-addressing table keyed on the
// bytes. The split is GPT-2's pattern, as the library's ByteLevel pre-tokenizer has it:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// The scanner implements it for ASCII, where \s, \p{L} and \p{N} have one meaning. Beyond ASCII the
// library's Unicode tables decide, so the scanner does not guess: it cuts the text where a match
// boundary falls whatever the Unicode classes are — after an ASCII letter, digit or punctuation
// byte and before an ASCII whitespace byte (no alternative of the pattern spans such a pair, and
// none looks behind) — and a piece between two such cuts that holds a non-ASCII byte (" café,")
// is one cache key, encoded by the library whole. So a non-ASCII text is exact too, only cached
// in coarser keys.
//
// It is used only for the layout `fits` checks (no normalizer, ByteLevel pre-tokenizer without
// prefix space, BPE without dropout, added tokens matched as plain ASCII strings). Added tokens in
// the text (<|endoftext|>) are cut out first, leftmost-longest, as the library matches them.
// test/engine/tokenizer-train.test.ts compares it with the library on the whole Brown corpus and on
// random stress texts (ASCII and Unicode, long whitespace runs, contractions, digits, punctuation).

import type { Tokenizer as HfFastTokenizer } from 'tokenizers';
import type { TokenIds } from './tokenizer';

/** Byte classes: ASCII letter, digit, other (punctuation, controls), whitespace; any byte >= 0x80. */
const LETTER = 1;
const DIGIT = 2;
const OTHER = 3;
const SPACE = 4;
const HIGH = 5;
const CLASS = new Uint8Array(256).fill(OTHER);
for (let b = 0x41; b <= 0x5a; b++) CLASS[b] = CLASS[b + 0x20] = LETTER;
for (let b = 0x30; b <= 0x39; b++) CLASS[b] = DIGIT;
for (const b of [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20]) CLASS[b] = SPACE;
CLASS.fill(HIGH, 0x80);
const QUOTE = 0x27;
const SP = 0x20;

/** Distinct keys kept; past it the table starts again empty (between calls), so memory stays bounded on any corpus. */
const MAX_ENTRIES = 4 << 20;

interface LayoutJson {
  normalizer: unknown;
  pre_tokenizer: { type?: string; add_prefix_space?: boolean; use_regex?: boolean; trim_offsets?: boolean } | null;
  model: { type?: string; dropout?: unknown; byte_fallback?: boolean; ignore_merges?: boolean; continuing_subword_prefix?: unknown; end_of_word_suffix?: unknown };
  added_tokens: { id: number; content: string; single_word?: boolean; lstrip?: boolean; rstrip?: boolean; normalized?: boolean }[];
}

export class WordCachedBpe {
  // The table: slots hold (entry + 1, hash) pairs (0 = empty); entries hold their key (bytes in `keys`) and ids
  // (in `ids`, length -1 while the library has not given them yet).
  private slots = new Int32Array(1 << 17);
  private entries = 0;
  private hash = new Int32Array(1 << 15);
  private keyAt = new Int32Array(1 << 15);
  private keyLen = new Int32Array(1 << 15);
  private idAt = new Int32Array(1 << 15);
  private idLen = new Int32Array(1 << 15);
  private keys = new Uint8Array(1 << 20);
  private keysUsed = 0;
  private ids = new Uint32Array(1 << 18);
  private idsUsed = 0;
  /** Entries created since the library was last asked. */
  private pending: number[] = [];
  /** Pre-token entries of the documents being encoded. */
  private order = new Int32Array(1 << 16);
  private running: Promise<unknown> = Promise.resolve();
  /** The added tokens as byte strings, longest first, and their ids. */
  private readonly specials: { bytes: Buffer; id: number }[];

  private constructor(
    private readonly lib: HfFastTokenizer,
    added: { id: number; content: string }[],
  ) {
    this.specials = added.map((t) => ({ bytes: Buffer.from(t.content, 'latin1'), id: t.id })).sort((a, b) => b.bytes.length - a.bytes.length);
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
      json.added_tokens.every((t) => !t.single_word && !t.lstrip && !t.rstrip && !t.normalized && t.content.length > 0 && Buffer.byteLength(t.content) === t.content.length);
    return ok ? new WordCachedBpe(lib, json.added_tokens) : null;
  }

  /** The ids of each text (its UTF-8 bytes), followed by `eot`: Uint16Array, or Uint32Array when `wide`. */
  encodeDocs(docs: readonly Uint8Array[], eot: number, wide: boolean): Promise<TokenIds[]> {
    // One call at a time: a call waits for the library halfway, and the scratch arrays are shared.
    const run = this.running.then(() => this.encodeNow(docs, eot, wide));
    this.running = run.catch(() => {});
    return run;
  }

  private async encodeNow(docs: readonly Uint8Array[], eot: number, wide: boolean): Promise<TokenIds[]> {
    let total = 0;
    for (const d of docs) total += d.length;
    if (this.order.length < total) this.order = new Int32Array(total + (total >> 2));
    // Pass 1: each document's pre-tokens as table entries (one per pre-token; at most one per byte).
    const ends = new Int32Array(docs.length);
    let n = 0;
    for (let d = 0; d < docs.length; d++) {
      n = this.splitSpecials(docs[d], n);
      ends[d] = n;
    }
    // The library encodes what the table lacks.
    if (this.pending.length > 0) {
      const view = Buffer.from(this.keys.buffer, 0, this.keysUsed);
      const words = this.pending.map((e) => view.toString('utf8', this.keyAt[e], this.keyAt[e] + this.keyLen[e]));
      const encoded = await this.lib.encodeBatch(words, { addSpecialTokens: false });
      this.pending.forEach((e, i) => this.setIds(e, encoded[i].getIds()));
      this.pending = [];
    }
    // Pass 2: the entries' ids, document by document.
    const out: TokenIds[] = [];
    const order = this.order;
    const idLen = this.idLen;
    const idAt = this.idAt;
    const ids = this.ids;
    let from = 0;
    for (let d = 0; d < docs.length; d++) {
      let count = 0;
      for (let i = from; i < ends[d]; i++) count += idLen[order[i]];
      const doc = wide ? new Uint32Array(count + 1) : new Uint16Array(count + 1);
      let k = 0;
      for (let i = from; i < ends[d]; i++) {
        const e = order[i];
        const at = idAt[e];
        const len = idLen[e];
        if (len === 1) doc[k++] = ids[at];
        else for (let j = 0; j < len; j++) doc[k++] = ids[at + j];
      }
      doc[k] = eot;
      out.push(doc);
      from = ends[d];
    }
    if (this.entries > MAX_ENTRIES) this.reset();
    return out;
  }

  /** Cuts the added tokens out of `b` (leftmost, longest at one place, as the library matches) and splits the rest. */
  private splitSpecials(b: Uint8Array, n: number): number {
    if (this.specials.length === 0) return this.split(b, 0, b.length, n);
    const buf = Buffer.from(b.buffer, b.byteOffset, b.length);
    const next = this.specials.map((s) => buf.indexOf(s.bytes));
    let from = 0;
    for (;;) {
      let best = -1;
      for (let s = 0; s < next.length; s++) {
        if (next[s] !== -1 && next[s] < from) next[s] = buf.indexOf(this.specials[s].bytes, from);
        // Longest first in `specials`, so at equal places the first found is the longest.
        if (next[s] !== -1 && (best === -1 || next[s] < next[best])) best = s;
      }
      if (best === -1) return this.split(b, from, b.length, n);
      n = this.split(b, from, next[best], n);
      this.order[n++] = this.specialEntry(best);
      from = next[best] + this.specials[best].bytes.length;
    }
  }

  /** Appends the entries of the pre-tokens of `b[s, e)` to `order` from `n`; returns the new end. */
  private split(b: Uint8Array, s: number, e: number, n: number): number {
    const order = this.order;
    // The last place where a cut is safe whatever the bytes around it mean (see the header), and
    // how many entries `order` held then: a non-ASCII byte sends the scan back to it.
    let cut = s;
    let cutN = n;
    let i = s;
    while (i < e) {
      const c = CLASS[b[i]];
      let j = i + 1;
      // FNV-1a of the pre-token, computed as the scan goes where it can.
      let h = Math.imul(FNV_BASIS ^ b[i], FNV_PRIME);
      let hashed = true;
      let high = false;
      if (c === SPACE) {
        if (i > s && CLASS[b[i - 1]] <= OTHER) {
          cut = i;
          cutN = n;
        }
        const c1 = j < e ? CLASS[b[j]] : SPACE;
        if (b[i] === SP && c1 <= OTHER) {
          // " word", " 123", " ?!": a space and the run after it.
          let x: number;
          while (j < e && CLASS[(x = b[j])] === c1) {
            h = Math.imul(h ^ x, FNV_PRIME);
            j++;
          }
          high = j < e && CLASS[b[j]] === HIGH;
        } else {
          while (j < e && CLASS[b[j]] === SPACE) j++;
          hashed = false;
          if (j < e) {
            if (CLASS[b[j]] === HIGH) high = true;
            else if (j - i > 1) j--; // \s+(?!\S): the run but its last space, which goes with what follows
          }
        }
      } else if (b[i] === QUOTE && contraction(b, i, e) > 0) {
        j = i + contraction(b, i, e);
        hashed = false;
      } else if (c !== HIGH) {
        let x: number;
        while (j < e && CLASS[(x = b[j])] === c) {
          h = Math.imul(h ^ x, FNV_PRIME);
          j++;
        }
        high = j < e && CLASS[b[j]] === HIGH;
      } else high = true;
      if (high) {
        // From the last safe cut to the next: one key, encoded by the library whole.
        n = cutN;
        let k = Math.max(j, i + 1);
        while (k < e && !(CLASS[b[k]] === SPACE && CLASS[b[k - 1]] <= OTHER)) k++;
        order[n++] = this.entry(b, cut, k, fnv(b, cut, k));
        i = k;
        continue;
      }
      order[n++] = this.entry(b, i, j, hashed ? h : fnv(b, i, j));
      i = j;
    }
    return n;
  }

  /** The entry of the key `b[s, e)` whose hash is `h`, created (pending) when new. */
  private entry(b: Uint8Array, s: number, e: number, h: number): number {
    const len = e - s;
    // Slots are (entry + 1, hash) pairs, so a probe reads one place until the hashes agree.
    const slots = this.slots;
    const mask = (slots.length >> 1) - 1;
    let at = h & mask;
    for (let slot = slots[at << 1]; slot !== 0; slot = slots[at << 1]) {
      if (slots[(at << 1) + 1] === h) {
        const x = slot - 1;
        if (this.keyLen[x] === len) {
          const k = this.keyAt[x];
          const keys = this.keys;
          let i = 0;
          while (i < len && keys[k + i] === b[s + i]) i++;
          if (i === len) return x;
        }
      }
      at = (at + 1) & mask;
    }
    const x = this.newEntry(h, len);
    this.keys.set(b.subarray(s, e), this.keyAt[x]);
    slots[at << 1] = x + 1;
    slots[(at << 1) + 1] = h;
    this.pending.push(x);
    if (this.entries * 4 > slots.length) this.rehash();
    return x;
  }

  /** An entry outside the hash slots for added token `s` (its ids are known). */
  private specialEntry(s: number): number {
    const x = this.newEntry(0, 0);
    this.setIds(x, [this.specials[s].id]);
    return x;
  }

  private newEntry(h: number, len: number): number {
    if (this.entries === this.hash.length) {
      const grow = (a: Int32Array) => {
        const g = new Int32Array(a.length * 2);
        g.set(a);
        return g;
      };
      [this.hash, this.keyAt, this.keyLen, this.idAt, this.idLen] = [this.hash, this.keyAt, this.keyLen, this.idAt, this.idLen].map(grow);
    }
    if (this.keysUsed + len > this.keys.length) {
      const g = new Uint8Array(Math.max(this.keys.length * 2, this.keysUsed + len));
      g.set(this.keys.subarray(0, this.keysUsed));
      this.keys = g;
    }
    const x = this.entries++;
    this.hash[x] = h;
    this.keyAt[x] = this.keysUsed;
    this.keyLen[x] = len;
    this.idLen[x] = -1;
    this.keysUsed += len;
    return x;
  }

  private setIds(x: number, got: number[]): void {
    if (this.idsUsed + got.length > this.ids.length) {
      const g = new Uint32Array(Math.max(this.ids.length * 2, this.idsUsed + got.length));
      g.set(this.ids.subarray(0, this.idsUsed));
      this.ids = g;
    }
    this.ids.set(got, this.idsUsed);
    this.idAt[x] = this.idsUsed;
    this.idLen[x] = got.length;
    this.idsUsed += got.length;
  }

  private rehash(): void {
    const slots = new Int32Array(this.slots.length * 2);
    const mask = (slots.length >> 1) - 1;
    for (let x = 0; x < this.entries; x++) {
      if (this.keyLen[x] === 0) continue; // an added token's entry
      let at = this.hash[x] & mask;
      while (slots[at << 1] !== 0) at = (at + 1) & mask;
      slots[at << 1] = x + 1;
      slots[(at << 1) + 1] = this.hash[x];
    }
    this.slots = slots;
  }

  private reset(): void {
    this.slots = new Int32Array(1 << 17);
    this.entries = this.keysUsed = this.idsUsed = 0;
  }
}

const FNV_BASIS = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;

/** FNV-1a (32 bits) of `b[s, e)`. */
function fnv(b: Uint8Array, s: number, e: number): number {
  let h = FNV_BASIS;
  for (let i = s; i < e; i++) h = Math.imul(h ^ b[i], FNV_PRIME);
  return h;
}

/** The length of the contraction ('s 't 'm 'd 're 've 'll) at `b[i]`, a quote, or 0. */
function contraction(b: Uint8Array, i: number, e: number): number {
  if (i + 1 >= e) return 0;
  const n = b[i + 1];
  if (n === 0x73 || n === 0x74 || n === 0x6d || n === 0x64) return 2; // s t m d
  if (i + 2 >= e) return 0;
  const m = b[i + 2];
  if ((n === 0x72 && m === 0x65) || (n === 0x76 && m === 0x65) || (n === 0x6c && m === 0x6c)) return 3; // re ve ll
  return 0;
}
