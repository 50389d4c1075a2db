// Numpy multidirectional broadcasting, forward (shape rule) and backward (reduce a gradient back to
// the shape of the input that was broadcast).

import type { Dim, Shape, Value } from '../../graph/ir';
import { i64, isStatic, sameShape } from './common';

/** Broadcast result of several shapes; incompatible static dims are an error naming the op. */
export function broadcastShapes(shapes: Shape[], op: string): Shape {
  if (shapes.some((s) => s === null)) return null;
  const ss = shapes as Dim[][];
  const rank = Math.max(...ss.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of ss) {
      const e = s[i - (rank - s.length)];
      if (e === undefined || e === 1) continue;
      if (d === 1) d = e;
      else if (d !== e) {
        // A static size beats a symbolic one (the symbol must be that size or 1 at run time).
        if (typeof d === 'number' && typeof e === 'number') {
          throw new Error(`${op}: shapes [${ss.map((x) => x.join(', ')).join('] and [')}] do not broadcast (axis ${i}: ${d} vs ${e})`);
        }
        if (typeof e === 'number') d = e;
      }
    }
    out.push(d);
  }
  return out;
}

/**
 * Reduces `grad` (the gradient of a broadcast result) to `x`'s shape: ReduceSum over the leading
 * axes x lacks and over the axes where x has size 1, then Reshape to x's shape. When x's shape is
 * not fully static the target shape is taken at run time with Shape(x).
 */
export function sumToShape(grad: Value, x: Value): Value {
  if (sameShape(grad.shape, x.shape)) return grad;
  const g = grad.graph;
  if (!grad.shape || !x.shape) throw new Error(`cannot reduce gradient ${grad.name} to ${x.name}: unknown rank`);
  const lead = grad.shape.length - x.shape.length;
  if (lead < 0) throw new Error(`gradient ${grad.name} has lower rank than ${x.name}`);
  const axes: number[] = [];
  for (let i = 0; i < grad.shape.length; i++) {
    if (i < lead) axes.push(i);
    else if (x.shape[i - lead] === 1 && grad.shape[i] !== 1) axes.push(i);
  }
  let r = grad;
  if (axes.length > 0) r = g.op('ReduceSum', [grad, i64(g, axes)], { keepdims: 1 })[0];
  if (sameShape(r.shape, x.shape)) return r;
  const target = isStatic(x.shape) ? i64(g, x.shape) : g.op('Shape', [x])[0];
  return g.op('Reshape', [r, target])[0];
}
