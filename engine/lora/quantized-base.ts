// A frozen base in int8 under LoRA (QLoRA-style, `lora.baseQuantization: 'int8'`): every base
// linear layer y = x·W that reads a frozen weight becomes
//
//     y = DynamicQuantizeMatMul(x, Wq, s)        Wq int8 (in, out), s (out): W ≈ Wq·diag(s)
//
// with Wq and s initializers of the step graph, so the float W is neither an input nor kept by the
// session. Its gradient rule (engine/quant/rules.ts) runs the input gradient on a transposed int8
// copy, dx = (dy ⊙ s)·Wqᵀ; the adapters stay float32 and see the quantized base's activations.
// The adapters' own Gemms are untouched, and so are embeddings and a tied head (they are not
// MatMuls on a 2-D weight).
//
// Quantization is symmetric per output channel (engine/quant/weights.ts, the post-training int8
// path's quantizer); the kernel is com.microsoft.DynamicQuantizeMatMul, the faster int8 form on
// ORT CPU (bench/RESULTS.md, issue 7).

import type { Graph } from '../graph/ir';
import '../quant/rules';
import { quantizeInt8PerChannel } from '../quant/weights';
import { findLinearSites, type ModuleNamer } from './targets';

const MS = 'com.microsoft';

/**
 * Rewrites, in place, every MatMul of `g` whose weight `weightOf` knows (a frozen base weight, by
 * graph value name) into an int8 DynamicQuantizeMatMul over initializers. Returns the value names
 * of the weights it replaced, which the graph then no longer reads.
 * @example quantizeFrozenLinears(g, (v) => (v.startsWith('frozen:') ? weights.get(v.slice(7)) : undefined))
 */
export function quantizeFrozenLinears(g: Graph, weightOf: (value: string) => Float32Array | undefined): string[] {
  const namer: ModuleNamer = (weight) => (weightOf(weight) ? weight : null);
  const replaced = new Set<string>();
  for (const site of findLinearSites(g, namer)) {
    const node = site.node;
    if (node.opType !== 'MatMul') continue; // Gemm sites (transposed or scaled weights) stay float
    const W = weightOf(site.weight)!;
    const [K, N] = [site.inFeatures, site.outFeatures];
    if (W.length !== K * N) throw new Error(`lora.baseQuantization: weight ${site.weight} has ${W.length} values, expected ${K}×${N}`);
    const { q, scale } = quantizeInt8PerChannel(W, K, N);
    const stem = site.weight.replace(/^frozen:/, '');
    const wq = g.initializer(g.uniqueName(`${stem}.int8`), { dtype: 'int8', dims: [K, N], data: q }); // (in, out)
    const ws = g.initializer(g.uniqueName(`${stem}.scale`), { dtype: 'float32', dims: [N], data: scale }); // (out)
    // Same node object, new op: its outputs, its place in the graph and every consumer stay.
    node.opType = 'DynamicQuantizeMatMul';
    node.domain = MS;
    node.inputs = [node.inputs[0], wq.name, ws.name]; // (..., in) @ (in, out) → (..., out)
    replaced.add(site.weight);
  }
  if (replaced.size && !g.opsets.has(MS)) g.opsets.set(MS, 1);
  return [...replaced];
}
