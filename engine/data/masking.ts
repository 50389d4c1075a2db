// Pretraining objectives on token rows, seeded like the batch sampler: a pure function of
// (seed, shard, step), so a resumed run masks exactly as the uninterrupted one did.
//   BERT MLM (Devlin et al. 2019): pick 15% of positions; of those 80% → [MASK], 10% → a random
//     token, 10% unchanged; labels hold the original id there and -100 (ignored) elsewhere.
//   T5 span corruption (Raffel et al. 2020): drop ~15% of tokens in spans of mean length 3; each
//     span becomes one sentinel in the input, and the target lists sentinel + dropped tokens.

import { Counter } from './random';

export const IGNORE_INDEX = -100;

export interface MaskKey {
  seed: number;
  shard: number;
  step: number;
}

export interface MlmOptions {
  maskId: number;
  vocabSize: number;
  /** Ids never selected for masking (CLS, SEP, PAD...). */
  specialIds?: number[];
  probability?: number;
}

/** Masks one (B, T) int64 batch in place of a copy; returns the corrupted inputs and labels. */
export function mlmMask(tokens: BigInt64Array, key: MaskKey, opts: MlmOptions): { inputIds: BigInt64Array; labels: BigInt64Array } {
  const p = opts.probability ?? 0.15;
  const special = new Set(opts.specialIds ?? []);
  const rng = new Counter(key.seed, key.shard, key.step, 0x6d6c6d); // 'mlm' stream
  const inputIds = tokens.slice();
  const labels = new BigInt64Array(tokens.length).fill(BigInt(IGNORE_INDEX));
  for (let i = 0; i < tokens.length; i++) {
    // Draw the same number of uniforms per position whatever happens, so positions stay aligned.
    const [u, v, r] = [rng.next(), rng.next(), rng.int(opts.vocabSize)];
    if (special.has(Number(tokens[i])) || u >= p) continue;
    labels[i] = tokens[i];
    if (v < 0.8) inputIds[i] = BigInt(opts.maskId);
    else if (v < 0.9) inputIds[i] = BigInt(r);
  }
  return { inputIds, labels };
}

export interface SpanOptions {
  /** First sentinel id (`<extra_id_0>`); sentinel k is `sentinelStart - k` as in T5's vocabulary. */
  sentinelStart: number;
  eosId: number;
  noiseDensity?: number;
  meanSpanLength?: number;
}

/**
 * Span-corrupts one sequence. The number of noise tokens and spans follows T5's
 * random_spans_noise_mask: round(L·density) noise tokens in round(noise/mean) spans, with span
 * lengths and gaps drawn as random partitions.
 */
export function spanCorrupt(ids: number[], key: MaskKey & { row: number }, opts: SpanOptions): { inputs: number[]; targets: number[] } {
  const L = ids.length;
  const density = opts.noiseDensity ?? 0.15;
  const mean = opts.meanSpanLength ?? 3;
  const nNoise = Math.min(Math.max(Math.round(L * density), 1), L - 1);
  const nSpans = Math.max(Math.round(nNoise / mean), 1);
  const rng = new Counter(key.seed, key.shard, key.step, key.row, 0x7435); // 't5' stream
  const noiseLens = randomPartition(nNoise, nSpans, rng);
  const keepLens = randomPartition(L - nNoise, nSpans, rng);
  const inputs: number[] = [];
  const targets: number[] = [];
  let pos = 0;
  for (let s = 0; s < nSpans; s++) {
    for (let k = 0; k < keepLens[s]; k++) inputs.push(ids[pos++]);
    const sentinel = opts.sentinelStart - s;
    inputs.push(sentinel);
    targets.push(sentinel);
    for (let k = 0; k < noiseLens[s]; k++) targets.push(ids[pos++]);
  }
  inputs.push(opts.eosId);
  targets.push(opts.eosId);
  return { inputs, targets };
}

/** Splits n items into k segments uniformly at random (k−1 distinct cut points). */
function randomPartition(n: number, k: number, rng: Counter): number[] {
  // With fewer items than segments the trailing segments are empty.
  const parts = Math.min(k, n);
  const cuts = new Set<number>();
  while (cuts.size < parts - 1) cuts.add(1 + rng.int(n - 1));
  const sorted = [0, ...[...cuts].sort((a, b) => a - b), n];
  const lens = sorted.slice(1).map((c, i) => c - sorted[i]);
  while (lens.length < k) lens.push(0);
  return lens;
}
