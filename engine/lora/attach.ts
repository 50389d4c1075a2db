// Attaching adapters: a rewrite of the graph's linear sites. Each MatMul/Gemm y = x·W (+ b) becomes
//
//     y = x·W (+ b) + s·(drop(x)·Aᵀ)·Bᵀ          A (r, in), B (out, r), s = alpha/r or alpha/√r
//
// computed as two thin GEMMs (N·in·r + N·r·out flops), never as x·(W + s·BᵀAᵀ): the r×in and
// out×r adapters are all the backward touches, and A·B is never materialized. The base node keeps
// its weight input (a `frozen:` input or an initializer), so nothing about W is trainable.
//
// The rewrite is in place and keeps names: the base node's output is renamed and the adapter's Add
// takes over the original output name, so consumers, graph outputs and the loss are untouched,
// and node order stays topological (the new nodes are spliced right after the base node).
// One mechanism serves both our model builders and imported .onnx graphs.

import { seededDropout } from '../autodiff/dropout';
import type { Graph, Node, Value } from '../graph/ir';
import { gemm, matmul, mul, scalar, transpose } from '../graph/ops';
import type { LinearSite } from './targets';

export interface AdapterValues {
  /** lora_A, PEFT layout (r, in). */
  A: Value;
  /** lora_B, PEFT layout (out, r). */
  B: Value;
}

export interface AttachOptions {
  /** alpha/r or alpha/√r (see loraScale). */
  scale: number;
  /** Training only: dropout on the adapter's input, masks a function of (seed, step, site index). */
  dropout?: { ratio: number; seed: Value; step: Value };
}

/** Rewrites every site of `sites` in `g` to add its adapter's low-rank update. */
export function attachAdapters(g: Graph, sites: LinearSite[], adapterOf: (site: LinearSite) => AdapterValues, opts: AttachOptions): void {
  sites.forEach((site, k) => {
    const idx = g.nodes.indexOf(site.node);
    if (idx < 0) throw new Error(`lora: node ${site.node.name} of module ${site.module} is not in graph ${g.name}`);
    const { A, B } = adapterOf(site);
    checkAdapter(site, A, B);
    const y = site.node.outputs[0];
    const yv = g.value(y);
    // Re-add the base node under a new output name; the adapter's Add then declares `y` itself.
    g.nodes.splice(idx, 1);
    g.values.delete(y);
    const start = g.nodes.length;
    const baseNode: Node = { ...site.node, outputs: [g.uniqueName(`${y}.lora_base`)] };
    const [base] = g.addNode(baseNode, [{ dtype: yv.dtype, shape: yv.shape }]);
    const x0 = g.value(site.node.inputs[0]);
    const x = opts.dropout && opts.dropout.ratio > 0 ? seededDropout(x0, opts.dropout.ratio, opts.dropout.seed, opts.dropout.step, k + 1) : x0;
    const delta = lowRankDelta(x, A, B, opts.scale * gemmAlpha(site.node));
    const out = g.op('Add', [base, delta], {}, { outputNames: [y], name: `${site.node.name || site.module}.lora_add` })[0];
    const added = g.nodes.splice(start);
    g.nodes.splice(idx, 0, ...added);
    const o = g.outputs.indexOf(yv);
    if (o >= 0) g.outputs[o] = out;
  });
}

/** s·(x·Aᵀ)·Bᵀ with x (..., in); shape (..., out). */
function lowRankDelta(x: Value, A: Value, B: Value, s: number): Value {
  if (x.shape && x.shape.length === 2) {
    // Gemm reads A and B in place (transB) and folds s into alpha: no transposed copies, no extra Mul.
    const xa = gemm(x, A, null, { transB: true }); // (N, in) @ (r, in)ᵀ → (N, r)
    return gemm(xa, B, null, { transB: true, alpha: s }); // (N, r) @ (out, r)ᵀ → (N, out)
  }
  // Batched activations (HF exports keep (B, T, C)): transpose the small adapters, not x.
  const xa = matmul(x, transpose(A, [1, 0])); // (..., in) @ (in, r) → (..., r)
  return matmul(xa, mul(transpose(B, [1, 0]), scalar(B, s))); // (..., r) @ (r, out) → (..., out)
}

function gemmAlpha(node: Node): number {
  if (node.opType !== 'Gemm') return 1;
  const a = node.attrs.alpha;
  return a && (a.type === 'float' || a.type === 'int') ? a.value : 1;
}

function checkAdapter(site: LinearSite, A: Value, B: Value): void {
  const a = A.shape;
  const b = B.shape;
  const r = a?.[0];
  if (!a || a.length !== 2 || a[1] !== site.inFeatures) {
    throw new Error(`lora: ${A.name} must be (r, ${site.inFeatures}) for module ${site.module}, got [${a?.join(', ')}]`);
  }
  if (!b || b.length !== 2 || b[0] !== site.outFeatures || b[1] !== r) {
    throw new Error(`lora: ${B.name} must be (${site.outFeatures}, ${r}) for module ${site.module}, got [${b?.join(', ')}]`);
  }
}
