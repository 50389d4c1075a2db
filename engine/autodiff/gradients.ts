// Reverse-mode autodiff over the IR: appends the backward pass to the same graph as ordinary ONNX
// ops, using the gradient rule next to each op's shape rule (rules/*.ts).
//
// Only nodes on a path from some `wrt` value to the loss get a backward; a path only runs through
// float values, since integer and bool tensors (shapes, indices, masks) carry no gradient.

import type { Graph, Node, Value } from '../graph/ir';
import { lookupOp } from '../graph/registry';
import { isFloat, sameShape, scalarLike, zerosLike } from './rules/common';
import './rules';

export interface GradientOptions {
  /** What a `wrt` value that does not reach the loss gets: zeros of its shape (default) or an error. */
  unused?: 'zeros' | 'error';
  /** dL/dloss (default 1). Must have the loss's dtype and shape. */
  seed?: Value;
  /**
   * Activation checkpointing: node-index ranges [start, end) of the forward, disjoint and sorted,
   * whose values the backward recomputes instead of reading the forward's (see `Recompute`).
   */
  recompute?: { start: number; end: number }[];
  /** Called after each gradient rule with the forward node and the nodes its rule appended (mixed precision classes them by it). */
  onRule?: (node: Node, added: Node[]) => void;
}

/**
 * Appends the backward pass for `loss` (a scalar) and returns d loss / d v for every v in `wrt`,
 * keyed by the value's name.
 *
 * @example
 * const grads = gradients(g, loss, [w, b]);
 * g.output(grads.get('w')!, 'grad.w');
 */
export function gradients(graph: Graph, loss: Value, wrt: Value[], opts: GradientOptions = {}): Map<string, Value> {
  if (loss.graph !== graph) throw new Error(`gradients: loss ${loss.name} belongs to another graph`);
  if (!loss.shape || loss.shape.some((d) => d !== 1)) {
    throw new Error(`gradients: loss ${loss.name} must be a scalar, got shape ${loss.shape ? `[${loss.shape.join(', ')}]` : 'of unknown rank'}`);
  }
  if (!isFloat(loss.dtype)) throw new Error(`gradients: loss ${loss.name} has dtype ${loss.dtype}, expected a float`);
  for (const w of wrt) if (w.graph !== graph) throw new Error(`gradients: ${w.name} belongs to another graph`);

  const forward = [...graph.nodes]; // snapshot: the backward appends to graph.nodes
  const { reaches, onPath } = pathNodes(forward, wrt, loss);

  const contributions = new Map<string, Value[]>();
  const push = (name: string, v: Value) => {
    const list = contributions.get(name);
    if (list) list.push(v);
    else contributions.set(name, [v]);
  };
  const total = (name: string): Value | null => {
    const list = contributions.get(name);
    if (!list || list.length === 0) return null;
    // Collapse as we go, so a value read twice is summed once.
    const sum = list.length === 1 ? list[0] : list.length === 2 ? graph.op('Add', list)[0] : graph.op('Sum', list)[0];
    contributions.set(name, [sum]);
    return sum;
  };

  push(loss.name, opts.seed ?? onesLike(loss));
  const segments = segmentsOf(graph, forward, opts.recompute ?? []);
  let above: Recompute | null = null; // the recomputed segment whose backward ran last

  for (let i = forward.length - 1; i >= 0; i--) {
    const node = forward[i];
    if (!onPath.has(node)) continue;
    const gradOutputs = node.outputs.map((o) => (o ? total(o) : null));
    if (gradOutputs.every((d) => d === null)) continue;
    const def = lookupOp(node.opType, node.domain);
    if (!def?.grad) {
      throw new Error(`autodiff: op ${node.domain ? node.domain + '::' : ''}${node.opType} (node ${node.name}) has no gradient rule`);
    }
    // In a recomputed segment the rule reads the recomputation's values (see Recompute).
    const seg = segments.get(i);
    if (seg && !seg.gated) {
      seg.gate([...gradOutputs.filter((d): d is Value => d !== null), ...(above?.leafGrads ?? [])]);
      above = seg;
    }
    const view = (n: string): Value => (seg ? seg.value(n) : graph.value(n));
    const inputs = node.inputs.map((n) => (n ? view(n) : null));
    const needsGrad = node.inputs.map((n) => !!n && reaches.has(n));
    const before = graph.nodes.length;
    const grads = def.grad({
      graph,
      node,
      inputs,
      // An omitted optional output ('') has no value; rules test for it before use.
      outputs: node.outputs.map((n) => (n ? view(n) : (null as unknown as Value))),
      gradOutputs,
      attrs: node.attrs,
      needsGrad,
    });
    opts.onRule?.(node, graph.nodes.slice(before));
    node.inputs.forEach((n, k) => {
      const gx = grads[k];
      if (!n || !needsGrad[k] || !gx) return;
      const x = graph.value(n);
      checkGrad(node, x, gx);
      push(x.name, gx);
      if (seg && !seg.produces(n)) seg.leafGrads.push(gx);
    });
  }

  const out = new Map<string, Value>();
  for (const w of wrt) {
    const gw = total(w.name);
    if (gw) out.set(w.name, gw);
    else if (opts.unused === 'error') throw new Error(`gradients: ${w.name} does not reach loss ${loss.name}`);
    else out.set(w.name, zerosLike(w));
  }
  return out;
}

/**
 * One recomputed forward segment. Its values are rebuilt when the backward first asks for them,
 * by copies of their producer nodes appended there; the rule of a node gets copies of all its
 * inputs and outputs, and copies that no gradient ends up reading are dead nodes, which
 * `Graph.prune` removes (buildTrainStep does). Values the segment reads from earlier forward
 * nodes (its input activations) are read through `x + 0·Σ g[0]` (see `gate`): ONNX Runtime cannot
 * run the recomputation before those gradients exist (it would otherwise be free to run it next
 * to the forward and save nothing), and cannot fold the Add away (0·g is not a constant). The
 * result is x itself for finite g, so the recomputation repeats the forward's arithmetic bit for
 * bit; a non-finite gradient makes the step's gradients NaN, as it would have anyway.
 */
class Recompute {
  private readonly copies = new Map<string, Value>();
  private zero: Value | null = null;

  constructor(
    private readonly graph: Graph,
    private readonly producerIndex: Map<string, number>,
    private readonly start: number,
    private readonly end: number,
  ) {}

  /** Gradients this segment's backward gave to values it did not produce (its weights, its input): what the segment below waits for. */
  readonly leafGrads: Value[] = [];

  get gated(): boolean {
    return this.zero !== null;
  }

  /** Whether the segment's forward produced value `name`. */
  produces(name: string): boolean {
    const at = this.producerIndex.get(name);
    return at !== undefined && at >= this.start && at < this.end;
  }

  /**
   * Ties the recomputation to `grads`: the gradients arriving at the segment's outputs and every
   * gradient the segment above produced. The second half matters as much as the first: ONNX
   * Runtime orders nodes by a depth-first walk from the graph outputs, which would otherwise run
   * the input-gradient chain down to the embeddings first and the weight gradients of every block
   * last, keeping every recomputed activation alive until then.
   */
  gate(grads: Value[]): void {
    const g = this.graph;
    const d = grads[0];
    const firsts = grads
      .filter((x) => x.dtype === d.dtype)
      .map((x) => g.op('Slice', [g.op('Reshape', [x, g.vector([-1])])[0], g.vector([0]), g.vector([1])])[0]); // (1) each
    const sum = firsts.length === 1 ? firsts[0] : g.op('Sum', firsts)[0];
    this.zero = g.op('Mul', [sum, scalarLike(d, 0)])[0];
  }

  /** The segment's view of value `name`: recomputed when the segment produced it, gated when an earlier forward node did. */
  value(name: string): Value {
    const known = this.copies.get(name);
    if (known) return known;
    const g = this.graph;
    const orig = g.value(name);
    const at = this.producerIndex.get(name);
    let v: Value;
    if (at === undefined || at >= this.end) v = orig; // a graph input, an initializer, or (never on the backward's path) a later value
    else if (at < this.start) v = isFloat(orig.dtype) && this.zero ? this.gateValue(orig) : orig;
    else {
      this.recomputeNode(g.nodes[at]);
      v = this.copies.get(name)!;
    }
    this.copies.set(name, v);
    return v;
  }

  private gateValue(x: Value): Value {
    const zero = x.dtype === this.zero!.dtype ? this.zero! : this.graph.op('Cast', [this.zero!], { to: ONNX_FLOAT[x.dtype] })[0];
    return this.graph.op('Add', [x, zero])[0];
  }

  private recomputeNode(node: Node): void {
    if (Object.values(node.attrs).some((a) => a.type === 'graph')) {
      throw new Error(`autodiff: node ${node.name} (${node.opType}) has a subgraph and cannot be recomputed; leave it out of activation checkpointing`);
    }
    const g = this.graph;
    const inputs = node.inputs.map((n) => (n ? this.value(n).name : ''));
    const outputs = node.outputs.map((o) => (o ? g.uniqueName(`${o}.rc`) : ''));
    const infos = node.outputs.map((o) => (o ? { dtype: g.value(o).dtype, shape: g.value(o).shape } : { dtype: 'float32' as const, shape: null }));
    const made = g.addNode({ ...node, name: `${node.name}.rc`, inputs, outputs }, infos);
    let k = 0;
    node.outputs.forEach((o) => {
      if (o) this.copies.set(o, made[k++]);
    });
  }
}

const ONNX_FLOAT: Record<string, number> = { float32: 1, float16: 10, float64: 11, bfloat16: 16 };

/** Forward node index → the Recompute of the segment it lies in. */
function segmentsOf(graph: Graph, forward: Node[], ranges: { start: number; end: number }[]): Map<number, Recompute> {
  const out = new Map<number, Recompute>();
  if (ranges.length === 0) return out;
  const producerIndex = new Map<string, number>();
  forward.forEach((n, i) => n.outputs.forEach((o) => o && producerIndex.set(o, i)));
  let prevEnd = 0;
  for (const r of ranges) {
    if (!(Number.isInteger(r.start) && Number.isInteger(r.end) && r.start >= prevEnd && r.end > r.start && r.end <= forward.length)) {
      throw new Error(`gradients: recompute ranges must be disjoint, sorted and inside the forward's ${forward.length} nodes, got [${r.start}, ${r.end})`);
    }
    prevEnd = r.end;
    const seg = new Recompute(graph, producerIndex, r.start, r.end);
    for (let i = r.start; i < r.end; i++) out.set(i, seg);
  }
  return out;
}

/** Nodes lying on a float path from any wrt value to the loss, and the values wrt reaches. */
function pathNodes(nodes: Node[], wrt: Value[], loss: Value): { reaches: Set<string>; onPath: Set<Node> } {
  const graph = loss.graph;
  const reaches = new Set(wrt.filter((w) => isFloat(w.dtype)).map((w) => w.name));
  for (const node of nodes) {
    if (!node.inputs.some((n) => n && reaches.has(n))) continue;
    for (const o of node.outputs) if (o && isFloat(graph.value(o).dtype)) reaches.add(o);
  }
  const feedsLoss = new Set([loss.name]);
  const onPath = new Set<Node>();
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (!node.outputs.some((o) => feedsLoss.has(o) && reaches.has(o))) continue;
    onPath.add(node);
    for (const n of node.inputs) if (n) feedsLoss.add(n);
  }
  return { reaches, onPath };
}

/** A rule that returns a gradient of the wrong dtype or static shape is a bug in that rule. */
function checkGrad(node: Node, x: Value, gx: Value): void {
  if (gx.dtype !== x.dtype) throw new Error(`autodiff: ${node.opType} (node ${node.name}) gave ${gx.dtype} gradient for ${x.dtype} input ${x.name}`);
  const staticBoth = x.shape && gx.shape && [...x.shape, ...gx.shape].every((d) => typeof d === 'number');
  if (staticBoth && !sameShape(x.shape, gx.shape)) {
    throw new Error(`autodiff: ${node.opType} (node ${node.name}) gave gradient [${gx.shape}] for input ${x.name} [${x.shape}]`);
  }
}

function onesLike(loss: Value): Value {
  const one = scalarLike(loss, 1);
  return loss.shape!.length === 0 ? one : loss.graph.op('Reshape', [one, loss.graph.vector(loss.shape as number[])])[0];
}
