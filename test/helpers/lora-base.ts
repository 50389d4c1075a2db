// The set-up the quantized-LoRA-base tests share (lora-int8-base, lora-int4-base): a learnable
// token stream and the relative error they compare adapter gradients with.

import { mulberry32 } from '../../engine/models/blocks';
import type { Batch } from '../../engine/train/trainer';

/** A fixed, learnable stream of (b, t) tokens: token t+1 = (3·t + 1) mod V with 10% noise. */
export function affineStream(vocab: number, b: number, t: number, seed: number): Batch {
  const r = mulberry32(seed);
  const tokens = new BigInt64Array(b * t);
  const targets = new BigInt64Array(b * t);
  for (let row = 0; row < b; row++) {
    let tok = Math.floor(r() * vocab);
    for (let i = 0; i < t; i++) {
      tokens[row * t + i] = BigInt(tok);
      tok = r() < 0.9 ? (3 * tok + 1) % vocab : Math.floor(r() * vocab);
      targets[row * t + i] = BigInt(tok);
    }
  }
  return { tokens: { dtype: 'int64', dims: [b, t], data: tokens }, targets: { dtype: 'int64', dims: [b, t], data: targets } };
}

/** ‖a − b‖ / ‖b‖. */
export function relErr(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    n += b[i] ** 2;
  }
  return Math.sqrt(d / n);
}
