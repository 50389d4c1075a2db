// checkOp: the one helper that tests a rule end to end in onnxruntime-node.
//  (a) forward: the graph's output against a plain-TS reference (reference.ts);
//  (b) backward: loss = Σ out·R for a random R; the autodiff directional derivative Σ⟨∇x, v⟩
//      against the central difference (L(x+εv) − L(x−εv)) / 2ε along a random v.
//  (c) float32 cases with a reference: the whole autodiff gradient, element by element, against
//      float64 central differences of the reference's Σ ref(x)·R. ORT's own float32 differences
//      (ε = 1e-2) are too coarse to tell close formulas apart (exact vs tanh GELU differ by <1e-3);
//      the reference, in float64, is not.
// Graphs run in float64 where ORT's CPU kernels have it, so ε can be small and tolerances tight.
// Default tolerances are ~10x the worst error `npm run gradcheck` shows over all cases (AMD EPYC,
// AVX2); the figures are beside each default.

import * as ort from 'onnxruntime-node';
import { Graph, type DType, type Dim, type Value } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { gradients } from './gradients';
import type { ND } from './reference';
import { mulberry32 } from '../data/random';

/** How to fill one input: uniform in [lo, hi), integers in [lo, hi), or fixed values. */
export type InputInit = { uniform: [number, number] } | { ints: [number, number] } | { values: number[] } | { intValues: number[] };

export interface CheckOptions {
  /** Graph float type (default float64; float32 for ops ORT lacks in double, e.g. Erf). */
  dtype?: 'float64' | 'float32';
  /** Per-input fill (default uniform in [-1, 1)); `ints`/`intValues` inputs are int64 and never differentiated. */
  init?: (InputInit | undefined)[];
  /** Declared shapes when they differ from the fed ones (symbolic dims, e.g. ['B', 4]). */
  declare?: (Dim[] | undefined)[];
  /** Inputs to differentiate (default: every float input). */
  wrt?: number[];
  /** Plain-TS forward of the first output, from the fed inputs. */
  reference?: (xs: ND[]) => ND;
  /** Forward check: |out − reference| ≤ fwdTol · max(1, max|reference|). */
  fwdTol?: number;
  /** Element-wise gradient check (c): |∇ − reference ∇| ≤ gradTol · max(1, max|reference ∇|). */
  gradTol?: number;
  /** Run check (c) (default: float32 cases with a reference and one output). */
  refGrad?: boolean;
  /** Directional finite-difference check (b): |ad − fd| ≤ atol + rtol·|fd|. */
  atol?: number;
  rtol?: number;
  /** Finite-difference step (default 1e-6 in float64, 1e-2 in float32). */
  eps?: number;
  seed?: number;
}

export interface CheckResult {
  name: string;
  ok: boolean;
  /** Largest forward error against the reference (absolute), when a reference was given. */
  forwardErr?: number;
  /** Largest element-wise gradient error against the reference gradient (c), scaled as gradTol. */
  gradErr?: number;
  /** Autodiff and finite-difference directional derivatives. */
  ad?: number;
  fd?: number;
  message?: string;
}

export type Build = (g: Graph, xs: Value[]) => Value | Value[];

/** Deterministic PRNG (mulberry32) so every case and its random R, v repeat exactly. */
export const rng = mulberry32;

const numelOf = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

function fill(init: InputInit | undefined, n: number, rand: () => number): number[] {
  if (init && 'values' in init) return init.values;
  if (init && 'intValues' in init) return init.intValues;
  if (init && 'ints' in init) return Array.from({ length: n }, () => init.ints[0] + Math.floor(rand() * (init.ints[1] - init.ints[0])));
  const [lo, hi] = init && 'uniform' in init ? init.uniform : [-1, 1];
  return Array.from({ length: n }, () => lo + rand() * (hi - lo));
}

function ortTensor(dtype: DType, dims: number[], values: number[]): ort.Tensor {
  if (dtype === 'int64') return new ort.Tensor('int64', BigInt64Array.from(values.map((v) => BigInt(v))), dims);
  if (dtype === 'float64') return new ort.Tensor('float64', Float64Array.from(values), dims);
  return new ort.Tensor('float32', Float32Array.from(values), dims);
}

const toNumbers = (t: ort.Tensor) => Array.from(t.data as ArrayLike<number | bigint>, Number);

/**
 * ∂/∂x of Σ reference(x)·r for every element of the `wrt` inputs, by float64 central differences
 * (step 1e-5·max(1, |x|): truncation and rounding both far below float32 resolution for the
 * smooth ops this is used on).
 */
function referenceGradient(reference: (xs: ND[]) => ND, shapes: number[][], data: number[][], wrt: number[], r: number[]): number[][] {
  const lossAt = (i: number, k: number, v: number) => {
    const y = reference(shapes.map((dims, j) => ({ dims, data: j === i ? data[i].map((x, kk) => (kk === k ? v : x)) : data[j] })));
    return y.data.reduce((s, yv, n) => s + yv * r[n], 0);
  };
  return wrt.map((i) =>
    data[i].map((x, k) => {
      const h = 1e-5 * Math.max(1, Math.abs(x));
      return (lossAt(i, k, x + h) - lossAt(i, k, x - h)) / (2 * h);
    }),
  );
}

async function session(g: Graph): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(serializeModel(g).model, { graphOptimizationLevel: 'disabled' });
}

/** Checks one op (or small composite) `build` on inputs of the given shapes; never throws. */
export async function checkOp(name: string, shapes: number[][], build: Build, opts: CheckOptions = {}): Promise<CheckResult> {
  try {
    return await runCheck(name, shapes, build, opts);
  } catch (e) {
    return { name, ok: false, message: e instanceof Error ? e.message : String(e) };
  }
}

async function runCheck(name: string, shapes: number[][], build: Build, opts: CheckOptions): Promise<CheckResult> {
  const dtype = opts.dtype ?? 'float64';
  const rand = rng(opts.seed ?? 1234);
  const inits = shapes.map((_, i) => opts.init?.[i]);
  const dtypes: DType[] = inits.map((it) => (it && ('ints' in it || 'intValues' in it) ? 'int64' : dtype));
  // float32 inputs are rounded here, so the reference sees exactly the values ORT is fed.
  const asFed = (v: number[]) => (dtype === 'float32' ? v.map(Math.fround) : v);
  const data = shapes.map((s, i) => (dtypes[i] === 'int64' ? fill(inits[i], numelOf(s), rand) : asFed(fill(inits[i], numelOf(s), rand))));
  const wrt = opts.wrt ?? dtypes.flatMap((d, i) => (d === 'int64' ? [] : [i]));

  const declareInputs = (g: Graph) => shapes.map((s, i) => g.input(`x${i}`, dtypes[i], opts.declare?.[i] ?? s));
  const feedsOf = (xs: number[][]) => Object.fromEntries(xs.map((v, i) => [`x${i}`, ortTensor(dtypes[i], shapes[i], v)]));
  const asList = (o: Value | Value[]) => (Array.isArray(o) ? o : [o]);

  // (a) Forward only: output values and their run-time shapes.
  const fg = new Graph(`${name}-fwd`);
  const fouts = asList(build(fg, declareInputs(fg)));
  fouts.forEach((o, k) => fg.output(o, `y${k}`));
  const fs = await session(fg);
  const fres = await fs.run(feedsOf(data));
  await fs.release();
  const outs = fouts.map((_, k) => fres[`y${k}`]);
  const result: CheckResult = { name, ok: true };
  if (opts.reference) {
    const ref = opts.reference(shapes.map((s, i) => ({ dims: s, data: data[i] })));
    const got = toNumbers(outs[0]);
    if (ref.dims.join() !== outs[0].dims.join()) throw new Error(`forward shape [${outs[0].dims}] vs reference [${ref.dims}]`);
    result.forwardErr = Math.max(0, ...got.map((v, i) => Math.abs(v - ref.data[i])));
    // observed max forwardErr: float64 7.5e-13 (RMSNormalization), float32 1.3e-7 (Gelu tanh;
    // LayerNormalization 1.2e-7). Was 1e-6 + 1e-4·scale (float64), 1e-4 + 1e-4·scale (float32).
    const tol = (opts.fwdTol ?? (dtype === 'float64' ? 5e-12 : 1e-6)) * Math.max(1, ...ref.data.map(Math.abs));
    if (!(result.forwardErr <= tol)) {
      return { ...result, ok: false, message: `forward differs from reference by ${result.forwardErr.toExponential(2)}` };
    }
  }
  if (wrt.length === 0) return result;

  // (b) loss = Σ_k Σ out_k · R_k; gradients w.r.t. the wrt inputs.
  const bg = new Graph(`${name}-grad`);
  const xs = declareInputs(bg);
  const bouts = asList(build(bg, xs));
  let loss: Value | null = null;
  const rFeeds: Record<string, ort.Tensor> = {};
  const rValues: number[][] = [];
  for (const [k, o] of bouts.entries()) {
    if (o.dtype !== dtype) continue; // integer/bool outputs carry no gradient
    const r = bg.input(`r${k}`, o.dtype, o.shape);
    rValues[k] = asFed(fill(undefined, outs[k].size, rand));
    rFeeds[`r${k}`] = ortTensor(dtype, outs[k].dims as number[], rValues[k]);
    const term = bg.op('ReduceSum', [bg.op('Mul', [o, r])[0]], { keepdims: 0 })[0];
    loss = loss ? bg.op('Add', [loss, term])[0] : term;
  }
  if (!loss) throw new Error('no float output to differentiate');
  bg.output(loss, 'loss');
  const grads = gradients(bg, loss, wrt.map((i) => xs[i]));
  wrt.forEach((i) => bg.output(grads.get(xs[i].name)!, `g${i}`));
  const bs = await session(bg);
  try {
    const base = await bs.run({ ...feedsOf(data), ...rFeeds });
    const refGrad = opts.refGrad ?? (dtype === 'float32' && opts.reference !== undefined && bouts.length === 1);
    if (refGrad) {
      if (!opts.reference || bouts.length !== 1 || !rValues[0]) throw new Error('refGrad needs a reference and exactly one float output');
      const want = referenceGradient(opts.reference, shapes, data, wrt, rValues[0]);
      let err = 0;
      let where = '';
      wrt.forEach((i, j) => {
        const got = toNumbers(base[`g${i}`]);
        const scale = Math.max(1, ...want[j].map(Math.abs));
        got.forEach((gv, k) => {
          const e = Math.abs(gv - want[j][k]) / scale;
          if (!(e <= err)) [err, where] = [e, `x${i}[${k}]: autodiff ${gv}, reference ${want[j][k]}`];
        });
      });
      result.gradErr = err;
      // observed max gradErr: 1.8e-7 (Gelu tanh; LayerNormalization 1.4e-7, Erf 8e-8)
      if (!(err <= (opts.gradTol ?? 2e-6))) return { ...result, ok: false, message: `gradient differs from the reference gradient by ${err.toExponential(2)} at ${where}` };
    }
    const v = wrt.map((i) => fill(undefined, data[i].length, rand));
    let ad = 0;
    wrt.forEach((i, j) => {
      const gt = base[`g${i}`];
      if (gt.dims.join() !== shapes[i].join()) throw new Error(`gradient of x${i} has shape [${gt.dims}], input is [${shapes[i]}]`);
      toNumbers(gt).forEach((gv, k) => (ad += gv * v[j][k]));
    });
    const eps = opts.eps ?? (dtype === 'float64' ? 1e-6 : 1e-2);
    const shifted = (sign: number) =>
      data.map((d, i) => {
        const j = wrt.indexOf(i);
        return j < 0 ? d : d.map((x, k) => x + sign * eps * v[j][k]);
      });
    const lp = toNumbers((await bs.run({ ...feedsOf(shifted(1)), ...rFeeds })).loss)[0];
    const lm = toNumbers((await bs.run({ ...feedsOf(shifted(-1)), ...rFeeds })).loss)[0];
    const fd = (lp - lm) / (2 * eps);
    // observed max |ad − fd|: float64 1.4e-9 at |fd| 1.7 (MatMul [2,1,3,4]@[3,4,5]), relative
    // 2.4e-9; float32 3.9e-5 at |fd| 0.76 (LayerNormalization), Gelu tanh 2.5e-5 at 0.67.
    // Was atol 1e-6, rtol 1e-5 (float64) and atol 1e-3, rtol 1e-2 (float32).
    const atol = opts.atol ?? (dtype === 'float64' ? 5e-9 : 2e-4);
    const rtol = opts.rtol ?? (dtype === 'float64' ? 5e-9 : 2e-4);
    const ok = Math.abs(ad - fd) <= atol + rtol * Math.abs(fd);
    return { ...result, ok, ad, fd, message: ok ? undefined : `gradient: autodiff ${ad} vs finite difference ${fd}` };
  } finally {
    await bs.release();
  }
}
