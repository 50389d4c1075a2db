// Which linear layers get adapters. A "linear site" is a MatMul or Gemm node whose second input
// is a 2-D weight (a parameter of our models, or an initializer of an imported .onnx file); the
// module name is the weight's name without `.weight`, or, for exports that renamed the weight
// (torch.onnx writes `onnx::MatMul_303`), the node's scope path (`/bert/encoder/layer.0/
// attention/self/query/MatMul` → `bert.encoder.layer.0.attention.self.query`).
//
// Selection follows PEFT: a list entry matches a name that equals it or ends with `.<entry>`, a
// string is a full-match regex, `all-linear` takes every site except the output head.

import type { Graph, Node } from '../graph/ir';
import { EngineError } from '../errors';
import { DEFAULT_TARGETS, type LoraConfig } from './config';

export interface LinearSite {
  module: string;
  node: Node;
  /** Graph value holding the base weight. */
  weight: string;
  inFeatures: number;
  outFeatures: number;
  /** The stored weight is (in, out) (MatMul, GPT-2 Conv1D, Gemm transB=0) rather than torch's (out, in). */
  weightInOut: boolean;
  /** Produces the model's output (LM head / classifier) or reuses an embedding table. */
  isHead: boolean;
}

/** Maps a weight value of `node` to its module name, or null when it is not a weight. */
export type ModuleNamer = (weight: string, node: Node) => string | null;

/** Ops a head's output may pass through on its way to a graph output or the loss. */
const PASS_THROUGH = new Set(['Add', 'Reshape', 'Identity', 'Transpose', 'Flatten', 'Squeeze', 'Unsqueeze', 'Cast']);
const LOSS_OPS = new Set(['SoftmaxCrossEntropyLoss', 'NegativeLogLikelihoodLoss']);

/** Every MatMul/Gemm in `g` whose weight `namer` recognises, in graph order. */
export function findLinearSites(g: Graph, namer: ModuleNamer): LinearSite[] {
  const consumers = new Map<string, Node[]>();
  for (const n of g.nodes) for (const i of n.inputs) if (i) (consumers.get(i) ?? consumers.set(i, []).get(i)!).push(n);
  const outputs = new Set(g.outputs.map((v) => v.name));
  const sites: LinearSite[] = [];
  const seen = new Map<string, number>();
  for (const node of g.nodes) {
    if (node.opType !== 'MatMul' && node.opType !== 'Gemm') continue;
    if (node.domain) continue;
    const weight = node.inputs[1];
    const w = weight ? g.values.get(weight) : undefined;
    if (!w || !w.shape || w.shape.length !== 2 || w.shape.some((d) => typeof d !== 'number')) continue;
    if (node.opType === 'Gemm' && intAttr(node, 'transA') === 1) continue; // x stored transposed: not a layer we know
    let module = namer(weight, node);
    if (module === null) continue;
    const k = seen.get(module) ?? 0;
    seen.set(module, k + 1);
    if (k > 0) module = `${module}_${k}`; // one scope with two weight matmuls: keep names unique
    const [d0, d1] = w.shape as number[];
    const weightInOut = node.opType === 'MatMul' || intAttr(node, 'transB') !== 1;
    const tied = (consumers.get(weight) ?? []).some((c) => c.opType === 'Gather');
    sites.push({
      module,
      node,
      weight,
      inFeatures: weightInOut ? d0 : d1,
      outFeatures: weightInOut ? d1 : d0,
      weightInOut,
      isHead: tied || reachesOutput(node.outputs[0], consumers, outputs),
    });
  }
  return sites;
}

function reachesOutput(start: string, consumers: Map<string, Node[]>, outputs: Set<string>): boolean {
  const stack = [start];
  const visited = new Set<string>();
  while (stack.length) {
    const v = stack.pop()!;
    if (visited.has(v)) continue;
    visited.add(v);
    if (outputs.has(v)) return true;
    for (const c of consumers.get(v) ?? []) {
      if (LOSS_OPS.has(c.opType) && c.inputs[0] === v) return true;
      if (PASS_THROUGH.has(c.opType)) stack.push(...c.outputs.filter((o) => o));
    }
  }
  return false;
}

function intAttr(node: Node, name: string): number {
  const a = node.attrs[name];
  return a && a.type === 'int' ? a.value : 0;
}

/** Module name from a torch.onnx scope path: `/bert/encoder/layer.0/attention/self/query/MatMul` → `bert.encoder.layer.0.attention.self.query`. */
export function moduleFromNodeName(nodeName: string): string | null {
  const parts = nodeName.split('/').filter((p) => p.length > 0);
  if (parts.length < 2) return null;
  return parts.slice(0, -1).join('.');
}

/** Names for an imported graph: `<name>.weight` initializers by name, renamed ones by node scope. */
export const importedNamer =
  (g: Graph): ModuleNamer =>
  (weight, node) => {
    if (!g.initializers.has(weight)) return null;
    if (weight.endsWith('.weight')) return weight.slice(0, -'.weight'.length);
    return moduleFromNodeName(node.name) ?? weight;
  };

/**
 * The sites `cfg.target_modules` picks (or the family default). Nothing matching is an error that
 * names the pattern and lists the modules that exist.
 */
export function selectTargets(sites: LinearSite[], cfg: Pick<LoraConfig, 'target_modules' | 'family'>): LinearSite[] {
  const spec = cfg.target_modules ?? (cfg.family ? DEFAULT_TARGETS[cfg.family] : undefined);
  if (spec === undefined) {
    throw new EngineError('config', 'lora.target_modules: required when lora.family is not set (gpt, bert or t5 pick PEFT defaults)');
  }
  let picked: LinearSite[];
  if (spec === 'all-linear') picked = sites.filter((s) => !s.isHead);
  else if (typeof spec === 'string') {
    const re = new RegExp(`^(?:${spec})$`);
    picked = sites.filter((s) => re.test(s.module));
  } else picked = sites.filter((s) => spec.some((t) => s.module === t || s.module.endsWith(`.${t}`)));
  if (picked.length === 0) {
    const names = sites.map((s) => s.module);
    const shown = names.length > 12 ? `${names.slice(0, 12).join(', ')}, … (${names.length} in all)` : names.join(', ');
    throw new EngineError('config', `lora.target_modules: ${JSON.stringify(spec)} matches no linear layer; linear layers are: ${shown || '(none)'}`);
  }
  return picked;
}
