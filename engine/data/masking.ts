// Pretraining objectives on token rows, seeded like the batch sampler: a pure function of
// (seed, shard, step), so a resumed run masks exactly as the uninterrupted one did.
//   BERT MLM (Devlin et al. 2019): pick 15% of positions; of those 80% → [MASK], 10% → a random
//     token, 10% unchanged; labels hold the original id there and -100 (ignored) elsewhere.
// T5 span corruption lives in t5-span.ts.

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
