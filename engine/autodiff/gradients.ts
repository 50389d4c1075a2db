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

  for (let i = forward.length - 1; i >= 0; i--) {
    const node = forward[i];
    if (!onPath.has(node)) continue;
    const gradOutputs = node.outputs.map((o) => (o ? total(o) : null));
    if (gradOutputs.every((d) => d === null)) continue;
    const def = lookupOp(node.opType, node.domain);
    if (!def?.grad) {
      throw new Error(`autodiff: op ${node.domain ? node.domain + '::' : ''}${node.opType} (node ${node.name}) has no gradient rule`);
    }
    const inputs = node.inputs.map((n) => (n ? graph.value(n) : null));
    const needsGrad = inputs.map((x) => !!x && reaches.has(x.name));
    const grads = def.grad({
      graph,
      node,
      inputs,
      // An omitted optional output ('') has no value; rules test for it before use.
      outputs: node.outputs.map((n) => (n ? graph.value(n) : (null as unknown as Value))),
      gradOutputs,
      attrs: node.attrs,
      needsGrad,
    });
    inputs.forEach((x, k) => {
      const gx = grads[k];
      if (!x || !needsGrad[k] || !gx) return;
      checkGrad(node, x, gx);
      push(x.name, gx);
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
