// Layers the Hugging Face-layout encoders (bert.ts) and encoder-decoders (t5.ts) share, on top of
// blocks.ts: torch-layout Linear, RMSNorm, attention with an additive bias (padding mask,
// relative positions, causal mask), T5's relative-position buckets and feed-forward blocks.
//
// As in blocks.ts the residual stream stays 2-D, (B·T, C): every Linear is then one GEMM forward
// and two GEMMs backward, and only the attention core is 4-D.

import type { Dim, Graph, Value } from '../graph/ir';
import { f } from '../graph/ir';
import { add, concat, gather, gelu, matmul, mul, relu, reshape, scalar, softmax, squeeze, sub, transpose, unsqueeze } from '../graph/ops';
import { causalMask, type ParamLookup } from './blocks';

/**
 * A sequence length: a number in graphs built for one length (training graphs), or the int64
 * vector [T] read from an input's Shape in exported models, whose length is a run-time dim. Every
 * helper below builds exactly the old constant-shape graph when it is given numbers.
 */
export type SeqLen = number | Value;

/** Reshape to `dims`; run-time SeqLen vectors are spliced into the shape vector. All numbers: a constant shape. */
export function reshapeTo(x: Value, dims: (number | Value)[]): Value {
  if (dims.every((d): d is number => typeof d === 'number')) return reshape(x, dims);
  const g = x.graph;
  const parts: Value[] = [];
  let run: number[] = [];
  for (const d of dims) {
    if (typeof d === 'number') run.push(d);
    else {
      if (run.length > 0) parts.push(g.vector(run));
      run = [];
      parts.push(d);
    }
  }
  if (run.length > 0) parts.push(g.vector(run));
  return g.op('Reshape', [x, concat(parts, 0)])[0];
}

/** int64 positions 0..T-1, (T): a constant for a known T, a Range over the run-time length otherwise. */
export function positionIds(g: Graph, T: SeqLen): Value {
  if (typeof T === 'number') return g.vector(Array.from({ length: T }, (_, i) => i));
  return g.op('Range', [g.scalar(0, 'int64'), squeeze(T, [0]), g.scalar(1, 'int64')])[0];
}

/** Additive causal mask (T, T), 0 on and below the diagonal and -inf above; built from positions when T is a run-time length. */
export function causalMaskOf(g: Graph, T: SeqLen): Value {
  if (typeof T === 'number') return causalMask(g, T);
  const pos = positionIds(g, T);
  const allowed = g.op('GreaterOrEqual', [unsqueeze(pos, [1]), unsqueeze(pos, [0])])[0]; // query i sees key j ≤ i: (T, T)
  return g.op('Where', [allowed, g.scalar(0), g.scalar(-Infinity)])[0];
}

/**
 * torch nn.Linear: weight (out, in), y = x·Wᵀ + b, as one Gemm with transB=1.
 *
 * Why Gemm and not MatMul(x, Transpose(W)): in a training graph W is an input, so the Transpose
 * would copy the whole weight every step, and MatMul's backward would then transpose dW back.
 * Gemm reads W in place (transB), fuses the bias, and its gradients are Gemm(dY, W) for dx and
 * Gemm(dYᵀ, x) for dW: no transposed copies at all (the MatMul form costs 4 Transposes per
 * Linear per step). Measured on ORT 1.30 CPU, 1 thread, forward + backward of a (1024, 512) ×
 * (2048, 512)ᵀ Linear with W as an input: Gemm 65 ms min / 72 ms median, MatMul + Transpose
 * 71 / 78 ms (40 interleaved runs).
 */
export function hfLinear(x: Value, p: ParamLookup, prefix: string, bias = true): Value {
  if (!x.shape || x.shape.length !== 2) {
    throw new Error(`hfLinear ${prefix}: input ${x.name} must be 2-D (B·T, in), got [${x.shape?.join(', ')}]`);
  }
  const inputs = [x, p(`${prefix}.weight`)];
  if (bias) inputs.push(p(`${prefix}.bias`));
  return x.graph.op('Gemm', inputs, { transB: 1 })[0]; // (N, in) @ (out, in)ᵀ → (N, out)
}

/** T5LayerNorm: x · rsqrt(mean(x²) + eps) · weight, no mean subtraction and no bias. */
export function rmsNorm(x: Value, p: ParamLookup, prefix: string, eps = 1e-6): Value {
  return x.graph.op('RMSNormalization', [x, p(`${prefix}.weight`)], { axis: -1, epsilon: f(eps) })[0];
}

/** float32's lowest value: what Hugging Face adds at masked positions (torch.finfo(float32).min). */
export const MASK_MIN = -3.4028234663852886e38;

/**
 * Additive key-padding mask (B, 1, 1, Tk) from an int64 attention_mask (B, Tk) holding 1 for
 * tokens and 0 for padding, as HF's get_extended_attention_mask: (1 - mask) · finfo.min.
 */
export function paddingMask(attentionMask: Value): Value {
  const g = attentionMask.graph;
  const m = g.op('Cast', [attentionMask], { to: 1 })[0]; // float32 (B, Tk)
  const neg = mul(sub(scalar(m, 1), m), scalar(m, MASK_MIN)); // (B, Tk)
  return unsqueeze(neg, [1, 2]); // (B, 1, 1, Tk)
}

export interface AttentionNames {
  q: string;
  k: string;
  v: string;
  o: string;
}

export interface AttentionOptions {
  qLen: SeqLen;
  kLen: SeqLen;
  nHead: number;
  /** Per-head width (HF T5 d_kv; BERT hidden / heads). */
  headDim: number;
  /** Multiply scores by 1/√headDim (BERT) or not (T5 folds the scale into its init). */
  scale: boolean;
  bias: boolean;
  /** Additive bias broadcastable to (B, nh, Tq, Tk): masks, relative positions. */
  scoreBias: Value | null;
}

/**
 * Multi-head attention with separate q/k/v/o Linears (torch layout). `xq` is (B·Tq, C) and
 * `xkv` is (B·Tk, C); self-attention passes the same value twice. Returns (B·Tq, C_out).
 */
export function attention(xq: Value, xkv: Value, p: ParamLookup, names: AttentionNames, o: AttentionOptions): Value {
  const { qLen: Tq, kLen: Tk, nHead: nh, headDim: hd } = o;
  const inner = nh * hd;
  const q0 = hfLinear(xq, p, names.q, o.bias); // (B·Tq, nh·hd)
  const k0 = hfLinear(xkv, p, names.k, o.bias); // (B·Tk, nh·hd)
  const v0 = hfLinear(xkv, p, names.v, o.bias); // (B·Tk, nh·hd)
  let q = transpose(reshapeTo(q0, [-1, Tq, nh, hd]), [0, 2, 1, 3]); // (B, nh, Tq, hd)
  const kT = transpose(reshapeTo(k0, [-1, Tk, nh, hd]), [0, 2, 3, 1]); // (B, nh, hd, Tk)
  const v = transpose(reshapeTo(v0, [-1, Tk, nh, hd]), [0, 2, 1, 3]); // (B, nh, Tk, hd)
  if (o.scale) q = mul(q, scalar(q, 1 / Math.sqrt(hd))); // scale q: B·T·C multiplies, not B·nh·T·T
  let att = matmul(q, kT); // (B, nh, Tq, hd) @ (B, nh, hd, Tk) → (B, nh, Tq, Tk)
  if (o.scoreBias) att = add(att, o.scoreBias);
  const probs = softmax(att, -1);
  const y = matmul(probs, v); // (B, nh, Tq, Tk) @ (B, nh, Tk, hd) → (B, nh, Tq, hd)
  const merged = reshape(transpose(y, [0, 2, 1, 3]), [-1, inner]); // (B, Tq, nh, hd) → (B·Tq, nh·hd)
  return hfLinear(merged, p, names.o, o.bias); // (B·Tq, nh·hd) @ (C, nh·hd)ᵀ → (B·Tq, C)
}

/**
 * HF T5Attention._relative_position_bucket for every (query i, key j) pair, relative position
 * j - i. Bidirectional (encoder) gives half the buckets to each sign; causal (decoder) folds the
 * future onto bucket 0. Distances ≥ num_buckets/2 (per side) share log-spaced buckets up to
 * max_distance. The log step is done in float32 like torch, so bucket boundaries (distance 16,
 * 32, 64 for the defaults) land where the reference puts them.
 */
export function relativePositionBuckets(qLen: number, kLen: number, bidirectional: boolean, numBuckets: number, maxDistance: number): Int32Array {
  const out = new Int32Array(qLen * kLen);
  for (let i = 0; i < qLen; i++) {
    for (let j = 0; j < kLen; j++) out[i * kLen + j] = relativePositionBucket(j - i, bidirectional, numBuckets, maxDistance);
  }
  return out;
}

/** The bucket of one relative position (key - query); see relativePositionBuckets. */
export function relativePositionBucket(relative: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  let nb = numBuckets;
  if (bidirectional) nb = Math.floor(nb / 2);
  const maxExact = Math.floor(nb / 2);
  const logRange = Math.fround(Math.log(maxDistance / maxExact));
  let rel = relative;
  let bucket = 0;
  if (bidirectional) {
    if (rel > 0) bucket += nb;
    rel = Math.abs(rel);
  } else {
    rel = -Math.min(rel, 0);
  }
  if (rel < maxExact) return bucket + rel;
  const ratio = Math.fround(Math.fround(rel) / maxExact);
  const scaled = Math.fround(Math.fround(Math.fround(Math.log(ratio)) / logRange) * (nb - maxExact));
  return bucket + Math.min(maxExact + Math.trunc(scaled), nb - 1);
}

/**
 * Learned relative-position bias (1, nh, Tq, Tk) from the (num_buckets, nh) table `name`. With
 * run-time lengths the buckets come from a table over relative positions -maxDistance..maxDistance
 * (made by the same relativePositionBucket as the constant path): every distance ≥ maxDistance
 * lands in the last bucket of its side, so clipping the relative position first is exact.
 */
export function relativePositionBias(g: Graph, p: ParamLookup, name: string, qLen: SeqLen, kLen: SeqLen, bidirectional: boolean, numBuckets: number, maxDistance: number): Value {
  let idx: Value;
  if (typeof qLen === 'number' && typeof kLen === 'number') {
    const buckets = relativePositionBuckets(qLen, kLen, bidirectional, numBuckets, maxDistance);
    idx = g.const({ dtype: 'int64', dims: [qLen, kLen], data: BigInt64Array.from(buckets, (b) => BigInt(b)) }, 'rel_buckets');
  } else {
    const M = maxDistance;
    const table = Array.from({ length: 2 * M + 1 }, (_, r) => relativePositionBucket(r - M, bidirectional, numBuckets, maxDistance));
    const rel = sub(unsqueeze(positionIds(g, kLen), [0]), unsqueeze(positionIds(g, qLen), [1])); // key - query: (1, Tk) - (Tq, 1) → (Tq, Tk)
    const clipped = g.op('Max', [g.op('Min', [rel, g.scalar(M, 'int64')])[0], g.scalar(-M, 'int64')])[0]; // (Tq, Tk) in [-M, M]
    idx = gather(g.vector(table), add(clipped, g.scalar(M, 'int64'))); // (Tq, Tk) bucket ids
  }
  const values = gather(p(name), idx); // (num_buckets, nh)[buckets] → (Tq, Tk, nh)
  return unsqueeze(transpose(values, [2, 0, 1]), [0]); // (Tq, Tk, nh) → (nh, Tq, Tk) → (1, nh, Tq, Tk)
}

export type FeedForwardKind = 'relu' | 'gated-gelu';

/**
 * T5 DenseReluDense: wo(relu(wi·x)) for T5 v1.0, or T5 v1.1's gated GELU
 * wo(gelu_tanh(wi_0·x) ⊙ wi_1·x). No biases. x is (B·T, d_model).
 */
export function t5FeedForward(x: Value, p: ParamLookup, prefix: string, kind: FeedForwardKind): Value {
  if (kind === 'relu') {
    const h = relu(hfLinear(x, p, `${prefix}.wi`, false)); // (B·T, d) @ (d_ff, d)ᵀ → (B·T, d_ff)
    return hfLinear(h, p, `${prefix}.wo`, false); // (B·T, d_ff) @ (d, d_ff)ᵀ → (B·T, d)
  }
  const gate = gelu(hfLinear(x, p, `${prefix}.wi_0`, false), 'tanh'); // (B·T, d_ff)
  const lin = hfLinear(x, p, `${prefix}.wi_1`, false); // (B·T, d_ff)
  return hfLinear(mul(gate, lin), p, `${prefix}.wo`, false); // (B·T, d_ff) @ (d, d_ff)ᵀ → (B·T, d)
}

/**
 * Batch dim of an int64 (B, T) input, and its sequence length: the number when T is known, else
 * the run-time vector [T] read by Shape (exported models with a symbolic "seq" dim).
 */
export function batchAndSeq(ids: Value, model: string): [Dim, SeqLen] {
  const s = ids.shape;
  if (!s || s.length !== 2) throw new Error(`${model}: input ${ids.name} must be int64 (B, T), got [${s?.join(', ')}]`);
  if (typeof s[1] === 'number') return [s[0], s[1]];
  return [s[0], ids.graph.op('Shape', [ids], { start: 1, end: 2 })[0]];
}
