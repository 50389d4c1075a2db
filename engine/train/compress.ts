// Compressed DiLoCo pseudo-gradients: what a worker uploads instead of its full float32 weights
// when `training.outer.compression` is fp16 or int8. The delta Δ_k = global − local_k (float32) is
//   fp16: rounded to the nearest half (ties to even); |Δ| above 65504 becomes ±inf (never seen:
//         a round's weight change is ≪ 1), which the aggregator refuses as a non-finite weight;
//   int8: per block of INT8_BLOCK values, q = round(Δ / s) with s = max|Δ| / 127 (float32), so a
//         value's error is at most s/2; `<name>.scale` holds the block scales.
// Decoding gives float32 deltas; the aggregator adds global − Δ_k in float64 for each worker.

import type { TensorData } from '../graph/ir';
import { toFloat32 } from '../hf/folder';
import { NonFiniteWeightError, type Weights } from './outer';

export const OUTER_COMPRESSIONS = ['none', 'fp16', 'int8'] as const;
export type OuterCompression = (typeof OUTER_COMPRESSIONS)[number];

/** Values per int8 scale: 1.6 % of the payload goes to scales. */
export const INT8_BLOCK = 256;
export const SCALE_SUFFIX = '.scale';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → float16 bits, round to nearest, ties to even (as numpy's astype(float16)). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow → inf
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit 1 in, round to nearest even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // may carry into the exponent: still right
  return sign | h;
}

export interface CompressedDelta {
  /** The tensors a worker uploads (safetensors): `<name>` (float16 or int8) and, for int8, `<name>.scale`. */
  tensors: Map<string, TensorData>;
  /** Bytes of tensor data (without the safetensors header). */
  bytes: number;
}

/** Δ = global − local per parameter, compressed; `who` names the worker in errors. */
export function compressDelta(global: Weights, local: Weights, kind: Exclude<OuterCompression, 'none'>, who = 'worker'): CompressedDelta {
  const tensors = new Map<string, TensorData>();
  let bytes = 0;
  const d = new Float32Array(1);
  for (const [name, g] of global) {
    const l = local.get(name);
    if (!l) throw new Error(`${who}: parameter "${name}" is missing`);
    if (l.length !== g.length) throw new Error(`${who}: parameter "${name}" has ${l.length} values, the global model ${g.length}`);
    if (kind === 'fp16') {
      const h = new Uint16Array(g.length);
      for (let i = 0; i < g.length; i++) {
        if (!Number.isFinite(l[i])) throw new NonFiniteWeightError(who, name, i, l[i]!);
        d[0] = g[i]! - l[i]!;
        h[i] = floatToHalf(d[0]);
      }
      tensors.set(name, { dtype: 'float16', dims: [g.length], data: h });
      bytes += h.byteLength;
    } else {
      const blocks = Math.ceil(g.length / INT8_BLOCK);
      const q = new Int8Array(g.length);
      const scales = new Float32Array(blocks);
      const delta = new Float32Array(INT8_BLOCK);
      for (let b = 0; b < blocks; b++) {
        const lo = b * INT8_BLOCK;
        const hi = Math.min(g.length, lo + INT8_BLOCK);
        let max = 0;
        for (let i = lo; i < hi; i++) {
          if (!Number.isFinite(l[i])) throw new NonFiniteWeightError(who, name, i, l[i]!);
          delta[i - lo] = g[i]! - l[i]!;
          max = Math.max(max, Math.abs(delta[i - lo]!));
        }
        f32[0] = max / 127;
        const s = f32[0];
        scales[b] = s;
        for (let i = lo; i < hi; i++) q[i] = s === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(delta[i - lo]! / s)));
      }
      tensors.set(name, { dtype: 'int8', dims: [g.length], data: q });
      tensors.set(name + SCALE_SUFFIX, { dtype: 'float32', dims: [blocks], data: scales });
      bytes += q.byteLength + scales.byteLength;
    }
  }
  return { tensors, bytes };
}

/** The float32 deltas of a compressed upload; `where` names the file in errors. */
export function decodeDelta(tensors: Map<string, TensorData>, where: string): Weights {
  const out: Weights = new Map();
  for (const [name, t] of tensors) {
    if (name.endsWith(SCALE_SUFFIX) && tensors.get(name.slice(0, -SCALE_SUFFIX.length))?.dtype === 'int8') continue;
    if (t.dtype === 'float16') {
      const h = t.data as Uint16Array;
      out.set(name, toFloat32('float16', new Uint8Array(h.buffer, h.byteOffset, h.byteLength)));
    } else if (t.dtype === 'int8') {
      const q = t.data as Int8Array;
      const s = tensors.get(name + SCALE_SUFFIX);
      if (!s || s.dtype !== 'float32' || s.data.length !== Math.ceil(q.length / INT8_BLOCK)) throw new Error(`${where}: int8 delta "${name}" has no matching ${name}${SCALE_SUFFIX} (float32, ${Math.ceil(q.length / INT8_BLOCK)} values)`);
      const scales = s.data as Float32Array;
      const v = new Float32Array(q.length);
      for (let i = 0; i < q.length; i++) v[i] = q[i]! * scales[(i / INT8_BLOCK) | 0]!;
      out.set(name, v);
    } else {
      throw new Error(`${where}: delta "${name}" is ${t.dtype}, expected float16 or int8`);
    }
  }
  return out;
}
