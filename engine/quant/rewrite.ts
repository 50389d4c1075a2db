// Finding the Linear layers a quantizer may touch, and rebuilding a graph with some of them
// replaced. A "site" is a MatMul or Gemm whose weight is a constant float32 matrix; every method
// sees it in one normalized form, x (..., K) @ W (K, N) (+ bias), whatever the original layout.

import type { Graph, Node, Value } from '../graph/ir';
import { Graph as GraphClass } from '../graph/ir';
import { byteSize } from '../graph/onnx-tensor';

export interface LinearSite {
  node: Node;
  /** Activation input (..., K). */
  x: string;
  /** Initializer holding the weight. */
  weightName: string;
  /** Weight as (K, N) row-major, transposed from Gemm's transB layout where needed. */
  W: Float32Array;
  K: number;
  N: number;
  /** Gemm's C input (bias), added after the quantized product. */
  bias: string | null;
  output: string;
}

export interface SkippedSite {
  node: string;
  reason: string;
}

function attrNum(n: Node, name: string, def: number): number {
  const a = n.attrs[name];
  return a && (a.type === 'int' || a.type === 'float') ? a.value : def;
}

/** (rows, cols) row-major → (cols, rows). */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c];
  return out;
}

/**
 * MatMul/Gemm nodes with a constant 2-D float32 weight, minus the excluded ones (regexes over the
 * weight and node names). Nodes that look like Linears but cannot be handled are listed with why.
 */
export function findLinearSites(g: Graph, exclude: string[]): { sites: LinearSite[]; skipped: SkippedSite[] } {
  const res = exclude.map((e) => new RegExp(e));
  const sites: LinearSite[] = [];
  const skipped: SkippedSite[] = [];
  for (const node of g.nodes) {
    if (node.domain !== '' || (node.opType !== 'MatMul' && node.opType !== 'Gemm')) continue;
    const w = g.initializers.get(node.inputs[1]);
    if (!w) continue; // activation × activation (attention scores): nothing to quantize offline
    const why = (reason: string) => skipped.push({ node: node.name, reason });
    if (res.some((r) => r.test(w.name) || r.test(node.name))) {
      why(`excluded (weight ${w.name})`);
      continue;
    }
    if (w.dtype !== 'float32' || w.dims.length !== 2) {
      why(`weight ${w.name} is ${w.dtype} [${w.dims.join(', ')}], not a float32 matrix`);
      continue;
    }
    const data = w.data as Float32Array;
    let W = data;
    let [K, N] = w.dims;
    let bias: string | null = null;
    if (node.opType === 'Gemm') {
      if (attrNum(node, 'transA', 0) !== 0 || attrNum(node, 'alpha', 1) !== 1 || (node.inputs[2] && attrNum(node, 'beta', 1) !== 1)) {
        why('Gemm with transA, alpha or beta other than the Linear form');
        continue;
      }
      if (attrNum(node, 'transB', 0) === 1) {
        [N, K] = w.dims;
        W = transpose2d(data, N, K);
      }
      bias = node.inputs[2] || null;
    }
    sites.push({ node, x: node.inputs[0], weightName: w.name, W, K, N, bias, output: node.outputs[0] });
  }
  return { sites, skipped };
}

/** Emits the quantized replacement of one site into `out`; returns the (..., N) float product without bias. */
export type SiteEmitter = (site: LinearSite, out: Graph, x: Value) => Value;

/**
 * A new graph equal to `src` except that each site's node is replaced by what `emit` builds (plus
 * the Gemm bias). Original value names are kept, so outputs and downstream nodes are untouched;
 * weights read only by replaced nodes are dropped.
 */
export function rewriteSites(src: Graph, sites: LinearSite[], emit: SiteEmitter): Graph {
  const it = rewriting(src, sites, emit);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

/**
 * rewriteSites, awaiting `onSite(done, of)` after each rewritten Linear: a caller that yields there
 * lets its event loop breathe (heartbeats, cancellation) while a large model is quantized.
 */
export async function rewriteSitesAsync(src: Graph, sites: LinearSite[], emit: SiteEmitter, onSite: (done: number, of: number) => void | Promise<void>): Promise<Graph> {
  const it = rewriting(src, sites, emit);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
    await onSite(r.value, sites.length);
  }
}

/** The rewrite, yielding the number of Linears done after each one. */
function* rewriting(src: Graph, sites: LinearSite[], emit: SiteEmitter): Generator<number, Graph> {
  let done = 0;
  const out = new GraphClass(src.name);
  out.opsets.clear();
  for (const [d, v] of src.opsets) out.opsets.set(d, v);
  const bySite = new Map(sites.map((s) => [s.node, s]));
  const used = new Set<string>(src.outputs.map((v) => v.name));
  for (const n of src.nodes) {
    const site = bySite.get(n);
    const reads = site ? [site.x, ...(site.bias ? [site.bias] : [])] : n.inputs;
    for (const i of reads) used.add(i);
    for (const a of Object.values(n.attrs)) if (a.type === 'graph') for (const name of outerReads(a.value)) used.add(name);
  }
  for (const [name, t] of src.initializers) if (used.has(name)) out.initializer(name, t);
  for (const v of src.inputs) out.input(v.name, v.dtype, v.shape);
  for (const n of src.nodes) {
    const site = bySite.get(n);
    if (!site) {
      out.addNode({ ...n, inputs: [...n.inputs], outputs: [...n.outputs] }, n.outputs.map((o) => infoOf(src, o)));
      continue;
    }
    const y = emit(site, out, out.value(site.x));
    const name = `${n.name}/q_out`;
    if (site.bias) out.op('Add', [y, out.value(site.bias)], {}, { name, outputNames: [site.output] });
    else out.op('Identity', [y], {}, { name, outputNames: [site.output] });
    yield ++done;
  }
  for (const v of src.outputs) out.outputs.push(out.value(v.name));
  return out;
}

function infoOf(g: Graph, name: string): { dtype: Value['dtype']; shape: Value['shape'] } {
  const v = g.values.get(name);
  return v ? { dtype: v.dtype, shape: v.shape } : { dtype: 'float32', shape: null };
}

/** Names a subgraph (Loop/If body) reads from enclosing scopes. */
function outerReads(body: Graph): string[] {
  const own = new Set<string>([...body.inputs.map((v) => v.name), ...body.initializers.keys()]);
  for (const n of body.nodes) for (const o of n.outputs) own.add(o);
  const reads: string[] = [];
  for (const n of body.nodes) for (const i of n.inputs) if (i && !own.has(i)) reads.push(i);
  return reads;
}

/** Bytes of all initializers: the weight payload of a saved model. */
export function weightBytes(g: Graph): number {
  let n = 0;
  for (const t of g.initializers.values()) n += byteSize(t.dtype, t.dims.reduce((a, b) => a * b, 1));
  return n;
}
