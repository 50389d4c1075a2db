// Reductions in the opset-18 form (axes as an optional second input). Gradients put dY back on the
// reduced axes (Unsqueeze when keepdims=0) and Expand it to x's shape.

import type { Dim, Value } from '../../graph/ir';
import { registerOp, type GradContext, type ValueInfo } from '../../graph/registry';
import { attrInt, constInts, i64, need, normAxis, scalarLike, shapeVec } from './common';

interface ReduceSpec {
  axes: number[];
  keepdims: boolean;
  /** Empty axes with noop_with_empty_axes=1: the op is an identity. */
  noop: boolean;
}

function reduceSpec(x: Value, axesInput: Value | null, attrs: GradContext['attrs'], op: string): ReduceSpec | null {
  const g = x.graph;
  if (!x.shape) return null;
  const r = x.shape.length;
  const keepdims = attrInt(attrs, 'keepdims', 1) === 1;
  const given = axesInput ? constInts(g, axesInput) : [];
  if (!given) return null;
  if (given.length === 0) {
    if (attrInt(attrs, 'noop_with_empty_axes', 0) === 1) return { axes: [], keepdims, noop: true };
    return { axes: [...Array(r).keys()], keepdims, noop: false };
  }
  return { axes: [...new Set(given.map((a) => normAxis(a, r, op)))].sort((a, b) => a - b), keepdims, noop: false };
}

function reduceInfer(op: string, dtype?: 'int64') {
  return (inputs: (Value | null)[], attrs: GradContext['attrs']): ValueInfo[] => {
    const x = need(inputs[0], op, 'data');
    const spec = reduceSpec(x, inputs[1] ?? null, attrs, op);
    if (!spec) return [{ dtype: dtype ?? x.dtype, shape: null }];
    if (spec.noop) return [{ dtype: dtype ?? x.dtype, shape: [...x.shape!] }];
    const out: Dim[] = [];
    x.shape!.forEach((d, i) => {
      if (!spec.axes.includes(i)) out.push(d);
      else if (spec.keepdims) out.push(1);
    });
    return [{ dtype: dtype ?? x.dtype, shape: out }];
  };
}

function specOf(ctx: GradContext): ReduceSpec {
  const x = need(ctx.inputs[0], ctx.node.opType, 'data');
  const spec = reduceSpec(x, ctx.inputs[1] ?? null, ctx.attrs, ctx.node.opType);
  if (!spec) throw new Error(`${ctx.node.opType} ${ctx.node.name}: gradient needs a known rank and constant axes`);
  return spec;
}

/** dY with the reduced axes restored as size-1 dims (keepdims form). */
function keptGrad(ctx: GradContext, spec: ReduceSpec, v: Value): Value {
  if (spec.keepdims || spec.noop || spec.axes.length === 0) return v;
  return ctx.graph.op('Unsqueeze', [v, i64(ctx.graph, spec.axes)])[0];
}

function expandTo(v: Value, x: Value): Value {
  return v.graph.op('Expand', [v, shapeVec(x)])[0];
}

/** Number of elements reduced, as a scalar of x's dtype (static when possible). */
function reducedCount(x: Value, spec: ReduceSpec): Value {
  const g = x.graph;
  const dims = spec.axes.map((a) => x.shape![a]);
  if (dims.every((d) => typeof d === 'number')) return scalarLike(x, (dims as number[]).reduce((a, b) => a * b, 1));
  const sizes = g.op('Gather', [g.op('Shape', [x])[0], i64(g, spec.axes)], { axis: 0 })[0];
  const n = g.op('ReduceProd', [sizes, i64(g, [0])], { keepdims: 0 })[0];
  return g.op('Cast', [n], { to: x.dtype === 'float64' ? 11 : 1 })[0];
}

registerOp('ReduceSum', {
  infer: reduceInfer('ReduceSum'),
  grad: (ctx) => {
    const x = need(ctx.inputs[0], 'ReduceSum', 'data');
    const spec = specOf(ctx);
    const dy = need(ctx.gradOutputs[0], 'ReduceSum', 'output gradient');
    return [expandTo(keptGrad(ctx, spec, dy), x), null];
  },
});

registerOp('ReduceMean', {
  infer: reduceInfer('ReduceMean'),
  grad: (ctx) => {
    const g = ctx.graph;
    const x = need(ctx.inputs[0], 'ReduceMean', 'data');
    const spec = specOf(ctx);
    const dy = need(ctx.gradOutputs[0], 'ReduceMean', 'output gradient');
    const scaled = spec.noop ? dy : g.op('Div', [dy, reducedCount(x, spec)])[0];
    return [expandTo(keptGrad(ctx, spec, scaled), x), null];
  },
});

// Max/Min: dY goes to the positions holding the extremum, shared equally between ties (as
// PyTorch's amax does), so the gradient sums to dY.
function extremumGrad(ctx: GradContext): (Value | null)[] {
  const g = ctx.graph;
  const x = need(ctx.inputs[0], ctx.node.opType, 'data');
  const spec = specOf(ctx);
  const dy = need(ctx.gradOutputs[0], ctx.node.opType, 'output gradient');
  const y = keptGrad(ctx, spec, ctx.outputs[0]);
  const hit = g.op('Cast', [g.op('Equal', [x, y])[0]], { to: x.dtype === 'float64' ? 11 : 1 })[0];
  const axes = i64(g, spec.axes.length ? spec.axes : [...Array(x.shape!.length).keys()]);
  const ties = g.op('ReduceSum', [hit, axes], { keepdims: 1 })[0];
  const share = g.op('Div', [keptGrad(ctx, spec, dy), ties])[0];
  return [g.op('Mul', [hit, share])[0], null];
}

registerOp('ReduceMax', { infer: reduceInfer('ReduceMax'), grad: extremumGrad });
registerOp('ReduceMin', { infer: reduceInfer('ReduceMin'), grad: extremumGrad });

registerOp('ReduceSumSquare', {
  infer: reduceInfer('ReduceSumSquare'),
  grad: (ctx) => {
    const g = ctx.graph;
    const x = need(ctx.inputs[0], 'ReduceSumSquare', 'data');
    const dy = need(ctx.gradOutputs[0], 'ReduceSumSquare', 'output gradient');
    const d = expandTo(keptGrad(ctx, specOf(ctx), dy), x);
    return [g.op('Mul', [d, g.op('Mul', [x, scalarLike(x, 2)])[0]])[0], null];
  },
});

registerOp('ReduceProd', { infer: reduceInfer('ReduceProd') });

for (const name of ['ArgMax', 'ArgMin']) {
  registerOp(name, {
    infer: (inputs, attrs) => {
      const x = need(inputs[0], name, 'data');
      if (!x.shape) return [{ dtype: 'int64', shape: null }];
      const axis = normAxis(attrInt(attrs, 'axis', 0), x.shape.length, name);
      const keep = attrInt(attrs, 'keepdims', 1) === 1;
      const out = x.shape.flatMap((d, i) => (i !== axis ? [d] : keep ? [1] : []));
      return [{ dtype: 'int64', shape: out }];
    },
    grad: () => [null],
  });
}
