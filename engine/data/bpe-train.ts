// Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant), trained on our corpus.
// No maintained JS package trains BPE with a chosen vocabulary size (the `tokenizers` N-API
// binding exposes `train` without trainer options), so training is ours; it is small.
//
// Text is split with GPT-2's pre-tokenizer pattern so merges never cross word boundaries; ids
// 0..255 are bytes, id 256+i is merge i. Ties break on the smaller pair key, so training is a pure
// function of the corpus and the vocabulary size.

const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

const pairKey = (a: number, b: number) => a * 65536 + b;

export class BpeModel {
  /** Rank of each merged pair (lower merges first). */
  private readonly ranks = new Map<number, number>();
  private readonly bytesOf: Uint8Array[] = [];
  private readonly cache = new Map<string, number[]>();

  constructor(readonly merges: [number, number][]) {
    for (let i = 0; i < 256; i++) this.bytesOf.push(Uint8Array.of(i));
    merges.forEach(([a, b], i) => {
      if (a >= 256 + i || b >= 256 + i) throw new Error(`bpe merge ${i}: [${a}, ${b}] refers to an id not yet defined`);
      this.ranks.set(pairKey(a, b), 256 + i);
      this.bytesOf.push(Buffer.concat([this.bytesOf[a], this.bytesOf[b]]));
    });
  }

  get size(): number {
    return 256 + this.merges.length;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of text.matchAll(GPT2_SPLIT)) {
      const chunk = m[0];
      let ids = this.cache.get(chunk);
      if (!ids) {
        ids = this.encodeChunk(Array.from(Buffer.from(chunk, 'utf8')));
        if (this.cache.size < 100_000) this.cache.set(chunk, ids);
      }
      for (const id of ids) out.push(id);
    }
    return out;
  }

  decode(ids: number[]): string {
    return Buffer.concat(ids.map((i) => this.bytesOf[i])).toString('utf8');
  }

  private encodeChunk(ids: number[]): number[] {
    while (ids.length > 1) {
      let best = -1;
      let bestId = Infinity;
      for (let i = 0; i < ids.length - 1; i++) {
        const id = this.ranks.get(pairKey(ids[i], ids[i + 1]));
        if (id !== undefined && id < bestId) {
          bestId = id;
          best = i;
        }
      }
      if (best < 0) break;
      const [a, b] = [ids[best], ids[best + 1]];
      const next: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i < ids.length - 1 && ids[i] === a && ids[i + 1] === b) {
          next.push(bestId);
          i++;
        } else next.push(ids[i]);
      }
      ids = next;
    }
    return ids;
  }
}

/**
 * Learns `vocabSize - 256` merges from the texts. Pair counts are updated incrementally (only
 * words containing the merged pair are touched), so Brown-sized corpora train in seconds.
 */
export function trainBpe(texts: Iterable<string>, vocabSize: number): BpeModel {
  if (vocabSize <= 256) throw new Error(`bpe vocabSize must exceed 256 (got ${vocabSize})`);
  // Unique pre-tokenized chunks with their frequencies.
  const freq = new Map<string, number>();
  for (const text of texts) for (const m of text.matchAll(GPT2_SPLIT)) freq.set(m[0], (freq.get(m[0]) ?? 0) + 1);
  const words = [...freq.entries()].map(([w, count]) => ({ ids: Array.from(Buffer.from(w, 'utf8')), count }));

  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (wi: number, sign: 1 | -1) => {
    const { ids, count } = words[wi];
    for (let i = 0; i < ids.length - 1; i++) {
      const k = pairKey(ids[i], ids[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * count);
      if (sign > 0) {
        let s = pairWords.get(k);
        if (!s) pairWords.set(k, (s = new Set()));
        s.add(wi);
      }
    }
  };
  words.forEach((_, wi) => addPairs(wi, 1));

  const merges: [number, number][] = [];
  for (let newId = 256; newId < vocabSize; newId++) {
    let bestKey = -1;
    let bestCount = 1; // a pair seen once is not worth a token
    for (const [k, c] of pairCount) if (c > bestCount || (c === bestCount && bestKey >= 0 && k < bestKey)) [bestKey, bestCount] = [k, c];
    if (bestKey < 0) break; // corpus exhausted before the vocabulary filled
    const a = Math.floor(bestKey / 65536);
    const b = bestKey % 65536;
    merges.push([a, b]);
    for (const wi of pairWords.get(bestKey) ?? []) {
      const w = words[wi];
      addPairs(wi, -1);
      const next: number[] = [];
      for (let i = 0; i < w.ids.length; i++) {
        if (i < w.ids.length - 1 && w.ids[i] === a && w.ids[i + 1] === b) {
          next.push(newId);
          i++;
        } else next.push(w.ids[i]);
      }
      w.ids = next;
      addPairs(wi, 1);
    }
    pairCount.delete(bestKey);
    pairWords.delete(bestKey);
  }
  return new BpeModel(merges);
}
