// Thin typed wrappers over `graph.op` for the ops models, autodiff rules and optimizers use most.
// Each returns the output Value(s); shapes come from the registry's rules.

import { f, type Value } from './ir';

const g1 = (x: Value) => x.graph;

export const add = (a: Value, b: Value) => g1(a).op('Add', [a, b])[0];
export const sub = (a: Value, b: Value) => g1(a).op('Sub', [a, b])[0];
export const mul = (a: Value, b: Value) => g1(a).op('Mul', [a, b])[0];
export const div = (a: Value, b: Value) => g1(a).op('Div', [a, b])[0];
export const pow = (a: Value, b: Value) => g1(a).op('Pow', [a, b])[0];
export const neg = (x: Value) => g1(x).op('Neg', [x])[0];
export const sqrt = (x: Value) => g1(x).op('Sqrt', [x])[0];
export const reciprocal = (x: Value) => g1(x).op('Reciprocal', [x])[0];
export const exp = (x: Value) => g1(x).op('Exp', [x])[0];
export const log = (x: Value) => g1(x).op('Log', [x])[0];
export const tanh = (x: Value) => g1(x).op('Tanh', [x])[0];
export const sigmoid = (x: Value) => g1(x).op('Sigmoid', [x])[0];
export const relu = (x: Value) => g1(x).op('Relu', [x])[0];
export const erf = (x: Value) => g1(x).op('Erf', [x])[0];
export const sin = (x: Value) => g1(x).op('Sin', [x])[0];
export const cos = (x: Value) => g1(x).op('Cos', [x])[0];
export const abs = (x: Value) => g1(x).op('Abs', [x])[0];
export const identity = (x: Value) => g1(x).op('Identity', [x])[0];
export const gelu = (x: Value, approximate: 'none' | 'tanh' = 'none') => g1(x).op('Gelu', [x], { approximate })[0];
export const softmax = (x: Value, axis = -1) => g1(x).op('Softmax', [x], { axis })[0];
export const logSoftmax = (x: Value, axis = -1) => g1(x).op('LogSoftmax', [x], { axis })[0];
export const matmul = (a: Value, b: Value) => g1(a).op('MatMul', [a, b])[0];
export const cast = (x: Value, to: number) => g1(x).op('Cast', [x], { to })[0];

export const transpose = (x: Value, perm: number[]) => g1(x).op('Transpose', [x], { perm })[0];
export const reshape = (x: Value, shape: number[]) => g1(x).op('Reshape', [x, g1(x).vector(shape)])[0];
export const unsqueeze = (x: Value, axes: number[]) => g1(x).op('Unsqueeze', [x, g1(x).vector(axes)])[0];
export const squeeze = (x: Value, axes: number[]) => g1(x).op('Squeeze', [x, g1(x).vector(axes)])[0];
export const concat = (xs: Value[], axis: number) => g1(xs[0]).op('Concat', xs, { axis })[0];
export const expand = (x: Value, shape: number[]) => g1(x).op('Expand', [x, g1(x).vector(shape)])[0];
export const where = (c: Value, a: Value, b: Value) => g1(a).op('Where', [c, a, b])[0];
export const gather = (data: Value, indices: Value, axis = 0) => g1(data).op('Gather', [data, indices], { axis })[0];

export const reduceSum = (x: Value, axes: number[], keepdims = true) =>
  g1(x).op('ReduceSum', [x, g1(x).vector(axes)], { keepdims: keepdims ? 1 : 0 })[0];
export const reduceMean = (x: Value, axes: number[], keepdims = true) =>
  g1(x).op('ReduceMean', [x, g1(x).vector(axes)], { keepdims: keepdims ? 1 : 0 })[0];

export const layerNorm = (x: Value, scale: Value, bias: Value | null, epsilon = 1e-5, axis = -1) =>
  g1(x).op('LayerNormalization', [x, scale, bias], { axis, epsilon: f(epsilon) }, { outputs: 1 })[0];

/** Scalar float32 constant in x's graph. */
export const scalar = (x: Value, v: number) => g1(x).scalar(v, 'float32');

export const gemm = (a: Value, b: Value, c: Value | null, opts: { alpha?: number; beta?: number; transA?: boolean; transB?: boolean } = {}) =>
  g1(a).op('Gemm', c ? [a, b, c] : [a, b], {
    alpha: f(opts.alpha ?? 1),
    beta: f(opts.beta ?? 1),
    transA: opts.transA ? 1 : 0,
    transB: opts.transB ? 1 : 0,
  })[0];
export const reduceMax = (x: Value, axes: number[], keepdims = true) =>
  g1(x).op('ReduceMax', [x, g1(x).vector(axes)], { keepdims: keepdims ? 1 : 0 })[0];
/** RMSNormalization (opset 23; ORT 1.30's CPU provider runs it). */
export const rmsNorm = (x: Value, scale: Value, epsilon = 1e-5, axis = -1) =>
  g1(x).op('RMSNormalization', [x, scale], { axis, epsilon: f(epsilon) })[0];
export const split = (x: Value, sizes: number[], axis: number) =>
  g1(x).op('Split', [x, g1(x).vector(sizes)], { axis }, { outputs: sizes.length });
export const slice = (x: Value, starts: number[], ends: number[], axes: number[], steps?: number[]) =>
  g1(x).op('Slice', [x, g1(x).vector(starts), g1(x).vector(ends), g1(x).vector(axes), ...(steps ? [g1(x).vector(steps)] : [])])[0];
/** Mean softmax cross-entropy over logits (N, C, ...) and int64 labels (N, ...), skipping ignoreIndex. */
export const softmaxCrossEntropy = (logits: Value, labels: Value, ignoreIndex?: number, reduction: 'mean' | 'sum' | 'none' = 'mean') =>
  g1(logits).op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction, ...(ignoreIndex === undefined ? {} : { ignore_index: ignoreIndex }) }, { outputs: 1 })[0];
