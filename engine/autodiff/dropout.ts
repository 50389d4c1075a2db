// Deterministic dropout from standard ONNX ops.
//
// ONNX Dropout seeds its generator from a node attribute, so its mask changes from run to run and
// cannot be replayed. Here the mask is a pure function of (seed, step, salt, element index):
// a counter-based hash (murmur3's 32-bit finalizer) evaluated with int64 Mul/Add/BitwiseAnd/
// BitwiseXor, a right shift written as Div by a power of two (ORT's BitShift has no int64 kernel).
// A resumed run therefore draws the same masks, and the backward (plain Mul by the same mask)
// needs no special rule.

import type { Value } from '../graph/ir';
import { onnxDType, scalarLike } from './rules/common';

const M32 = 0xffffffff;
const GOLDEN = 0x9e3779b1;
const SEED_MUL = 0x85ebca77;
const STEP_MUL = 0xc2b2ae3d;
const SALT_MUL = 0x27d4eb2f;
const FMIX1 = 0x85ebca6b;
const FMIX2 = 0xc2b2ae35;

/**
 * y = x · mask / (1 − ratio), with mask drawn from (seed, step, salt). `seed` and `step` are int64
 * scalar values (graph inputs); `salt` tells layers apart.
 *
 * @example
 * const h = seededDropout(attn, 0.1, seedInput, stepInput, layerIndex);
 */
export function seededDropout(x: Value, ratio: number, seed: Value, step: Value, salt = 0): Value {
  if (ratio < 0 || ratio >= 1) throw new Error(`seededDropout: ratio ${ratio} must be in [0, 1)`);
  if (ratio === 0) return x;
  const g = x.graph;
  const o = (t: string, xs: Value[], attrs = {}) => g.op(t, xs, attrs)[0];
  const c = (v: number) => g.const({ dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(v)) }, 'hash');
  const seed64 = seed.dtype === 'int64' ? seed : o('Cast', [seed], { to: 7 });
  const step64 = step.dtype === 'int64' ? step : o('Cast', [step], { to: 7 });

  // Element counter, shaped like x.
  const n = o('Size', [x]);
  const idx = o('Reshape', [o('Range', [c(0), n, c(1)]), o('Shape', [x])]);
  const key = o('Add', [o('Add', [o('Mul', [seed64, c(SEED_MUL)]), o('Mul', [step64, c(STEP_MUL)])]), c(salt * SALT_MUL)]);
  const mask32 = c(M32);
  const low32 = (v: Value) => o('BitwiseAnd', [v, mask32]);
  const xorShift = (v: Value, bits: number) => o('BitwiseXor', [v, o('Div', [v, c(2 ** bits)])]);
  let h = low32(o('Add', [o('Mul', [idx, c(GOLDEN)]), key]));
  h = xorShift(h, 16);
  h = low32(o('Mul', [h, c(FMIX1)]));
  h = xorShift(h, 13);
  h = low32(o('Mul', [h, c(FMIX2)]));
  h = xorShift(h, 16);
  // Top 24 bits → uniform in [0, 1), exact in float32.
  const u = o('Mul', [o('Cast', [o('Div', [h, c(256)])], { to: onnxDType[x.dtype] }), scalarLike(x, 2 ** -24)]);
  const keep = o('Cast', [o('GreaterOrEqual', [u, scalarLike(x, ratio)])], { to: onnxDType[x.dtype] });
  return o('Mul', [x, o('Mul', [keep, scalarLike(x, 1 / (1 - ratio))])]);
}

/** The same mask computed in TS (tests and debugging): 1 where kept, 0 where dropped. */
export function seededDropoutMask(count: number, ratio: number, seed: number, step: number, salt = 0): number[] {
  const u32 = (v: bigint) => BigInt.asUintN(32, v);
  const key = BigInt(seed) * BigInt(SEED_MUL) + BigInt(step) * BigInt(STEP_MUL) + BigInt(salt * SALT_MUL);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    let h = u32(BigInt(i) * BigInt(GOLDEN) + key);
    h ^= h >> 16n;
    h = u32(h * BigInt(FMIX1));
    h ^= h >> 13n;
    h = u32(h * BigInt(FMIX2));
    h ^= h >> 16n;
    const u = Number(h >> 8n) * 2 ** -24;
    out.push(u >= ratio ? 1 : 0);
  }
  return out;
}
