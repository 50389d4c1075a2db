// One table of ops: each entry holds the forward shape rule and, next to it, the gradient rule
// (docs/ARCHITECTURE.md, "Where to add… an op"). Rule files under engine/autodiff/rules/
// register themselves here; engine/graph/index.ts imports them all so the table is complete.

import type { Attr, DType, Graph, Node, Shape, Value } from './ir';

export interface ValueInfo {
  dtype: DType;
  shape: Shape;
}

export interface GradContext {
  graph: Graph;
  node: Node;
  /** Forward inputs (null where the optional input was omitted). */
  inputs: (Value | null)[];
  outputs: Value[];
  /** Gradient of the loss w.r.t. each output; null when that output does not reach the loss. */
  gradOutputs: (Value | null)[];
  attrs: Record<string, Attr>;
  /** Which inputs need a gradient, so rules can skip work. */
  needsGrad: boolean[];
}

export interface OpDef {
  /** Output dtypes and shapes from the input values and normalized attributes. */
  infer(inputs: (Value | null)[], attrs: Record<string, Attr>, graph: Graph): ValueInfo[];
  /**
   * Gradient of the loss w.r.t. each input, appended to ctx.graph as ordinary ONNX ops.
   * Return null for inputs that have no gradient (indices, shapes). Absent: the op is not
   * differentiable and autodiff throws naming it.
   */
  grad?(ctx: GradContext): (Value | null)[];
}

const table = new Map<string, OpDef>();

const key = (opType: string, domain: string) => (domain && domain !== 'ai.onnx' ? `${domain}::${opType}` : opType);

export function registerOp(opType: string, def: OpDef, domain = ''): void {
  table.set(key(opType, domain), def);
}

export function lookupOp(opType: string, domain = ''): OpDef | undefined {
  return table.get(key(opType, domain));
}

export function registeredOps(): string[] {
  return [...table.keys()].sort();
}
