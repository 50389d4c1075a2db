// Elementwise arithmetic with numpy broadcasting. Every gradient is reduced back to its input's
// shape with sumToShape, so broadcasting a bias or a scalar just works.

import type { Value } from '../../graph/ir';
import { registerOp, type GradContext, type ValueInfo } from '../../graph/registry';
import { broadcastShapes, sumToShape } from './broadcast';
import { onnxDType, need, sameAsInput, scalarLike } from './common';

const op = (ctx: GradContext, type: string, inputs: (Value | null)[], attrs = {}) => ctx.graph.op(type, inputs, attrs)[0];

function broadcastInfer(opName: string, outDtype?: 'bool') {
  return (inputs: (Value | null)[]): ValueInfo[] => {
    const xs = inputs.map((x, i) => need(x, opName, `#${i}`));
    return [{ dtype: outDtype ?? xs[0].dtype, shape: broadcastShapes(xs.map((x) => x.shape), opName) }];
  };
}

const dy = (ctx: GradContext) => need(ctx.gradOutputs[0], ctx.node.opType, 'output gradient');
const inp = (ctx: GradContext, i: number) => need(ctx.inputs[i], ctx.node.opType, `#${i}`);
const noGrad = (ctx: GradContext) => ctx.inputs.map(() => null);

registerOp('Add', {
  infer: broadcastInfer('Add'),
  grad: (ctx) => [sumToShape(dy(ctx), inp(ctx, 0)), sumToShape(dy(ctx), inp(ctx, 1))],
});

registerOp('Sub', {
  infer: broadcastInfer('Sub'),
  grad: (ctx) => [
    ctx.needsGrad[0] ? sumToShape(dy(ctx), inp(ctx, 0)) : null,
    ctx.needsGrad[1] ? sumToShape(op(ctx, 'Neg', [dy(ctx)]), inp(ctx, 1)) : null,
  ],
});

registerOp('Mul', {
  infer: broadcastInfer('Mul'),
  grad: (ctx) => {
    const [a, b] = [inp(ctx, 0), inp(ctx, 1)];
    return [
      ctx.needsGrad[0] ? sumToShape(op(ctx, 'Mul', [dy(ctx), b]), a) : null,
      ctx.needsGrad[1] ? sumToShape(op(ctx, 'Mul', [dy(ctx), a]), b) : null,
    ];
  },
});

registerOp('Div', {
  infer: broadcastInfer('Div'),
  grad: (ctx) => {
    const [a, b, y] = [inp(ctx, 0), inp(ctx, 1), ctx.outputs[0]];
    const da = ctx.needsGrad[0] || ctx.needsGrad[1] ? op(ctx, 'Div', [dy(ctx), b]) : null;
    // d(a/b)/db = -a/b² = -(dy/b)·y
    const db = ctx.needsGrad[1] && da ? op(ctx, 'Neg', [op(ctx, 'Mul', [da, y])]) : null;
    return [ctx.needsGrad[0] && da ? sumToShape(da, a) : null, db ? sumToShape(db, b) : null];
  },
});

registerOp('Pow', {
  infer: (inputs) => {
    const [a, b] = [need(inputs[0], 'Pow', 'X'), need(inputs[1], 'Pow', 'Y')];
    return [{ dtype: a.dtype, shape: broadcastShapes([a.shape, b.shape], 'Pow') }];
  },
  grad: (ctx) => {
    const [a, b0, y] = [inp(ctx, 0), inp(ctx, 1), ctx.outputs[0]];
    // The exponent may be an integer tensor; the derivative needs it in a's float type.
    const b = b0.dtype === a.dtype ? b0 : op(ctx, 'Cast', [b0], { to: onnxDType[a.dtype] });
    let da: Value | null = null;
    if (ctx.needsGrad[0]) {
      // d(a^b)/da = b·a^(b-1)
      const pm1 = op(ctx, 'Pow', [a, op(ctx, 'Sub', [b, scalarLike(a, 1)])]);
      da = sumToShape(op(ctx, 'Mul', [dy(ctx), op(ctx, 'Mul', [b, pm1])]), a);
    }
    let db: Value | null = null;
    if (ctx.needsGrad[1]) db = sumToShape(op(ctx, 'Mul', [dy(ctx), op(ctx, 'Mul', [y, op(ctx, 'Log', [a])])]), b0);
    return [da, db];
  },
});

registerOp('Neg', { infer: sameAsInput, grad: (ctx) => [op(ctx, 'Neg', [dy(ctx)])] });

registerOp('Sqrt', {
  infer: sameAsInput,
  // d√x = 1/(2√x)
  grad: (ctx) => [op(ctx, 'Div', [op(ctx, 'Mul', [dy(ctx), scalarLike(ctx.outputs[0], 0.5)]), ctx.outputs[0]])],
});

registerOp('Reciprocal', {
  infer: sameAsInput,
  grad: (ctx) => {
    const y = ctx.outputs[0];
    return [op(ctx, 'Neg', [op(ctx, 'Mul', [dy(ctx), op(ctx, 'Mul', [y, y])])])];
  },
});

registerOp('Exp', { infer: sameAsInput, grad: (ctx) => [op(ctx, 'Mul', [dy(ctx), ctx.outputs[0]])] });
registerOp('Log', { infer: sameAsInput, grad: (ctx) => [op(ctx, 'Div', [dy(ctx), inp(ctx, 0)])] });
registerOp('Abs', { infer: sameAsInput, grad: (ctx) => [op(ctx, 'Mul', [dy(ctx), op(ctx, 'Sign', [inp(ctx, 0)])])] });
registerOp('Sign', { infer: sameAsInput, grad: noGrad });
registerOp('Sin', { infer: sameAsInput, grad: (ctx) => [op(ctx, 'Mul', [dy(ctx), op(ctx, 'Cos', [inp(ctx, 0)])])] });
registerOp('Cos', {
  infer: sameAsInput,
  grad: (ctx) => [op(ctx, 'Neg', [op(ctx, 'Mul', [dy(ctx), op(ctx, 'Sin', [inp(ctx, 0)])])])],
});
registerOp('Floor', { infer: sameAsInput, grad: noGrad });
registerOp('Ceil', { infer: sameAsInput, grad: noGrad });
registerOp('Round', { infer: sameAsInput, grad: noGrad });

// Variadic Max/Min: the gradient goes to every input equal to the result (ties all receive it).
function extremumGrad(ctx: GradContext): (Value | null)[] {
  const y = ctx.outputs[0];
  const zero = scalarLike(y, 0);
  return ctx.inputs.map((x, i) => {
    if (!x || !ctx.needsGrad[i]) return null;
    const hit = op(ctx, 'Equal', [x, y]);
    return sumToShape(op(ctx, 'Where', [hit, dy(ctx), zero]), x);
  });
}
registerOp('Max', { infer: broadcastInfer('Max'), grad: extremumGrad });
registerOp('Min', { infer: broadcastInfer('Min'), grad: extremumGrad });

registerOp('Sum', {
  infer: broadcastInfer('Sum'),
  grad: (ctx) => ctx.inputs.map((x, i) => (x && ctx.needsGrad[i] ? sumToShape(dy(ctx), x) : null)),
});

registerOp('Where', {
  infer: (inputs) => {
    const [c, a, b] = [need(inputs[0], 'Where', 'condition'), need(inputs[1], 'Where', 'X'), need(inputs[2], 'Where', 'Y')];
    return [{ dtype: a.dtype, shape: broadcastShapes([c.shape, a.shape, b.shape], 'Where') }];
  },
  grad: (ctx) => {
    const [c, a, b] = [inp(ctx, 0), inp(ctx, 1), inp(ctx, 2)];
    const zero = scalarLike(ctx.outputs[0], 0);
    return [
      null,
      ctx.needsGrad[1] ? sumToShape(op(ctx, 'Where', [c, dy(ctx), zero]), a) : null,
      ctx.needsGrad[2] ? sumToShape(op(ctx, 'Where', [c, zero, dy(ctx)]), b) : null,
    ];
  },
});

// Comparisons, logic and integer arithmetic: piecewise constant or integer, so no gradient flows.
for (const name of ['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor']) {
  registerOp(name, { infer: broadcastInfer(name, 'bool'), grad: noGrad });
}
registerOp('Not', { infer: (inputs) => [{ dtype: 'bool', shape: sameAsInput(inputs)[0].shape }], grad: noGrad });
registerOp('IsNaN', { infer: (inputs) => [{ dtype: 'bool', shape: sameAsInput(inputs)[0].shape }], grad: noGrad });
registerOp('IsInf', { infer: (inputs) => [{ dtype: 'bool', shape: sameAsInput(inputs)[0].shape }], grad: noGrad });
for (const name of ['Mod', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor', 'BitShift']) {
  registerOp(name, { infer: broadcastInfer(name), grad: noGrad });
}
registerOp('BitwiseNot', { infer: sameAsInput, grad: noGrad });
