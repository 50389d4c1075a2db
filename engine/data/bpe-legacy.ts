// The byte-level BPE our own trainer made before tokenizers were trained with Hugging Face's
// `tokenizers` library (train-tokenizer.ts). Kept to LOAD datasets and models that were prepared
// with it (their tokenizer.json is `{ kind: 'bpe', id, merges }`); nothing trains this format now.
//
// Text is split with GPT-2's pre-tokenizer pattern so merges never cross word boundaries; ids
// 0..255 are bytes, id 256+i is merge i.

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
