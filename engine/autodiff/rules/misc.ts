// Constants and generators (Constant, ConstantOfShape, Range, OneHot), Cast, Trilu and ONNX's own
// Dropout. The deterministic seeded dropout models use is built from these in ../dropout.ts.

import type { DType, Dim, Value } from '../../graph/ir';
import { registerOp, type GradContext } from '../../graph/registry';
import { attrInt, constData, constInts, diffDim, dimsOf, dtypeFromOnnx, isFloat, need, normAxis, onnxDType, scalarLike, unknownDim } from './common';

const dyOf = (ctx: GradContext) => need(ctx.gradOutputs[0], ctx.node.opType, 'output gradient');

registerOp('Constant', {
  infer: (_inputs, attrs) => {
    const t = attrs.value;
    if (t && t.type === 'tensor') return [{ dtype: t.value.dtype, shape: [...t.value.dims] }];
    if (attrs.value_float) return [{ dtype: 'float32', shape: [] }];
    if (attrs.value_int) return [{ dtype: 'int64', shape: [] }];
    if (attrs.value_floats?.type === 'floats') return [{ dtype: 'float32', shape: [attrs.value_floats.value.length] }];
    if (attrs.value_ints?.type === 'ints') return [{ dtype: 'int64', shape: [attrs.value_ints.value.length] }];
    throw new Error('Constant: needs a value, value_float(s) or value_int(s) attribute');
  },
  grad: () => [],
});

registerOp('ConstantOfShape', {
  infer: (inputs, attrs, g) => {
    const shapeIn = need(inputs[0], 'ConstantOfShape', 'input');
    const v = attrs.value;
    const dtype: DType = v && v.type === 'tensor' ? v.value.dtype : 'float32';
    const dims = dimsOf(g, shapeIn);
    if (dims) return [{ dtype, shape: dims }];
    const len = shapeIn.shape?.[0];
    return [{ dtype, shape: typeof len === 'number' ? Array.from({ length: len }, () => unknownDim(g, 'fill')) : null }];
  },
  grad: () => [null],
});

registerOp('Range', {
  infer: (inputs, _attrs, g) => {
    const [start, limit, delta] = [0, 1, 2].map((i) => need(inputs[i], 'Range', ['start', 'limit', 'delta'][i]));
    const [s, l, d] = [start, limit, delta].map((v) => constData(g, v)?.values[0]);
    if (s === undefined || l === undefined || d === undefined) {
      // Range(a, b, 1) with a and b taken from shapes has length b - a: Range(0, seq) is seq,
      // Range(past, past+seq) is seq.
      const [sd, ld] = [dimsOf(g, start), dimsOf(g, limit)];
      const sym = (d === 1 && sd?.length === 1 && ld?.length === 1 ? diffDim(ld[0], sd[0]) : null) ?? unknownDim(g, 'range');
      return [{ dtype: start.dtype, shape: [sym] }];
    }
    return [{ dtype: start.dtype, shape: [Math.max(0, Math.ceil((l - s) / d))] }];
  },
  grad: () => [null, null, null],
});

registerOp('OneHot', {
  infer: (inputs, attrs, g) => {
    const [idx, depth, values] = [need(inputs[0], 'OneHot', 'indices'), need(inputs[1], 'OneHot', 'depth'), need(inputs[2], 'OneHot', 'values')];
    if (!idx.shape) return [{ dtype: values.dtype, shape: null }];
    const d: Dim = dimsOf(g, depth)?.[0] ?? unknownDim(g, 'depth');
    const r = idx.shape.length + 1;
    const axis = normAxis(attrInt(attrs, 'axis', -1), r, 'OneHot');
    const out = [...idx.shape];
    out.splice(axis, 0, d);
    return [{ dtype: values.dtype, shape: out }];
  },
  grad: () => [null, null, null],
});

registerOp('Cast', {
  infer: (inputs, attrs) => {
    const x = need(inputs[0], 'Cast', 'input');
    const to = attrInt(attrs, 'to', -1);
    return [{ dtype: dtypeFromOnnx(to, 'Cast'), shape: x.shape ? [...x.shape] : null }];
  },
  grad: (ctx) => {
    const x = need(ctx.inputs[0], 'Cast', 'input');
    // Only float → float casts carry a gradient (mixed precision); integer casts are steps.
    if (!isFloat(x.dtype) || !isFloat(ctx.outputs[0].dtype)) return [null];
    return [ctx.graph.op('Cast', [dyOf(ctx)], { to: onnxDType[x.dtype] })[0]];
  },
});

registerOp('CastLike', {
  infer: (inputs) => {
    const [x, like] = [need(inputs[0], 'CastLike', 'input'), need(inputs[1], 'CastLike', 'target_type')];
    return [{ dtype: like.dtype, shape: x.shape ? [...x.shape] : null }];
  },
  grad: (ctx) => {
    const x = need(ctx.inputs[0], 'CastLike', 'input');
    if (!isFloat(x.dtype) || !isFloat(ctx.outputs[0].dtype)) return [null, null];
    return [ctx.graph.op('Cast', [dyOf(ctx)], { to: onnxDType[x.dtype] })[0], null];
  },
});

registerOp('Trilu', {
  infer: (inputs) => {
    const x = need(inputs[0], 'Trilu', 'input');
    return [{ dtype: x.dtype, shape: x.shape ? [...x.shape] : null }];
  },
  // Trilu keeps a fixed triangle, so the gradient keeps the same triangle of dY.
  grad: (ctx) => [ctx.graph.op('Trilu', [dyOf(ctx), ctx.inputs[1] ?? null], ctx.attrs)[0], null],
});

// ONNX Dropout draws its mask from a per-node seed attribute; prefer seededDropout (../dropout.ts)
// whose mask is a function of a seed input. Backward needs the forward's mask output.
registerOp('Dropout', {
  infer: (inputs) => {
    const x = need(inputs[0], 'Dropout', 'data');
    const shape = x.shape ? [...x.shape] : null;
    return [
      { dtype: x.dtype, shape },
      { dtype: 'bool', shape },
    ];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const dy = dyOf(ctx);
    const training = ctx.inputs[2] ? constInts(g, ctx.inputs[2]) : [0];
    if (!training) throw new Error(`Dropout ${ctx.node.name}: gradient needs a constant training_mode input`);
    if (training[0] === 0) return [dy, null, null];
    if (!ctx.outputs[1]) throw new Error(`Dropout ${ctx.node.name}: request the mask output ({ outputs: 2 }) so the backward can reuse it`);
    const mask = g.op('Cast', [ctx.outputs[1]], { to: onnxDType[dy.dtype] })[0];
    const ratio: Value = ctx.inputs[1] ?? scalarLike(dy, 0.5);
    const keep = g.op('Sub', [scalarLike(dy, 1), ratio])[0];
    return [g.op('Div', [g.op('Mul', [dy, mask])[0], keep])[0], null, null];
  },
});
