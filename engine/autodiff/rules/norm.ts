// LayerNormalization (opset 17) and RMSNormalization (opset 23; ORT 1.30's CPU provider runs it).
// No *Grad contrib ops exist in the inference build, so the backward recomputes the statistics
// from x with primitives and applies the closed forms:
//   LN:  dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ·x̂)),  ĝ = dy·scale, x̂ = (x - μ)·rstd
//   RMS: dx = rrms · (ĝ - x̂ · mean(ĝ·x̂)),            x̂ = x·rrms

import type { Dim, Value } from '../../graph/ir';
import { registerOp, type GradContext, type ValueInfo } from '../../graph/registry';
import { sumToShape } from './broadcast';
import { attrFloat, attrInt, i64, need, normAxis, scalarLike } from './common';

function normAxes(x: Value, attrs: GradContext['attrs'], op: string): number[] {
  const r = x.shape!.length;
  const axis = normAxis(attrInt(attrs, 'axis', -1), r, op);
  return [...Array(r - axis).keys()].map((i) => axis + i);
}

function statsInfo(x: Value, attrs: GradContext['attrs'], op: string): ValueInfo {
  if (!x.shape) return { dtype: 'float32', shape: null };
  const axes = normAxes(x, attrs, op);
  const shape: Dim[] = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return { dtype: attrInt(attrs, 'stash_type', 1) === 1 ? 'float32' : x.dtype, shape };
}

function ops(ctx: GradContext) {
  const g = ctx.graph;
  const o = (t: string, ...xs: Value[]) => g.op(t, xs)[0];
  return {
    add: (a: Value, b: Value) => o('Add', a, b),
    sub: (a: Value, b: Value) => o('Sub', a, b),
    mul: (a: Value, b: Value) => o('Mul', a, b),
    mean: (a: Value, axes: number[]) => g.op('ReduceMean', [a, i64(g, axes)], { keepdims: 1 })[0],
    rsqrt: (a: Value) => o('Reciprocal', o('Sqrt', a)),
  };
}

registerOp('LayerNormalization', {
  infer: (inputs, attrs) => {
    const x = need(inputs[0], 'LayerNormalization', 'X');
    const stats = statsInfo(x, attrs, 'LayerNormalization');
    return [{ dtype: x.dtype, shape: x.shape ? [...x.shape] : null }, stats, stats];
  },
  grad: (ctx) => {
    if (ctx.gradOutputs.slice(1).some((d) => d)) throw new Error(`LayerNormalization ${ctx.node.name}: gradients through Mean/InvStdDev outputs are not supported`);
    const e = ops(ctx);
    const [x, scale, bias] = [need(ctx.inputs[0], 'LayerNormalization', 'X'), need(ctx.inputs[1], 'LayerNormalization', 'Scale'), ctx.inputs[2]];
    const dy = need(ctx.gradOutputs[0], 'LayerNormalization', 'output gradient');
    const axes = normAxes(x, ctx.attrs, 'LayerNormalization');
    const eps = () => scalarLike(x, attrFloat(ctx.attrs, 'epsilon', 1e-5));
    // Reuse the forward's Mean/InvStdDev when the node produced them in x's dtype; else recompute.
    const [, fMean, fRstd] = ctx.outputs;
    const stashed = fMean && fRstd && fMean.dtype === x.dtype && fRstd.dtype === x.dtype;
    const xc = e.sub(x, stashed ? fMean : e.mean(x, axes));
    const rstd = stashed ? fRstd : e.rsqrt(e.add(e.mean(e.mul(xc, xc), axes), eps()));
    const xhat = e.mul(xc, rstd);
    let dx: Value | null = null;
    if (ctx.needsGrad[0]) {
      const gh = e.mul(dy, scale);
      const inner = e.sub(e.sub(gh, e.mean(gh, axes)), e.mul(xhat, e.mean(e.mul(gh, xhat), axes)));
      dx = e.mul(rstd, inner);
    }
    const dscale = ctx.needsGrad[1] ? sumToShape(e.mul(dy, xhat), scale) : null;
    const dbias = bias && ctx.needsGrad[2] ? sumToShape(dy, bias) : null;
    return [dx, dscale, dbias];
  },
});

registerOp('RMSNormalization', {
  infer: (inputs) => {
    const x = need(inputs[0], 'RMSNormalization', 'X');
    return [{ dtype: x.dtype, shape: x.shape ? [...x.shape] : null }];
  },
  grad: (ctx) => {
    const e = ops(ctx);
    const [x, scale] = [need(ctx.inputs[0], 'RMSNormalization', 'X'), need(ctx.inputs[1], 'RMSNormalization', 'scale')];
    const dy = need(ctx.gradOutputs[0], 'RMSNormalization', 'output gradient');
    const axes = normAxes(x, ctx.attrs, 'RMSNormalization');
    const eps = scalarLike(x, attrFloat(ctx.attrs, 'epsilon', 1e-5));
    const rrms = e.rsqrt(e.add(e.mean(e.mul(x, x), axes), eps));
    const xhat = e.mul(x, rrms);
    let dx: Value | null = null;
    if (ctx.needsGrad[0]) {
      const gh = e.mul(dy, scale);
      dx = e.mul(rrms, e.sub(gh, e.mul(xhat, e.mean(e.mul(gh, xhat), axes))));
    }
    const dscale = ctx.needsGrad[1] ? sumToShape(e.mul(dy, xhat), scale) : null;
    return [dx, dscale];
  },
});
