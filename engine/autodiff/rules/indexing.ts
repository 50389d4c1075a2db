// Gather-style reads and their scatter-add gradients. Gather's gradient is the embedding
// backward: rows of dY are added into a zero table at their token ids with
// ScatterND(reduction='add'), so repeated ids accumulate.

import type { Dim } from '../../graph/ir';
import { registerOp, type GradContext } from '../../graph/registry';
import { attrInt, i64, need, normAxis, zerosLike } from './common';

const dyOf = (ctx: GradContext) => need(ctx.gradOutputs[0], ctx.node.opType, 'output gradient');

registerOp('Gather', {
  infer: (inputs, attrs) => {
    const [data, idx] = [need(inputs[0], 'Gather', 'data'), need(inputs[1], 'Gather', 'indices')];
    if (!data.shape || !idx.shape) return [{ dtype: data.dtype, shape: null }];
    const axis = normAxis(attrInt(attrs, 'axis', 0), data.shape.length, 'Gather');
    // (data[:axis], indices..., data[axis+1:])
    return [{ dtype: data.dtype, shape: [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)] }];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const [data, idx] = [need(ctx.inputs[0], 'Gather', 'data'), need(ctx.inputs[1], 'Gather', 'indices')];
    if (!ctx.needsGrad[0]) return [null, null];
    const r = data.shape!.length;
    const q = idx.shape!.length;
    const axis = normAxis(attrInt(ctx.attrs, 'axis', 0), r, 'Gather');
    let dy = dyOf(ctx);
    // Bring the gathered axis to the front so ScatterND indexes rows: dY (pre, idx, post) →
    // (idx, pre, post), scattered into zeros (data[axis], pre, post), then moved back.
    if (axis > 0) {
      const perm = [...Array(q).keys()].map((i) => axis + i);
      for (let i = 0; i < axis; i++) perm.push(i);
      for (let i = axis + q; i < r - 1 + q; i++) perm.push(i);
      dy = g.op('Transpose', [dy], { perm })[0];
    }
    const front = [axis, ...[...Array(r).keys()].filter((i) => i !== axis)];
    const table = axis > 0 ? g.op('Transpose', [data], { perm: front })[0] : data;
    const where = g.op('Unsqueeze', [idx, i64(g, [-1])])[0]; // (idx..., 1)
    let dx = g.op('ScatterND', [zerosLike(table), where, dy], { reduction: 'add' })[0];
    if (axis > 0) {
      const back = new Array<number>(r);
      front.forEach((p, i) => (back[p] = i));
      dx = g.op('Transpose', [dx], { perm: back })[0];
    }
    return [dx, null];
  },
});

registerOp('GatherElements', {
  infer: (inputs) => {
    const [data, idx] = [need(inputs[0], 'GatherElements', 'data'), need(inputs[1], 'GatherElements', 'indices')];
    return [{ dtype: data.dtype, shape: idx.shape ? [...idx.shape] : null }];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const [data, idx] = [need(ctx.inputs[0], 'GatherElements', 'data'), need(ctx.inputs[1], 'GatherElements', 'indices')];
    const axis = attrInt(ctx.attrs, 'axis', 0);
    return [g.op('ScatterElements', [zerosLike(data), idx, dyOf(ctx)], { axis, reduction: 'add' })[0], null];
  },
});

registerOp('GatherND', {
  infer: (inputs, attrs) => {
    const [data, idx] = [need(inputs[0], 'GatherND', 'data'), need(inputs[1], 'GatherND', 'indices')];
    const last = idx.shape?.[idx.shape.length - 1];
    if (!data.shape || !idx.shape || typeof last !== 'number') return [{ dtype: data.dtype, shape: null }];
    const b = attrInt(attrs, 'batch_dims', 0);
    const out: Dim[] = [...idx.shape.slice(0, -1), ...data.shape.slice(b + last)];
    return [{ dtype: data.dtype, shape: out }];
  },
});

// Scatters keep data's shape. Their gradients are not needed by any model here.
for (const name of ['ScatterND', 'ScatterElements']) {
  registerOp(name, {
    infer: (inputs) => {
      const data = need(inputs[0], name, 'data');
      return [{ dtype: data.dtype, shape: data.shape ? [...data.shape] : null }];
    },
  });
}
