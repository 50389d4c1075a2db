// The pseudo-gradient codecs of `outer.compression` (engine/train/compress.ts): fp16 rounds every
// value to its nearest half (ties to even), int8 stays within half a block scale of every value,
// and the aggregator fed decoded deltas takes the outer step the float32 weights give, up to that
// rounding.

import { compressDelta, decodeDelta, floatToHalf, INT8_BLOCK } from '../../engine/train/compress';
import { toFloat32 } from '../../engine/hf/folder';
import { NonFiniteWeightError, OuterAggregator, outerStep } from '../../engine/train/outer';

const half = (h: number) => toFloat32('float16', new Uint8Array(Uint16Array.of(h).buffer))[0]!;

/** A seeded stream of floats (xorshift32). */
function floats(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

test('floatToHalf: the nearest half, ties to even, across normal, subnormal, overflow and special values', () => {
  // Exact halves come back unchanged (every finite half, both signs).
  const wrong: number[] = [];
  for (let h = 0; h < 0x7c00; h++) {
    if (floatToHalf(half(h)) !== h) wrong.push(h);
    if (floatToHalf(half(h | 0x8000)) !== (h | 0x8000)) wrong.push(h | 0x8000);
  }
  expect(wrong).toEqual([]);
  // Midpoints between neighbours round to the even one.
  for (const h of [0x0001, 0x0002, 0x03ff, 0x0400, 0x3c00, 0x3c01, 0x7bfe]) {
    const mid = (half(h) + half(h + 1)) / 2;
    expect(floatToHalf(mid)).toBe(h % 2 === 0 ? h : h + 1);
  }
  // Any other float goes to a half no farther than either neighbour.
  const far: number[] = [];
  for (const x of [...floats(20000, 7, 70000), ...floats(20000, 8, 1e-3)]) {
    const h = floatToHalf(x);
    const err = Math.abs(half(h) - x);
    if (!Number.isFinite(half(h))) {
      if (Math.abs(x) < 65520) far.push(x); // only past 65504 + half an ulp may a value overflow
      continue;
    }
    const bits = h & 0x7fff;
    if (bits > 0 && err > Math.abs(half(h - 1) - x)) far.push(x);
    if (bits < 0x7bff && err > Math.abs(half(h + 1) - x)) far.push(x);
  }
  expect(far).toEqual([]);
  expect(floatToHalf(Infinity)).toBe(0x7c00);
  expect(floatToHalf(-Infinity)).toBe(0xfc00);
  expect(Number.isNaN(half(floatToHalf(NaN)))).toBe(true);
  expect(floatToHalf(1e-9)).toBe(0); // below half the smallest subnormal
});

test('int8 deltas are within half a block scale of every value; fp16 within half an ulp', () => {
  const n = 3 * INT8_BLOCK + 17; // a short last block
  const global = new Map([['w', floats(n, 1, 1)], ['b', floats(5, 2, 1)]]);
  const local = new Map([...global].map(([k, g]) => [k, g.map((v, i) => v - floats(g.length, 3 + k.length, 0.01)[i]!)]));
  const int8 = compressDelta(global, local, 'int8');
  expect(int8.bytes).toBe(n + 4 * 4 + 5 + 4); // values + one float32 scale per block
  const d8 = decodeDelta(int8.tensors, 'int8');
  const fp16 = decodeDelta(compressDelta(global, local, 'fp16').tensors, 'fp16');
  for (const [name, g] of global) {
    const l = local.get(name)!;
    for (let b = 0; b * INT8_BLOCK < g.length; b++) {
      const idx = Array.from({ length: Math.min(INT8_BLOCK, g.length - b * INT8_BLOCK) }, (_, i) => b * INT8_BLOCK + i);
      const exact = idx.map((i) => Math.fround(g[i]! - l[i]!));
      const s = Math.max(...exact.map(Math.abs)) / 127;
      idx.forEach((i, j) => {
        expect(Math.abs(d8.get(name)![i]! - exact[j]!)).toBeLessThanOrEqual(s / 2 + 1e-12);
        expect(fp16.get(name)![i]).toBe(half(floatToHalf(exact[j]!)));
      });
    }
  }
});

test('the outer step over decoded deltas is the float32 one up to their rounding', () => {
  const global = new Map([['w', floats(1000, 11, 1)]]);
  const locals = [1, 2].map((k) => new Map([['w', global.get('w')!.map((v, i) => v - floats(1000, 20 + k, 0.02)[i]!)]]));
  const cfg = { kind: 'nesterov' as const, lr: 0.7, momentum: 0.9 };
  const want = outerStep(global, locals, cfg);
  for (const kind of ['fp16', 'int8'] as const) {
    const agg = new OuterAggregator(global);
    locals.forEach((l, k) => agg.addDelta(decodeDelta(compressDelta(global, l, kind).tensors, kind), `worker ${k}`));
    const got = agg.apply(cfg);
    // |Δ| ≤ 0.02: fp16 rounds it to 2^-17 at most, int8 to 0.02/254; the step multiplies by lr(1+μ) = 1.33.
    const bound = 1.33 * (kind === 'fp16' ? 2 ** -17 : 0.02 / 254) + 1e-7;
    let worst = 0;
    want.weights.get('w')!.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got.weights.get('w')![i]!))));
    expect(worst).toBeLessThanOrEqual(bound);
    expect(worst).toBeGreaterThan(0);
  }
  const bad = new Map([['w', Float32Array.from(global.get('w')!, (v, i) => (i === 3 ? NaN : v))]]);
  expect(() => compressDelta(global, bad, 'int8', 'worker 1')).toThrow(NonFiniteWeightError);
  expect(() => compressDelta(global, bad, 'fp16', 'worker 1')).toThrow('worker 1: tensor "w" holds NaN at index 3');
});
