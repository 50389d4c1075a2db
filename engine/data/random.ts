// Counter-based randomness: every draw is a pure function of (seed, stream ids, counter), so a
// resumed run reproduces exactly the batches and masks of an uninterrupted one without carrying
// generator state around. SplitMix64-style mixing on 32-bit halves (JS numbers stay exact).

/** 32-bit avalanche hash (lowbias32, Wellons). */
export function hash32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** Combines any number of integer keys into one 32-bit seed. */
export function mix(...keys: number[]): number {
  let h = 0x9e3779b9;
  for (const k of keys) h = hash32((h ^ hash32(k >>> 0) ^ (Math.floor(k / 2 ** 32) >>> 0)) >>> 0);
  return h;
}

/** A stream of uniform draws keyed by (seed, ...ids); draw i depends only on the keys and i. */
export class Counter {
  private i = 0;
  private readonly key: number;
  constructor(...keys: number[]) {
    this.key = mix(...keys);
  }
  /** Uniform in [0, 1). */
  next(): number {
    return hash32((this.key + Math.imul(this.i++, 0x9e3779b9)) >>> 0) / 2 ** 32;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** Stable 32-bit hash of a string (FNV-1a), used to assign documents to splits and shards. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return hash32(h);
}

/** mulberry32: a small sequential PRNG for initialisation and test data (uniform in [0, 1)). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
