// Gradcheck cases, part 1: elementwise, activations, linear algebra. Each case names the op it
// covers; `npm run gradcheck` and test/engine/autodiff.test.ts run the same list.

import { f, tensor, type Value } from '../graph/ir';
import type { Build, CheckOptions } from './gradcheck';
import * as R from './reference';

export interface OpCase {
  name: string;
  /** ONNX op type whose rule the case exercises (for the op count). */
  op: string;
  shapes: number[][];
  build: Build;
  opts?: CheckOptions;
}

const one = (op: string, attrs = {}): Build => (g, xs) => g.op(op, xs, attrs)[0];
const pos: CheckOptions['init'] = [{ uniform: [0.5, 2] }, { uniform: [0.5, 2] }];

function unary(op: string, fn: (v: number) => number, opts: CheckOptions = {}): OpCase {
  return { name: op, op, shapes: [[3, 4]], build: one(op), opts: { reference: ([x]) => R.map(x, fn), ...opts } };
}

function binary(op: string, fn: (a: number, b: number) => number, shapes: number[][], opts: CheckOptions = {}): OpCase {
  return { name: `${op} [${shapes[0]}]·[${shapes[1]}]`, op, shapes, build: one(op), opts: { reference: ([a, b]) => R.zip(fn, a, b), ...opts } };
}

export const elementwiseCases: OpCase[] = [
  binary('Add', (a, b) => a + b, [[2, 3, 4], [4]]),
  {
    name: 'Add symbolic batch [B,4]+[1,4]',
    op: 'Add',
    shapes: [[3, 4], [1, 4]],
    build: one('Add'),
    opts: { declare: [['B', 4]], reference: ([a, b]) => R.zip((p, q) => p + q, a, b) },
  },
  binary('Sub', (a, b) => a - b, [[2, 3], [2, 1]]),
  binary('Mul', (a, b) => a * b, [[2, 3, 4], [3, 1]]),
  binary('Div', (a, b) => a / b, [[3, 4], [4]], { init: [undefined, { uniform: [0.5, 2] }] }),
  binary('Pow', (a, b) => a ** b, [[3, 4], [3, 4]], { init: pos }),
  {
    name: 'Pow constant exponent',
    op: 'Pow',
    shapes: [[3, 4]],
    build: (g, [x]) => g.op('Pow', [x, g.scalar(3, 'float64')])[0],
    opts: { reference: ([x]) => R.map(x, (v) => v ** 3) },
  },
  unary('Neg', (v) => -v),
  unary('Sqrt', Math.sqrt, { init: pos }),
  unary('Reciprocal', (v) => 1 / v, { init: pos }),
  unary('Exp', Math.exp),
  unary('Log', Math.log, { init: pos }),
  unary('Abs', Math.abs),
  unary('Sin', Math.sin),
  unary('Cos', Math.cos),
  binary('Max', Math.max, [[2, 3], [3]]),
  binary('Min', Math.min, [[2, 3], [2, 1]]),
  {
    name: 'Sum of three (broadcast)',
    op: 'Sum',
    shapes: [[2, 3], [3], [2, 1]],
    build: one('Sum'),
    opts: { reference: ([a, b, c]) => R.zip((p, q, r) => p + q + r, a, b, c) },
  },
  {
    name: 'Where broadcast',
    op: 'Where',
    shapes: [[2, 3], [2, 3], [3]],
    build: (g, [c, a, b]) => g.op('Where', [g.op('Greater', [c, g.scalar(0, 'float64')])[0], a, b])[0],
    opts: { wrt: [1, 2], reference: ([c, a, b]) => R.zip((p, q, r) => (p > 0 ? q : r), c, a, b) },
  },
  {
    name: 'value used twice (x·x + x)',
    op: 'Add',
    shapes: [[3, 4]],
    build: (g, [x]) => g.op('Add', [g.op('Mul', [x, x])[0], x])[0],
    opts: { reference: ([x]) => R.map(x, (v) => v * v + v) },
  },
  {
    name: 'Cast float64→float32→float64',
    op: 'Cast',
    shapes: [[3, 4]],
    build: (g, [x]) => g.op('Cast', [g.op('Cast', [x], { to: 1 })[0]], { to: 11 })[0],
    // |ad − fd| observed 3.3e-5 at |fd| 2.0: the float32 rounding in the middle, over ε = 1e-3
    opts: { reference: ([x]) => R.map(x, Math.fround), eps: 1e-3, atol: 1e-5, rtol: 1e-4 },
  },
  unary('Identity', (v) => v),
];

/** 12 points for a [3, 4] input where exact and tanh GELU are far apart (see activationCases). */
const geluPoints = { values: [-3, -2.6, -2.2, -1.8, -1.4, -1, 1, 1.4, 1.8, 2.2, 2.6, 3] };

export const activationCases: OpCase[] = [
  unary('Tanh', Math.tanh),
  unary('Sigmoid', (v) => 1 / (1 + Math.exp(-v))),
  unary('Relu', (v) => Math.max(0, v)),
  { ...unary('LeakyRelu', (v) => (v > 0 ? v : 0.2 * v), { dtype: 'float32' }), build: one('LeakyRelu', { alpha: f(0.2) }) },
  // ORT's CPU provider has no float64 Erf (nor Gelu), so these run in float32, and gradcheck also
  // checks their whole gradient against the float64 reference's. Exact (erf) and tanh GELU differ
  // by 6.6e-5…4.7e-4 in value and 6e-5…7.8e-4 in slope at each of these points (|x| in 1…3), far
  // above the float32 tolerances (1e-6), so a Gelu that computes, or differentiates, the other
  // form fails here; on the default [-1, 1) points the values differ by at most 1.5e-4.
  unary('Erf', R.erf, { dtype: 'float32' }),
  { ...unary('Gelu', (v) => R.gelu(v, 'none'), { dtype: 'float32', init: [geluPoints] }), name: 'Gelu exact' },
  { ...unary('Gelu', (v) => R.gelu(v, 'tanh'), { dtype: 'float32', init: [geluPoints] }), name: 'Gelu tanh', build: one('Gelu', { approximate: 'tanh' }) },
  { name: 'Softmax axis -1', op: 'Softmax', shapes: [[2, 3, 5]], build: one('Softmax', { axis: -1 }), opts: { reference: ([x]) => R.softmax(x, 2) } },
  { name: 'Softmax axis 1', op: 'Softmax', shapes: [[2, 3, 5]], build: one('Softmax', { axis: 1 }), opts: { reference: ([x]) => R.softmax(x, 1) } },
  { name: 'LogSoftmax', op: 'LogSoftmax', shapes: [[4, 6]], build: one('LogSoftmax', { axis: -1 }), opts: { reference: ([x]) => R.logSoftmax(x, 1) } },
];

const mm = (shapes: number[][], opts: CheckOptions = {}): OpCase => ({
  name: `MatMul [${shapes[0]}]@[${shapes[1]}]`,
  op: 'MatMul',
  shapes,
  build: one('MatMul'),
  opts: { reference: ([a, b]) => R.matmul(a, b), ...opts },
});

function gemmCase(tA: number, tB: number, alpha: number, beta: number, cShape: number[] | null): OpCase {
  const [M, K, N] = [3, 4, 5];
  const shapes = [tA ? [K, M] : [M, K], tB ? [N, K] : [K, N], ...(cShape ? [cShape] : [])];
  return {
    name: `Gemm transA=${tA} transB=${tB} α=${alpha} β=${beta} C=${cShape ? `[${cShape}]` : 'none'}`,
    op: 'Gemm',
    shapes,
    build: (g, xs: Value[]) => g.op('Gemm', xs, { transA: tA, transB: tB, alpha: f(alpha), beta: f(beta) })[0],
    opts: { reference: ([a, b, c]) => R.gemm(a, b, c ?? null, alpha, beta, tA, tB) },
  };
}

export const linalgCases: OpCase[] = [
  mm([[3, 4], [4, 5]]),
  mm([[2, 1, 3, 4], [3, 4, 5]]),
  mm([[4], [4, 5]]),
  mm([[2, 3, 4], [4]]),
  mm([[4], [4]]),
  { ...mm([[3, 3, 4], [4, 5]], { declare: [['B', 3, 4]] }), name: 'MatMul symbolic batch [B,3,4]@[4,5]' },
  mm([[2, 2, 3, 4], [4, 5]]),
  gemmCase(0, 0, 1, 1, [5]),
  gemmCase(1, 0, 0.5, 2, [3, 5]),
  gemmCase(0, 1, 1, 1, [3, 1]),
  gemmCase(1, 1, 1.5, 1, null),
  {
    // The rule reads w itself for (wᵀ)ᵀ, as a tied LM head's input gradient does.
    name: 'MatMul on a transposed operand x@wᵀ (tied head)',
    op: 'MatMul',
    shapes: [[3, 4], [5, 4]],
    build: (g, [x, w]) => g.op('MatMul', [x, g.op('Transpose', [w], { perm: [1, 0] })[0]])[0],
    opts: { reference: ([a, b]) => R.gemm(a, b, null, 1, 0, 0, 1) },
  },
  {
    name: 'MLP block: Relu(x@W + b) with initializer weight',
    op: 'MatMul',
    shapes: [[2, 4], [3]],
    build: (g, [x, b]) => {
      const w = g.initializer('w', tensor('float64', [4, 3], [0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, 0.8, -0.9, 1.0, 0.2, -0.3]));
      return g.op('Relu', [g.op('Add', [g.op('MatMul', [x, w])[0], b])[0]])[0];
    },
  },
];
