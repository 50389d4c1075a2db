// MatMul (numpy semantics: batched, broadcast batch dims, 1-D operands) and Gemm.

import type { Dim, Value } from '../../graph/ir';
import { registerOp, type GradContext } from '../../graph/registry';
import { broadcastShapes, sumToShape } from './broadcast';
import { attrFloat, attrInt, i64, need, reshapeLike, scalarLike } from './common';

function dimsMatch(a: Dim, b: Dim): boolean {
  return a === b || typeof a === 'string' || typeof b === 'string';
}

registerOp('MatMul', {
  infer: (inputs) => {
    const [a, b] = [need(inputs[0], 'MatMul', 'A'), need(inputs[1], 'MatMul', 'B')];
    if (!a.shape || !b.shape) return [{ dtype: a.dtype, shape: null }];
    if (a.shape.length === 0 || b.shape.length === 0) throw new Error(`MatMul: ${a.name} or ${b.name} is a scalar`);
    // 1-D operands are promoted to matrices ([K] → [1, K] for A, [K, 1] for B) and the
    // promoted axis is dropped from the result.
    const A = a.shape.length === 1 ? [1, a.shape[0]] : a.shape;
    const B = b.shape.length === 1 ? [b.shape[0], 1] : b.shape;
    const [M, K1] = A.slice(-2);
    const [K2, N] = B.slice(-2);
    if (!dimsMatch(K1, K2)) throw new Error(`MatMul: inner dims differ: ${a.name} [${a.shape}] @ ${b.name} [${b.shape}]`);
    const batch = broadcastShapes([A.slice(0, -2), B.slice(0, -2)], 'MatMul') as Dim[];
    const out: Dim[] = [...batch];
    if (a.shape.length > 1) out.push(M);
    if (b.shape.length > 1) out.push(N);
    return [{ dtype: a.dtype, shape: out }];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const [a, b] = [need(ctx.inputs[0], 'MatMul', 'A'), need(ctx.inputs[1], 'MatMul', 'B')];
    let dy = need(ctx.gradOutputs[0], 'MatMul', 'output gradient');
    // Work on the promoted 2-D+ forms, then reshape back to the 1-D inputs.
    const A = a.shape!.length === 1 ? g.op('Unsqueeze', [a, i64(g, [0])])[0] : a; // (1, K)
    const B = b.shape!.length === 1 ? g.op('Unsqueeze', [b, i64(g, [1])])[0] : b; // (K, 1)
    if (b.shape!.length === 1) dy = g.op('Unsqueeze', [dy, i64(g, [-1])])[0]; // (..., M, 1)
    if (a.shape!.length === 1) dy = g.op('Unsqueeze', [dy, i64(g, [-2])])[0]; // (..., 1, N)
    const tr = (x: Value) => {
      const r = x.shape!.length;
      const perm = [...Array(r).keys()];
      [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
      // xᵀ of an x that is itself a swap of the last two axes (a tied head's wteᵀ) is its input.
      const src = g.producer(x.name);
      const p = src?.opType === 'Transpose' && !src.domain ? src.attrs.perm : undefined;
      if (p && p.type === 'ints' && p.value.length === r && p.value.every((d, i) => d === perm[i])) return g.value(src!.inputs[0]);
      return g.op('Transpose', [x], { perm })[0];
    };
    let da: Value | null = null;
    let db: Value | null = null;
    // dA = dY @ Bᵀ : (..., M, N) @ (..., N, K) → (..., M, K)
    if (ctx.needsGrad[0]) da = reshapeLike(sumToShape(g.op('MatMul', [dy, tr(B)])[0], A), a);
    if (ctx.needsGrad[1]) {
      if (b.shape!.length === 2 && A.shape!.length > 2) {
        // A 2-D weight shared over a batch (every Linear layer): fold the batch into the rows and
        // do ONE Gemm, Aᵀ·dY : (K, B·M) @ (B·M, N) → (K, N), instead of a batched MatMul + ReduceSum.
        const K = A.shape![A.shape!.length - 1];
        const N = dy.shape![dy.shape!.length - 1];
        const rows = (v: Value, last: number | string) => g.op('Reshape', [v, typeof last === 'number' ? i64(g, [-1, last]) : lastDimShape(v)])[0];
        db = reshapeLike(g.op('Gemm', [rows(A, K), rows(dy, N)], { transA: 1 })[0], b);
      } else {
        // dB = Aᵀ @ dY : (..., K, M) @ (..., M, N) → (..., K, N)
        db = reshapeLike(sumToShape(g.op('MatMul', [tr(A), dy])[0], B), b);
      }
    }
    return [da, db];
  },
});

registerOp('Gemm', {
  infer: (inputs, attrs) => {
    const [a, b] = [need(inputs[0], 'Gemm', 'A'), need(inputs[1], 'Gemm', 'B')];
    if (!a.shape || !b.shape) return [{ dtype: a.dtype, shape: null }];
    if (a.shape.length !== 2 || b.shape.length !== 2) throw new Error(`Gemm: A and B must be 2-D, got [${a.shape}] and [${b.shape}]`);
    const [M, K1] = attrInt(attrs, 'transA', 0) ? [a.shape[1], a.shape[0]] : a.shape;
    const [K2, N] = attrInt(attrs, 'transB', 0) ? [b.shape[1], b.shape[0]] : b.shape;
    if (!dimsMatch(K1, K2)) throw new Error(`Gemm: inner dims differ: ${a.name} [${a.shape}] and ${b.name} [${b.shape}]`);
    return [{ dtype: a.dtype, shape: [M, N] }];
  },
  grad: (ctx: GradContext) => {
    const g = ctx.graph;
    const [a, b, c] = [need(ctx.inputs[0], 'Gemm', 'A'), need(ctx.inputs[1], 'Gemm', 'B'), ctx.inputs[2]];
    const dy = need(ctx.gradOutputs[0], 'Gemm', 'output gradient');
    const alpha = attrFloat(ctx.attrs, 'alpha', 1);
    const beta = attrFloat(ctx.attrs, 'beta', 1);
    const tA = attrInt(ctx.attrs, 'transA', 0);
    const tB = attrInt(ctx.attrs, 'transB', 0);
    const gemm = (x: Value, y: Value, transA: number, transB: number) =>
      g.op('Gemm', [x, y], { alpha: { type: 'float', value: alpha }, transA, transB })[0];
    // With A' = op(A), B' = op(B): dA' = α·dY·B'ᵀ and dB' = α·A'ᵀ·dY; a transposed input takes
    // the transpose of that, which Gemm expresses by swapping operands and flags.
    const da = !ctx.needsGrad[0] ? null : tA ? gemm(b, dy, tB, 1) : gemm(dy, b, 0, tB ? 0 : 1);
    const db = !ctx.needsGrad[1] ? null : tB ? gemm(dy, a, 1, tA) : gemm(a, dy, tA ? 0 : 1, 0);
    let dc: Value | null = null;
    if (c && ctx.needsGrad[2]) {
      const scaled = beta === 1 ? dy : g.op('Mul', [dy, scalarLike(dy, beta)])[0];
      dc = sumToShape(scaled, c);
    }
    return [da, db, dc];
  },
});

/** [-1, last dim of v] as a run-time shape vector, for a symbolic last dim. */
function lastDimShape(v: Value): Value {
  const g = v.graph;
  const r = v.shape!.length;
  return g.op('Concat', [i64(g, [-1]), g.op('Shape', [v], { start: r - 1, end: r })[0]], { axis: 0 })[0];
}
