// Gradcheck cases, part 2: shape, indexing, reductions, normalization, loss, misc.

import { f, type Graph, type Value } from '../graph/ir';
import type { OpCase } from './cases-core';
import { seededDropout, seededDropoutMask } from './dropout';
import type { Build } from './gradcheck';
import * as R from './reference';

const one = (op: string, attrs = {}): Build => (g, xs) => g.op(op, xs, attrs)[0];
const v = (g: Graph, xs: number[]) => g.vector(xs);

export const shapeCases: OpCase[] = [
  { name: 'Transpose perm [2,0,1]', op: 'Transpose', shapes: [[2, 3, 4]], build: one('Transpose', { perm: [2, 0, 1] }), opts: { reference: ([x]) => R.transpose(x, [2, 0, 1]) } },
  { name: 'Reshape [0,-1]', op: 'Reshape', shapes: [[2, 3, 4]], build: (g, [x]) => g.op('Reshape', [x, v(g, [0, -1])])[0], opts: { reference: ([x]) => R.reshape(x, [2, 12]) } },
  {
    name: 'Reshape symbolic batch via Shape',
    op: 'Reshape',
    shapes: [[2, 3, 4]],
    build: (g, [x]) => {
      const bt = g.op('Shape', [x], { end: 2 })[0];
      return g.op('Reshape', [x, g.op('Concat', [bt, v(g, [2, 2])], { axis: 0 })[0]])[0];
    },
    opts: { declare: [['B', 'T', 4]], reference: ([x]) => R.reshape(x, [2, 3, 2, 2]) },
  },
  { name: 'Flatten axis 1', op: 'Flatten', shapes: [[2, 3, 4]], build: one('Flatten', { axis: 1 }), opts: { reference: ([x]) => R.reshape(x, [2, 12]) } },
  { name: 'Squeeze', op: 'Squeeze', shapes: [[2, 1, 4]], build: (g, [x]) => g.op('Squeeze', [x, v(g, [1])])[0], opts: { reference: ([x]) => R.reshape(x, [2, 4]) } },
  { name: 'Unsqueeze axis -1', op: 'Unsqueeze', shapes: [[2, 4]], build: (g, [x]) => g.op('Unsqueeze', [x, v(g, [-1])])[0], opts: { reference: ([x]) => R.reshape(x, [2, 4, 1]) } },
  { name: 'Concat 3 inputs axis -1', op: 'Concat', shapes: [[2, 3], [2, 1], [2, 2]], build: one('Concat', { axis: -1 }), opts: { reference: (xs) => R.concat(xs, 1) } },
  {
    name: 'Concat symbolic axis',
    op: 'Concat',
    shapes: [[3, 2], [2, 2]],
    build: one('Concat', { axis: 0 }),
    opts: { declare: [['T', 2], ['S', 2]], reference: (xs) => R.concat(xs, 0) },
  },
  {
    name: 'Split sizes [1,2,3] (all outputs)',
    op: 'Split',
    shapes: [[2, 6]],
    build: (g, [x]) => g.op('Split', [x, v(g, [1, 2, 3])], { axis: 1 }, { outputs: 3 }),
    opts: { reference: ([x]) => R.slice(x, [0], [1], [1], [1]) },
  },
  {
    name: 'Split num_outputs=2, second unused',
    op: 'Split',
    shapes: [[4, 3]],
    build: (g, [x]) => g.op('Split', [x], { axis: 0, num_outputs: 2 }, { outputs: 2 })[0],
    opts: { reference: ([x]) => R.slice(x, [0], [2], [0], [1]) },
  },
  {
    name: 'Slice unit step, negative end',
    op: 'Slice',
    shapes: [[4, 5]],
    build: (g, [x]) => g.op('Slice', [x, v(g, [1, 1]), v(g, [3, -1]), v(g, [0, 1])])[0],
    opts: { reference: ([x]) => R.slice(x, [1, 1], [3, -1], [0, 1], [1, 1]) },
  },
  {
    name: 'Slice reversed stride -2',
    op: 'Slice',
    shapes: [[3, 6]],
    build: (g, [x]) => g.op('Slice', [x, v(g, [-1]), v(g, [-100]), v(g, [1]), v(g, [-2])])[0],
    opts: { reference: ([x]) => R.slice(x, [-1], [-100], [1], [-2]) },
  },
  {
    name: 'Slice symbolic batch',
    op: 'Slice',
    shapes: [[3, 5]],
    build: (g, [x]) => g.op('Slice', [x, v(g, [2]), v(g, [5]), v(g, [-1])])[0],
    opts: { declare: [['B', 5]], reference: ([x]) => R.slice(x, [2], [5], [1], [1]) },
  },
  {
    name: 'Slice symbolic axis x[:, 1:-1]',
    op: 'Slice',
    shapes: [[2, 6, 3]],
    build: (g, [x]) => g.op('Slice', [x, v(g, [1]), v(g, [-1]), v(g, [1])])[0],
    opts: { declare: [['B', 'T', 3]], reference: ([x]) => R.slice(x, [1], [-1], [1], [1]) },
  },
  {
    name: 'Gather negative index',
    op: 'Gather',
    shapes: [[5, 3], [3]],
    build: one('Gather', { axis: 0 }),
    opts: { init: [undefined, { intValues: [-1, 0, -5] }], reference: ([d, i]) => R.gather(d, i, 0) },
  },
  {
    name: 'Pad constant',
    op: 'Pad',
    shapes: [[2, 3]],
    build: (g, [x]) => g.op('Pad', [x, v(g, [1, 0, 0, 2])])[0],
  },
  { name: 'Expand [3,1]→[2,3,4]', op: 'Expand', shapes: [[3, 1]], build: (g, [x]) => g.op('Expand', [x, v(g, [2, 3, 4])])[0], opts: { reference: ([x]) => R.expand(x, [2, 3, 4]) } },
];

const ints = (lo: number, hi: number) => ({ ints: [lo, hi] as [number, number] });

export const indexingCases: OpCase[] = [
  {
    name: 'Gather axis 0 (embedding, repeated ids)',
    op: 'Gather',
    shapes: [[6, 4], [2, 5]],
    build: one('Gather', { axis: 0 }),
    opts: { init: [undefined, { intValues: [0, 1, 1, 5, 2, 5, 5, 0, 3, 1] }], reference: ([d, i]) => R.gather(d, i, 0) },
  },
  {
    name: 'Gather axis 1, 2-D indices',
    op: 'Gather',
    shapes: [[2, 5, 3], [2, 2]],
    build: one('Gather', { axis: 1 }),
    opts: { init: [undefined, ints(0, 5)], reference: ([d, i]) => R.gather(d, i, 1) },
  },
  { name: 'Gather scalar index', op: 'Gather', shapes: [[4, 3], []], build: one('Gather', { axis: 0 }), opts: { init: [undefined, { intValues: [2] }], reference: ([d, i]) => R.gather(d, i, 0) } },
  {
    name: 'Gather symbolic ids [B,T]',
    op: 'Gather',
    shapes: [[7, 3], [2, 4]],
    build: one('Gather', { axis: 0 }),
    opts: { init: [undefined, ints(0, 7)], declare: [undefined, ['B', 'T']], reference: ([d, i]) => R.gather(d, i, 0) },
  },
  { name: 'GatherElements axis 1', op: 'GatherElements', shapes: [[3, 4], [3, 2]], build: one('GatherElements', { axis: 1 }), opts: { init: [undefined, { intValues: [0, 3, 1, 1, 2, 0] }] } },
];

const red = (op: string, kind: R.ReduceKind, shape: number[], axes: number[] | null, keepdims: boolean, declare?: (string | number)[]): OpCase => ({
  name: `${op} axes=${axes ? `[${axes}]` : 'all'} keepdims=${keepdims ? 1 : 0}${declare ? ` declared [${declare}]` : ''}`,
  op,
  shapes: [shape],
  build: (g, [x]) => g.op(op, axes ? [x, g.vector(axes)] : [x], { keepdims: keepdims ? 1 : 0 })[0],
  opts: { reference: ([x]) => R.reduce(x, axes, keepdims, kind), declare: declare ? [declare] : undefined },
});

export const reduceCases: OpCase[] = [
  red('ReduceSum', 'sum', [2, 3, 4], [1], false),
  red('ReduceSum', 'sum', [2, 3], null, true),
  red('ReduceMean', 'mean', [2, 3, 4], [-1], true),
  red('ReduceMean', 'mean', [3, 4, 2], [0, 2], false, ['B', 4, 'T']),
  red('ReduceMax', 'max', [3, 5], [1], false),
  red('ReduceMin', 'min', [3, 5], [0], true),
  red('ReduceSumSquare', 'sumsquare', [3, 4], [1], true),
];

export const normCases: OpCase[] = [
  {
    name: 'LayerNormalization axis -1 with bias',
    op: 'LayerNormalization',
    shapes: [[2, 3, 5], [5], [5]],
    build: (g, xs) => g.op('LayerNormalization', xs, { axis: -1, epsilon: f(1e-5) }, { outputs: 1 })[0],
    opts: { reference: ([x, s, b]) => R.layerNorm(x, s, b, -1, 1e-5) },
  },
  {
    name: 'LayerNormalization axis 1 over (3,4), no bias',
    op: 'LayerNormalization',
    shapes: [[2, 3, 4], [3, 4]],
    build: (g, xs) => g.op('LayerNormalization', xs, { axis: 1, epsilon: f(1e-5) }, { outputs: 1 })[0],
    opts: { reference: ([x, s]) => R.layerNorm(x, s, null, 1, 1e-5) },
  },
  {
    name: 'LayerNormalization reusing forward Mean/InvStdDev (float32)',
    op: 'LayerNormalization',
    shapes: [[4, 6], [6], [6]],
    build: (g, xs) => g.op('LayerNormalization', xs, { axis: -1, epsilon: f(1e-5) }, { outputs: 3 })[0],
    opts: { dtype: 'float32', reference: ([x, s, b]) => R.layerNorm(x, s, b, -1, 1e-5) },
  },
  {
    name: 'RMSNormalization axis -1',
    op: 'RMSNormalization',
    shapes: [[2, 3, 6], [6]],
    build: (g, xs) => g.op('RMSNormalization', xs, { axis: -1, epsilon: f(1e-5) })[0],
    opts: { reference: ([x, s]) => R.rmsNorm(x, s, -1, 1e-5) },
  },
];

const sce = (name: string, shapes: number[][], labels: number[], attrs: Record<string, unknown>, outputs = 1): OpCase => ({
  name,
  op: 'SoftmaxCrossEntropyLoss',
  shapes,
  build: (g: Graph, xs: Value[]) => {
    const outs = g.op('SoftmaxCrossEntropyLoss', xs, attrs as Record<string, string | number>, { outputs });
    return outputs === 1 ? outs[0] : outs;
  },
  opts: {
    init: [undefined, { intValues: labels }, { uniform: [0.5, 2] }],
    wrt: [0],
    reference: ([s, l, w]) => R.softmaxCrossEntropy(s, l, (attrs.reduction as 'mean') ?? 'mean', attrs.ignore_index as number | undefined, w),
  },
});

export const lossCases: OpCase[] = [
  sce('SoftmaxCrossEntropyLoss mean, ignore_index', [[5, 4], [5]], [1, -100, 3, 0, 3], { ignore_index: -100 }),
  sce('SoftmaxCrossEntropyLoss sum', [[4, 3], [4]], [2, 0, 1, 1], { reduction: 'sum' }),
  sce('SoftmaxCrossEntropyLoss none (N,C,d)', [[2, 4, 3], [2, 3]], [0, 3, 1, 2, 2, 0], { reduction: 'none' }),
  sce('SoftmaxCrossEntropyLoss weights + ignore_index', [[4, 3], [4], [3]], [2, 1, -1, 0], { ignore_index: -1 }),
  sce('SoftmaxCrossEntropyLoss log_prob output too', [[3, 5], [3]], [4, 0, 2], {}, 2),
];

export const miscCases: OpCase[] = [
  { name: 'Trilu lower k=0', op: 'Trilu', shapes: [[2, 4, 4]], build: one('Trilu', { upper: 0 }), opts: { reference: ([x]) => R.trilu(x, 0, false) } },
  {
    name: 'Trilu upper k=1',
    op: 'Trilu',
    shapes: [[3, 5]],
    build: (g, [x]) => g.op('Trilu', [x, g.scalar(1, 'int64')], { upper: 1 })[0],
    opts: { reference: ([x]) => R.trilu(x, 1, true) },
  },
  {
    name: 'seeded Dropout (mask = hash(seed, step))',
    op: 'Dropout',
    shapes: [[4, 8]],
    build: (g, [x]) => seededDropout(x, 0.25, g.scalar(42, 'int64'), g.scalar(7, 'int64'), 3),
    opts: {
      reference: ([x]) => {
        const mask = seededDropoutMask(32, 0.25, 42, 7, 3);
        return { dims: x.dims, data: x.data.map((v, i) => (v * mask[i]) / 0.75) };
      },
    },
  },
  {
    name: 'ONNX Dropout, inference mode',
    op: 'Dropout',
    shapes: [[3, 4]],
    build: one('Dropout'),
    opts: { reference: ([x]) => x },
  },
  {
    name: 'ConstantOfShape + Range + Equal feed Where (no-grad ops on the side)',
    op: 'Range',
    shapes: [[4, 4]],
    build: (g, [x]) => {
      const n = g.op('Shape', [x], { start: 1 })[0];
      const r = g.op('Range', [g.scalar(0, 'int64'), g.op('Squeeze', [n])[0], g.scalar(1, 'int64')])[0];
      const even = g.op('Equal', [g.op('Mod', [r, g.scalar(2, 'int64')])[0], g.scalar(0, 'int64')])[0];
      const zeros = g.op('ConstantOfShape', [g.op('Shape', [x])[0]], { value: { dtype: 'float64', dims: [1], data: Float64Array.of(0) } })[0];
      return g.op('Where', [even, x, zeros])[0];
    },
    opts: { reference: ([x]) => ({ dims: x.dims, data: x.data.map((val, i) => (i % 2 === 0 ? val : 0)) }) },
  },
];
