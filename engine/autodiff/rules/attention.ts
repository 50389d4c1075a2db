// Fused attention: com.microsoft MultiHeadAttention's shape rule, and a gradient rule that never
// holds the (B, nh, T, T) probabilities.
//
// The forward is ORT's fused kernel, which keeps no probabilities either. The backward recomputes
// them one query block at a time, as flash-attention 2's backward does:
//   S_i = Q_i·Kᵀ·scale (+ causal mask)   P_i = softmax(S_i)        D_i = rowsum(dO_i ∘ O_i)
//   dV += P_iᵀ·dO_i                       dP_i = dO_i·Vᵀ            dS_i = P_i ∘ (dP_i − D_i)
//   dQ_i = dS_i·K·scale                   dK += dS_iᵀ·Q_i·scale
// A query block holds whole rows (every key it may see), so its softmax needs no saved
// log-sum-exp. Under causal masking block i sees only the first (i + 1)·bq keys, so the backward
// skips the key blocks above the diagonal (at T 1024 in blocks of 128 it computes 36 of 64 score
// tiles, recomputing S included). The blocks are unrolled (a Loop would
// keep the step out of K-step Loops, engine/train/ksteps.ts) and chained: block i + 1 reads its
// queries and output gradient through `x + 0·(first elements of block i's results)`, so ONNX
// Runtime cannot start it (and allocate its scores) before block i is finished and freed.

import { tensor, type Graph, type Value } from '../../graph/ir';
import { registerOp } from '../../graph/registry';
import { attrInt, attrFloat, i64, isStatic, need, scalarLike } from './common';

const MS = 'com.microsoft';

/**
 * Query rows per block in MultiHeadAttention's backward, read when a gradient is built (process-wide;
 * gradcheck cases and benches set it). Default measured at context 256 and 1024 (bench/RESULTS.md,
 * "Fused attention").
 */
export const flashAttention = { queryBlock: 128 };

export interface BlockwiseAttentionInput {
  /** (B, nh, T, hs) each; `o` is the forward's output and `dO` its gradient. */
  q: Value;
  k: Value;
  v: Value;
  o: Value;
  dO: Value;
}

export interface BlockwiseAttentionOptions {
  scale: number;
  causal: boolean;
  /** Query rows per block (default flashAttention.queryBlock); the last block may be shorter. */
  block?: number;
}

/**
 * dQ, dK, dV (B, nh, T, hs) of softmax(Q·Kᵀ·scale + mask)·V, recomputing the probabilities per
 * query block. Float32 or float64; T must be static.
 */
export function blockwiseAttentionBackward(g: Graph, x: BlockwiseAttentionInput, o: BlockwiseAttentionOptions): { dq: Value; dk: Value; dv: Value } {
  const T = x.q.shape?.[2];
  if (!x.q.shape || x.q.shape.length !== 4 || typeof T !== 'number') {
    throw new Error(`attention backward: queries ${x.q.name} must be (B, nh, T, hs) with a static T, got [${x.q.shape?.join(', ')}]`);
  }
  const bq = Math.max(1, Math.min(T, o.block ?? flashAttention.queryBlock));
  const op = (type: string, ins: Value[], attrs = {}) => g.op(type, ins, attrs)[0];
  const rows = (t: Value, from: number, to: number) => op('Slice', [t, i64(g, [from]), i64(g, [to]), i64(g, [2])]); // (B, nh, to − from, ·)
  const cols = (t: Value, to: number) => (to === T ? t : op('Slice', [t, i64(g, [0]), i64(g, [to]), i64(g, [3])])); // (B, nh, ·, to)
  const first = (t: Value) => op('Slice', [op('Reshape', [t, i64(g, [-1])]), i64(g, [0]), i64(g, [1])]); // (1)

  const qs = op('Mul', [x.q, scalarLike(x.q, o.scale)]); // (B, nh, T, hs), scaled once
  const kT = op('Transpose', [x.k], { perm: [0, 1, 3, 2] }); // (B, nh, hs, T)
  const vT = op('Transpose', [x.v], { perm: [0, 1, 3, 2] }); // (B, nh, hs, T)
  const dRow = op('ReduceSum', [op('Mul', [x.dO, x.o]), i64(g, [-1])], { keepdims: 1 }); // D = rowsum(dO ∘ O): (B, nh, T, 1)

  const dqs: Value[] = [];
  let dk: Value | null = null; // (B, nh, kEnd, hs): rows past the keys seen so far are zero and not stored
  let dv: Value | null = null;
  let gate: Value | null = null; // 0·(block i − 1's results): orders block i after it
  for (let r0 = 0; r0 < T; r0 += bq) {
    const r1 = Math.min(T, r0 + bq);
    const kEnd = o.causal ? r1 : T; // keys block i may see
    const gated = (t: Value) => (gate ? op('Add', [t, gate]) : t);
    const qi = gated(rows(qs, r0, r1)); // (B, nh, n, hs), n = r1 − r0
    const dOi = gated(rows(x.dO, r0, r1)); // (B, nh, n, hs)
    let s = op('MatMul', [qi, cols(kT, kEnd)]); // (B, nh, n, hs) @ (B, nh, hs, kEnd) → (B, nh, n, kEnd)
    if (o.causal) s = op('Add', [s, causalBlockMask(g, x.q, r0, r1)]);
    const p = op('Softmax', [s], { axis: -1 }); // (B, nh, n, kEnd)
    const dvi = op('MatMul', [op('Transpose', [p], { perm: [0, 1, 3, 2] }), dOi]); // (B, nh, kEnd, n) @ (B, nh, n, hs) → (B, nh, kEnd, hs)
    const dp = op('MatMul', [dOi, cols(vT, kEnd)]); // (B, nh, n, hs) @ (B, nh, hs, kEnd) → (B, nh, n, kEnd)
    const ds = op('Mul', [p, op('Sub', [dp, rows(dRow, r0, r1)])]); // (B, nh, n, kEnd)
    const dqi = op('MatMul', [ds, rows(x.k, 0, kEnd)]); // (B, nh, n, kEnd) @ (B, nh, kEnd, hs) → (B, nh, n, hs), ·scale below
    const dki = op('MatMul', [op('Transpose', [ds], { perm: [0, 1, 3, 2] }), qi]); // (B, nh, kEnd, n) @ (B, nh, n, hs) → (B, nh, kEnd, hs), Q already scaled
    dk = dk ? op('Add', [growRows(g, dk, kEnd), dki]) : dki;
    dv = dv ? op('Add', [growRows(g, dv, kEnd), dvi]) : dvi;
    dqs.push(dqi);
    if (r1 < T) gate = op('Mul', [op('Sum', [first(dk), first(dv), first(dqi)]), scalarLike(x.q, 0)]); // (1)
  }
  const dqAll = dqs.length === 1 ? dqs[0] : op('Concat', dqs, { axis: 2 }); // (B, nh, T, hs)
  return { dq: op('Mul', [dqAll, scalarLike(x.q, o.scale)]), dk: growRows(g, dk!, T), dv: growRows(g, dv!, T) };
}

/** Pads rows (axis 2) of a (B, nh, n, hs) accumulator with zeros up to `to`. */
function growRows(g: Graph, t: Value, to: number): Value {
  const n = t.shape![2] as number;
  if (n === to) return t;
  return g.op('Pad', [t, i64(g, [0, 0, 0, 0, 0, 0, to - n, 0])])[0]; // (B, nh, to, hs)
}

/** Additive causal mask of query rows [r0, r1) against keys [0, r1): (r1 − r0, r1), in the dtype of `like`. */
function causalBlockMask(g: Graph, like: Value, r0: number, r1: number): Value {
  const n = r1 - r0;
  const data = new Array<number>(n * r1).fill(0);
  for (let i = 0; i < n; i++) for (let j = r0 + i + 1; j < r1; j++) data[i * r1 + j] = -Infinity;
  return g.const(tensor(like.dtype, [n, r1], data), 'causal_block_mask');
}

// MultiHeadAttention(query, key, value) with 3-D (B, T, nh·hs) inputs and no bias, masks or cache:
// what engine/models/gpt.ts builds for `attention: 'fused'`. Output (B, Tq, nh·hs_v).
registerOp(
  'MultiHeadAttention',
  {
    infer: (inputs, attrs) => {
      const [q, k, v] = [need(inputs[0], 'MultiHeadAttention', 'query'), need(inputs[1], 'MultiHeadAttention', 'key'), need(inputs[2], 'MultiHeadAttention', 'value')];
      if (inputs.length > 3 && inputs.slice(3).some((x) => x)) throw new Error('MultiHeadAttention: only query, key and value are supported (no bias, masks or past)');
      for (const t of [q, k, v]) if (!t.shape || t.shape.length !== 3) throw new Error(`MultiHeadAttention: input ${t.name} must be 3-D (B, T, hidden), got [${t.shape?.join(', ')}]`);
      if (attrInt(attrs, 'num_heads', 0) <= 0) throw new Error('MultiHeadAttention: attribute num_heads must be positive');
      return [{ dtype: q.dtype, shape: [q.shape![0], q.shape![1], v.shape![2]] }];
    },
    grad: (ctx) => {
      const g = ctx.graph;
      const [q, k, v] = ctx.inputs as Value[];
      const dy = ctx.gradOutputs[0];
      if (!dy) return [null, null, null];
      const nh = attrInt(ctx.attrs, 'num_heads', 0);
      const hidden = q.shape![2];
      if (!isStatic(q.shape!.slice(1)) || !isStatic(k.shape!.slice(1)) || k.shape![1] !== q.shape![1] || v.shape![2] !== hidden) {
        throw new Error(`MultiHeadAttention ${ctx.node.name}: gradient needs self-attention shapes with static T and hidden, got query [${q.shape}], key [${k.shape}], value [${v.shape}]`);
      }
      const [T, hs] = [q.shape![1] as number, (hidden as number) / nh];
      const scale = attrFloat(ctx.attrs, 'scale', 0) || 1 / Math.sqrt(hs);
      const heads = (t: Value) => g.op('Transpose', [g.op('Reshape', [t, i64(g, [0, T, nh, hs])])[0]], { perm: [0, 2, 1, 3] })[0]; // (B, T, C) → (B, nh, T, hs)
      const back = (t: Value) => g.op('Reshape', [g.op('Transpose', [t], { perm: [0, 2, 1, 3] })[0], i64(g, [0, T, nh * hs])])[0]; // (B, nh, T, hs) → (B, T, C)
      const causal = attrInt(ctx.attrs, 'unidirectional', 0) === 1;
      const d = blockwiseAttentionBackward(g, { q: heads(q), k: heads(k), v: heads(v), o: heads(ctx.outputs[0]), dO: heads(dy) }, { scale, causal });
      return [back(d.dq), back(d.dk), back(d.dv)];
    },
  },
  MS,
);
