// What every transformer model here shares: the parameter-spec / init machinery, the Conv1D-layout
// Linear, LayerNorm and the causal mask. GPT's attention, MLP and block are in gpt.ts; the
// torch-layout layers of BERT and T5 in layers.ts.
//
// Models never create weights themselves: they read them through a `ParamLookup`, so the same
// builder makes an inference graph (weights as initializers), a training-step graph (weights as
// `param:<name>` inputs) or a LoRA graph (frozen base + adapters).

import type { Graph, Value } from '../graph/ir';
import { add, layerNorm, matmul } from '../graph/ops';
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

/** Additive causal mask (T, T): 0 where key ≤ query, -inf above the diagonal. */
export function causalMask(g: Graph, T: number): Value {
  const data = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) data[i * T + j] = -Infinity;
  return g.const({ dtype: 'float32', dims: [T, T], data }, 'causal_mask');
}
