// Merging adapters into the base for export: W' = W + s·ΔW with ΔW = B·A (out, in), stored as the
// base stores W — transposed for (in, out) weights (GPT-2 Conv1D, MatMul initializers). The merged
// model is the plain base architecture again: no adapter ops, no extra latency at inference.
// Done in float64 accumulation over r, then rounded once to float32.

import type { Graph } from '../graph/ir';
import { loraAName, loraBName } from './config';
import type { LoraModule, LoraPlan } from './model';

/** Adds s·B·A into `w` (row-major, `m`'s layout) in place. */
export function addLowRank(w: Float32Array, m: LoraModule, A: Float32Array, B: Float32Array, r: number, scale: number): void {
  const { inFeatures: nIn, outFeatures: nOut } = m;
  if (w.length !== nIn * nOut) throw new Error(`lora merge: weight ${m.weight} has ${w.length} elements, expected ${nOut}×${nIn}`);
  if (A.length !== r * nIn) throw new Error(`lora merge: ${loraAName(m.module)} has ${A.length} elements, expected (${r}, ${nIn})`);
  if (B.length !== nOut * r) throw new Error(`lora merge: ${loraBName(m.module)} has ${B.length} elements, expected (${nOut}, ${r})`);
  for (let o = 0; o < nOut; o++) {
    for (let i = 0; i < nIn; i++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += B[o * r + k] * A[k * nIn + i]; // (out, r) @ (r, in)
      const at = m.weightInOut ? i * nOut + o : o * nIn + i;
      w[at] = w[at] + scale * acc;
    }
  }
}

function adapterPair(adapters: Map<string, Float32Array>, m: LoraModule): [Float32Array, Float32Array] {
  const A = adapters.get(loraAName(m.module));
  const B = adapters.get(loraBName(m.module));
  if (!A || !B) throw new Error(`lora merge: adapter tensors for module ${m.module} are missing (${!A ? loraAName(m.module) : loraBName(m.module)})`);
  return [A, B];
}

function checkSharedWeights(plan: LoraPlan): void {
  const seen = new Map<string, string>();
  for (const m of plan.modules) {
    const other = seen.get(m.weight);
    // Two adapters on one shared weight cannot both be folded into it without changing the other use.
    if (other) throw new Error(`lora merge: modules ${other} and ${m.module} share weight ${m.weight}; keep them unmerged`);
    seen.set(m.weight, m.module);
  }
}

/**
 * Merged copies of the base weights (our models): every adapted weight gets s·ΔW, the others are
 * passed through by reference. The input map is not modified.
 */
export function mergeWeights(base: Map<string, Float32Array>, plan: LoraPlan, adapters: Map<string, Float32Array>): Map<string, Float32Array> {
  checkSharedWeights(plan);
  const out = new Map(base);
  for (const m of plan.modules) {
    const w = base.get(m.weight);
    if (!w) throw new Error(`lora merge: base weight ${m.weight} (module ${m.module}) is missing`);
    const merged = Float32Array.from(w);
    const [A, B] = adapterPair(adapters, m);
    addLowRank(merged, m, A, B, plan.config.r, plan.scale);
    out.set(m.weight, merged);
  }
  return out;
}

/** Merges into the initializers of an imported graph, in place (load a fresh copy to keep the base). */
export function mergeIntoGraph(g: Graph, plan: LoraPlan, adapters: Map<string, Float32Array>): void {
  checkSharedWeights(plan);
  for (const m of plan.modules) {
    const init = g.initializers.get(m.weight);
    if (!init) throw new Error(`lora merge: graph ${g.name} has no initializer ${m.weight} (module ${m.module})`);
    if (init.dtype !== 'float32') throw new Error(`lora merge: initializer ${m.weight} is ${init.dtype}; only float32 weights merge`);
    const w = init.data instanceof Float32Array ? Float32Array.from(init.data) : new Float32Array(init.data.buffer.slice(init.data.byteOffset, init.data.byteOffset + init.data.byteLength));
    const [A, B] = adapterPair(adapters, m);
    addLowRank(w, m, A, B, plan.config.r, plan.scale);
    init.data = w;
  }
}
