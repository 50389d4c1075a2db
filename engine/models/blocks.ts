// Building blocks shared by the transformer models (nanoGPT model.py layout: LayerNorm →
// attention → MLP → block), plus the parameter-spec / init machinery every model uses.
//
// Models never create weights themselves: they read them through a `ParamLookup`, so the same
// builder makes an inference graph (weights as initializers), a training-step graph (weights as
// `param:<name>` inputs) or a LoRA graph (frozen base + adapters).

import type { Graph, Value } from '../graph/ir';
import { add, gelu, layerNorm, matmul, mul, reshape, scalar, softmax, transpose } from '../graph/ops';
import { mulberry32 } from '../data/random';

export type Init = { kind: 'normal'; std: number } | { kind: 'zeros' } | { kind: 'ones' };

export interface ParamSpec {
  name: string;
  shape: number[];
  init: Init;
}

/** Returns the graph value holding the named weight. */
export type ParamLookup = (name: string) => Value;

/** Total element count of a list of parameter specs. */
export const countParams = (specs: ParamSpec[]) => specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);

/**
 * Deterministic weights for `specs`: a pure function of (seed, parameter name), so adding a
 * parameter does not reshuffle the others. Normal draws use Box-Muller over mulberry32.
 */
export function initParams(specs: ParamSpec[], seed: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (s.init.kind === 'ones') data.fill(1);
    else if (s.init.kind === 'normal') {
      const rand = mulberry32(hashSeed(seed, s.name));
      for (let i = 0; i < n; i += 2) {
        const u1 = 1 - rand(); // (0, 1], so log() is finite
        const r = Math.sqrt(-2 * Math.log(u1));
        const theta = 2 * Math.PI * rand();
        data[i] = r * Math.cos(theta) * s.init.std;
        if (i + 1 < n) data[i + 1] = r * Math.sin(theta) * s.init.std;
      }
    }
    out.set(s.name, data);
  }
  return out;
}

export { mulberry32 };

function hashSeed(seed: number, name: string): number {
  // FNV-1a over the name, mixed with the seed.
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** HF Conv1D convention: weight (in, out), so y = x @ W + b with no transpose. */
export function linear(x: Value, p: ParamLookup, prefix: string, bias = true): Value {
  const y = matmul(x, p(`${prefix}.weight`)); // (..., in) @ (in, out) → (..., out)
  return bias ? add(y, p(`${prefix}.bias`)) : y;
}

export function layerNormBlock(x: Value, p: ParamLookup, prefix: string, bias = true, eps = 1e-5): Value {
  return layerNorm(x, p(`${prefix}.weight`), bias ? p(`${prefix}.bias`) : null, eps);
}

export interface AttentionShape {
  batch: number;
  seq: number;
  nHead: number;
  nEmbd: number;
}

/**
 * Causal self-attention with the fused qkv projection of GPT-2 (`c_attn`, weight (C, 3C)).
 * The residual stream is kept 2-D, (B·T, C), so every Linear is one plain GEMM forward and
 * backward; only the attention core is 4-D. `mask` is the additive (T, T) causal mask.
 */
export function causalSelfAttention(x: Value, p: ParamLookup, prefix: string, s: AttentionShape, mask: Value, bias = true): Value {
  const { batch: B, seq: T, nHead: nh, nEmbd: C } = s;
  const hs = C / nh;
  const qkv = linear(x, p, `${prefix}.c_attn`, bias); // (B·T, C) @ (C, 3C) → (B·T, 3C)
  const g = x.graph;
  // Split (whose gradient is one Concat) rather than Gather per head group (a scatter each).
  const [q0, k0, v0] = g.op('Split', [qkv, g.vector([C, C, C])], { axis: 1 }, { outputs: 3 }); // 3 × (B·T, C)
  const q = transpose(reshape(q0, [B, T, nh, hs]), [0, 2, 1, 3]); // (B, nh, T, hs)
  const kT = transpose(reshape(k0, [B, T, nh, hs]), [0, 2, 3, 1]); // (B, nh, hs, T)
  const v = transpose(reshape(v0, [B, T, nh, hs]), [0, 2, 1, 3]); // (B, nh, T, hs)
  const qs = mul(q, scalar(q, 1 / Math.sqrt(hs))); // scale q: B·T·C multiplies instead of B·nh·T·T
  const att = add(matmul(qs, kT), mask); // (B, nh, T, hs) @ (B, nh, hs, T) → (B, nh, T, T)
  const probs = softmax(att, -1);
  const y = matmul(probs, v); // (B, nh, T, T) @ (B, nh, T, hs) → (B, nh, T, hs)
  const yT = transpose(y, [0, 2, 1, 3]); // (B, T, nh, hs)
  const merged = reshape(yT, [B * T, C]); // (B·T, C)
  return linear(merged, p, `${prefix}.c_proj`, bias);
}

export function mlp(x: Value, p: ParamLookup, prefix: string, bias = true): Value {
  const h = linear(x, p, `${prefix}.c_fc`, bias); // (B·T, C) @ (C, 4C) → (B·T, 4C)
  return linear(gelu(h, 'tanh'), p, `${prefix}.c_proj`, bias); // (B·T, 4C) @ (4C, C) → (B·T, C)
}

/** Pre-LN residual block: x + attn(ln_1(x)), then + mlp(ln_2(x)). */
export function block(x: Value, p: ParamLookup, prefix: string, s: AttentionShape, mask: Value, bias = true): Value {
  const a = add(x, causalSelfAttention(layerNormBlock(x, p, `${prefix}.ln_1`, bias), p, `${prefix}.attn`, s, mask, bias));
  return add(a, mlp(layerNormBlock(a, p, `${prefix}.ln_2`, bias), p, `${prefix}.mlp`, bias));
}

/** Additive causal mask (T, T): 0 where key ≤ query, -inf above the diagonal. */
export function causalMask(g: Graph, T: number): Value {
  const data = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) data[i * T + j] = -Infinity;
  return g.const({ dtype: 'float32', dims: [T, T], data }, 'causal_mask');
}
