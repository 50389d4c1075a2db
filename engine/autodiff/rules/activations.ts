// Activations and softmax. Gradients reuse the forward output where that is cheaper (tanh,
// sigmoid, softmax) and recompute from x otherwise (gelu, erf).

import type { Value } from '../../graph/ir';
import { registerOp, type GradContext } from '../../graph/registry';
import { attrInt, attrString, i64, need, normAxis, sameAsInput, scalarLike } from './common';

const dyOf = (ctx: GradContext) => need(ctx.gradOutputs[0], ctx.node.opType, 'output gradient');
const xOf = (ctx: GradContext) => need(ctx.inputs[0], ctx.node.opType, 'input');

/** A small expression builder so the derivative formulas read like math. */
function ex(ctx: GradContext) {
  const g = ctx.graph;
  const o = (t: string, ...xs: Value[]) => g.op(t, xs)[0];
  const like = ctx.outputs[0];
  const c = (v: number) => scalarLike(like, v);
  return {
    add: (a: Value, b: Value) => o('Add', a, b),
    sub: (a: Value, b: Value) => o('Sub', a, b),
    mul: (a: Value, b: Value) => o('Mul', a, b),
    c,
    one: () => c(1),
    un: (t: string, a: Value) => o(t, a),
  };
}

registerOp('Tanh', {
  infer: sameAsInput,
  grad: (ctx) => {
    const e = ex(ctx);
    const y = ctx.outputs[0];
    return [e.mul(dyOf(ctx), e.sub(e.one(), e.mul(y, y)))]; // 1 - tanh²
  },
});

registerOp('Sigmoid', {
  infer: sameAsInput,
  grad: (ctx) => {
    const e = ex(ctx);
    const y = ctx.outputs[0];
    return [e.mul(dyOf(ctx), e.mul(y, e.sub(e.one(), y)))]; // σ(1 - σ)
  },
});

registerOp('Relu', {
  infer: sameAsInput,
  grad: (ctx) => {
    const g = ctx.graph;
    const x = xOf(ctx);
    const pos = g.op('Greater', [x, scalarLike(x, 0)])[0];
    return [g.op('Where', [pos, dyOf(ctx), scalarLike(x, 0)])[0]];
  },
});

registerOp('LeakyRelu', {
  infer: sameAsInput,
  grad: (ctx) => {
    const g = ctx.graph;
    const x = xOf(ctx);
    const alpha = ctx.attrs.alpha?.type === 'float' ? ctx.attrs.alpha.value : 0.01;
    const pos = g.op('Greater', [x, scalarLike(x, 0)])[0];
    const dy = dyOf(ctx);
    return [g.op('Where', [pos, dy, g.op('Mul', [dy, scalarLike(x, alpha)])[0]])[0]];
  },
});

registerOp('Erf', {
  infer: sameAsInput,
  grad: (ctx) => {
    const e = ex(ctx);
    const x = xOf(ctx);
    // d erf(x) = 2/√π · exp(-x²)
    const gauss = e.un('Exp', e.un('Neg', e.mul(x, x)));
    return [e.mul(dyOf(ctx), e.mul(gauss, e.c(2 / Math.sqrt(Math.PI))))];
  },
});

registerOp('Gelu', {
  infer: sameAsInput,
  grad: (ctx) => {
    const e = ex(ctx);
    const x = xOf(ctx);
    const approx = attrString(ctx.attrs, 'approximate', 'none');
    let d: Value;
    if (approx === 'tanh') {
      // y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³)
      // dy/dx = ½(1 + t) + ½x(1 - t²)·√(2/π)(1 + 3·0.044715x²)
      const k = Math.sqrt(2 / Math.PI);
      const x2 = e.mul(x, x);
      const u = e.mul(e.c(k), e.add(x, e.mul(e.c(0.044715), e.mul(x2, x))));
      const t = e.un('Tanh', u);
      const du = e.mul(e.c(k), e.add(e.one(), e.mul(e.c(3 * 0.044715), x2)));
      const left = e.mul(e.c(0.5), e.add(e.one(), t));
      const right = e.mul(e.mul(e.c(0.5), x), e.mul(e.sub(e.one(), e.mul(t, t)), du));
      d = e.add(left, right);
    } else if (approx === 'none') {
      // y = x·Φ(x): dy/dx = Φ(x) + x·φ(x)
      const cdf = e.mul(e.c(0.5), e.add(e.one(), e.un('Erf', e.mul(x, e.c(Math.SQRT1_2)))));
      const pdf = e.mul(e.c(1 / Math.sqrt(2 * Math.PI)), e.un('Exp', e.mul(e.c(-0.5), e.mul(x, x))));
      d = e.add(cdf, e.mul(x, pdf));
    } else throw new Error(`Gelu ${ctx.node.name}: unknown approximate "${approx}"`);
    return [e.mul(dyOf(ctx), d)];
  },
});

function softmaxAxis(ctx: GradContext): number {
  return normAxis(attrInt(ctx.attrs, 'axis', -1), xOf(ctx).shape!.length, ctx.node.opType);
}

registerOp('Softmax', {
  infer: sameAsInput,
  grad: (ctx) => {
    const g = ctx.graph;
    const y = ctx.outputs[0];
    const dy = dyOf(ctx);
    // dx = y · (dy - Σ dy·y)
    const dot = g.op('ReduceSum', [g.op('Mul', [dy, y])[0], i64(g, [softmaxAxis(ctx)])], { keepdims: 1 })[0];
    return [g.op('Mul', [y, g.op('Sub', [dy, dot])[0]])[0]];
  },
});

registerOp('LogSoftmax', {
  infer: sameAsInput,
  grad: (ctx) => {
    const g = ctx.graph;
    const dy = dyOf(ctx);
    // dx = dy - softmax · Σ dy
    const total = g.op('ReduceSum', [dy, i64(g, [softmaxAxis(ctx)])], { keepdims: 1 })[0];
    const sm = g.op('Exp', [ctx.outputs[0]])[0];
    return [g.op('Sub', [dy, g.op('Mul', [sm, total])[0]])[0]];
  },
});
