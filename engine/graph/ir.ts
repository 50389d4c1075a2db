// The graph IR: a typed, append-only ONNX graph under construction.
//
// A `Value` is a symbolic tensor (name, dtype, shape with symbolic dims). `g.op(...)` appends a
// node and runs the op's shape rule from the registry, so every value carries its dtype and shape
// as soon as it exists. Serialization to ONNX lives in `onnx.ts`; this file has no protobuf in it.

import { lookupOp } from './registry';

export type DType =
  | 'float32'
  | 'float16'
  | 'bfloat16'
  | 'float64'
  | 'int64'
  | 'int32'
  | 'int16'
  | 'int8'
  | 'uint8'
  | 'uint4'
  | 'int4'
  | 'bool';

/** A dimension is a number when known, a string when symbolic ("batch", "seq"). */
export type Dim = number | string;
/** `null` when the rank itself is unknown (rare: ops with data-dependent output rank). */
export type Shape = Dim[] | null;

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int32Array
  | BigInt64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array;

export interface TensorData {
  dtype: DType;
  dims: number[];
  /** Raw little-endian bytes or a typed array of the matching element type. */
  data: TypedArray;
}

export type Attr =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'string'; value: string }
  | { type: 'ints'; value: number[] }
  | { type: 'floats'; value: number[] }
  | { type: 'strings'; value: string[] }
  | { type: 'tensor'; value: TensorData }
  | { type: 'graph'; value: Graph };

/**
 * What callers may pass as an attribute. Plain numbers are ints when integral, floats otherwise;
 * wrap with `f()` to force a float (`alpha: f(1)`), or pass a full `Attr`.
 */
export type AttrInput = number | string | number[] | string[] | Attr | Graph | TensorData;

export interface Node {
  opType: string;
  domain: string; // '' for ai.onnx, 'com.microsoft' for contrib ops
  name: string;
  inputs: string[]; // '' marks an omitted optional input
  outputs: string[];
  attrs: Record<string, Attr>;
}

export interface Value {
  readonly graph: Graph;
  readonly name: string;
  dtype: DType;
  shape: Shape;
}

export interface Initializer extends TensorData {
  name: string;
}

/**
 * A labelled run of consecutive nodes (one transformer block, say), kept by its first and last
 * node rather than by index, so a pass that splices nodes into the middle (LoRA's attach) keeps it
 * whole. Serialization ignores regions; activation checkpointing recomputes them (autodiff).
 */
export interface Region {
  name: string;
  first: Node;
  last: Node;
}

export interface OpOptions {
  domain?: string;
  /** Number of outputs (default 1). */
  outputs?: number;
  /** Node name; a unique one is generated when absent. */
  name?: string;
  /** Explicit output names (default: generated from the node name). */
  outputNames?: string[];
}

export const f = (value: number): Attr => ({ type: 'float', value });
export const ints = (value: number[]): Attr => ({ type: 'ints', value });
export const floats = (value: number[]): Attr => ({ type: 'floats', value });

export function normalizeAttr(name: string, v: AttrInput): Attr {
  if (v instanceof Graph) return { type: 'graph', value: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { type: 'int', value: v } : { type: 'float', value: v };
  if (typeof v === 'string') return { type: 'string', value: v };
  if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === 'string') return { type: 'strings', value: v as string[] };
    const nums = v as number[];
    return nums.every(Number.isInteger) ? { type: 'ints', value: nums } : { type: 'floats', value: nums };
  }
  if ('type' in v && 'value' in v) return v as Attr;
  if ('dims' in v && 'data' in v) return { type: 'tensor', value: v as TensorData };
  throw new Error(`attribute ${name}: unsupported value ${JSON.stringify(v)}`);
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers = new Map<string, Initializer>();
  readonly values = new Map<string, Value>();
  /** Labelled node runs, in the order they were closed (see `region`). */
  readonly regions: Region[] = [];
  /** Opset imports: domain → version. */
  readonly opsets = new Map<string, number>([['', 23]]);
  private counter = 0;
  /** Next number for freshDim; per graph, so the same build always yields the same names. */
  private dimCounter = 0;
  /** Every symbolic dim name a value of this graph uses or freshDim handed out. */
  private readonly dimNames = new Set<string>();
  /** Producer node of each value (graph inputs and initializers have none). */
  private readonly producers = new Map<string, Node>();

  constructor(readonly name = 'truthgpt') {}

  /** A fresh name with the given stem, unique in this graph. */
  uniqueName(stem: string): string {
    let name = stem;
    while (this.values.has(name) || this.initializers.has(name)) name = `${stem}_${++this.counter}`;
    return name;
  }

  /**
   * A symbolic dim for a size no rule can name (`<stem>_<n>`). n counts per graph from 0, never
   * process-wide, so building the same graph twice gives the same names (and the same ONNX bytes);
   * a name some value of this graph already uses is skipped, so a fresh dim never aliases another.
   */
  freshDim(stem = 'unk'): string {
    let name: string;
    do name = `${stem}_${this.dimCounter++}`;
    while (this.dimNames.has(name));
    this.dimNames.add(name);
    return name;
  }

  /**
   * Runs `build` and records the nodes it appended as the region `name` (nothing when it appended
   * none). Regions may nest; a pass that uses them picks the names it knows.
   * @example const y = g.region('block:h.0', () => block(x, p, 0, cfg, ctx));
   */
  region<T>(name: string, build: () => T): T {
    const start = this.nodes.length;
    const out = build();
    if (this.nodes.length > start) this.regions.push({ name, first: this.nodes[start], last: this.nodes[this.nodes.length - 1] });
    return out;
  }

  /** Node-index range [start, end) a region covers now, or an error naming it when a pass removed its first or last node. */
  regionRange(r: Region): { start: number; end: number } {
    const start = this.nodes.indexOf(r.first);
    const last = this.nodes.indexOf(r.last);
    if (start < 0 || last < start) throw new Error(`graph ${this.name}: region ${r.name} lost its first or last node (a pass removed or reordered it)`);
    return { start, end: last + 1 };
  }

  /** Marks dim names as taken (the ONNX loader reserves a file's dim_params before naming unknown dims). */
  reserveDims(names: Iterable<string>): void {
    for (const n of names) this.dimNames.add(n);
  }

  /** Registers a value (used by ops, inputs and the ONNX loader). */
  declare(name: string, dtype: DType, shape: Shape): Value {
    if (this.values.has(name)) throw new Error(`graph ${this.name}: value "${name}" already exists`);
    for (const d of shape ?? []) if (typeof d === 'string') this.dimNames.add(d);
    const v: Value = { graph: this, name, dtype, shape };
    this.values.set(name, v);
    return v;
  }

  value(name: string): Value {
    const v = this.values.get(name);
    if (!v) throw new Error(`graph ${this.name}: no value named "${name}"`);
    return v;
  }

  /**
   * Gives the node output `name` the name `to` (a fresh one) everywhere: its producer, every node
   * reading it, the values. Graph outputs are not renamed: call before marking `name` an output.
   */
  renameValue(name: string, to: string): Value {
    const v = this.value(name);
    if (this.outputs.some((o) => o.name === name)) throw new Error(`graph ${this.name}: cannot rename graph output "${name}"`);
    const node = this.producers.get(name);
    if (!node) throw new Error(`graph ${this.name}: "${name}" is not a node output`);
    const out = this.declare(to, v.dtype, v.shape);
    this.values.delete(name);
    this.producers.delete(name);
    this.producers.set(to, node);
    node.outputs = node.outputs.map((o) => (o === name ? to : o));
    for (const n of this.nodes) if (n.inputs.includes(name)) n.inputs = n.inputs.map((x) => (x === name ? to : x));
    return out;
  }

  producer(name: string): Node | undefined {
    return this.producers.get(name);
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    const v = this.declare(name, dtype, shape);
    this.inputs.push(v);
    return v;
  }

  /** A named weight or constant stored in the model file. */
  initializer(name: string, t: TensorData): Value {
    if (this.initializers.has(name)) throw new Error(`graph ${this.name}: initializer "${name}" already exists`);
    const count = t.dims.reduce((a, b) => a * b, 1);
    const perByte = t.dtype === 'int4' || t.dtype === 'uint4' ? 0.5 : 1;
    if (!(t.data instanceof Uint8Array) || t.dtype === 'uint8' || t.dtype === 'bool') {
      if (t.data.length !== count) {
        throw new Error(`initializer ${name}: ${t.data.length} elements for shape [${t.dims.join(', ')}] (${count})`);
      }
    } else if (t.data.length !== Math.ceil(count * perByte * bytesPerElement(t.dtype))) {
      throw new Error(`initializer ${name}: ${t.data.length} bytes for ${t.dtype} shape [${t.dims.join(', ')}]`);
    }
    this.initializers.set(name, { name, ...t });
    return this.declare(name, t.dtype, [...t.dims]);
  }

  /** An unnamed constant initializer; small helper for scalars and shape vectors. */
  const(t: TensorData, stem = 'const'): Value {
    return this.initializer(this.uniqueName(stem), t);
  }

  scalar(x: number, dtype: DType = 'float32'): Value {
    return this.const(tensor(dtype, [], [x]), 'scalar');
  }

  vector(xs: number[], dtype: DType = 'int64'): Value {
    return this.const(tensor(dtype, [xs.length], xs), 'vec');
  }

  output(v: Value, name?: string): Value {
    if (v.graph !== this) throw new Error(`value ${v.name} belongs to another graph`);
    let out = v;
    if (name && name !== v.name) out = this.op('Identity', [v], {}, { outputNames: [name] })[0];
    this.outputs.push(out);
    return out;
  }

  /**
   * Appends one node. Inputs may be `null` for omitted optional inputs. The op's shape rule
   * (registry) computes output dtypes and shapes; an op without a rule is an error that names it.
   */
  op(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrInput> = {}, opts: OpOptions = {}): Value[] {
    const domain = opts.domain ?? '';
    for (const x of inputs) if (x && x.graph !== this) throw new Error(`${opType}: input ${x.name} belongs to another graph`);
    const normalized: Record<string, Attr> = {};
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined) normalized[k] = normalizeAttr(k, v);
    const def = lookupOp(opType, domain);
    if (!def) throw new Error(`op ${domain ? domain + '.' : ''}${opType} has no shape rule in engine/graph/registry`);
    const nodeName = opts.name ?? this.uniqueNodeName(opType);
    const infos = def.infer(inputs, normalized, this);
    const nOut = opts.outputs ?? infos.length;
    const names = opts.outputNames ?? Array.from({ length: nOut }, (_, i) => this.uniqueName(`${nodeName}_out${i}`));
    const node: Node = { opType, domain, name: nodeName, inputs: inputs.map((x) => (x ? x.name : '')), outputs: names, attrs: normalized };
    const outs = names.map((n, i) => {
      const info = infos[i] ?? { dtype: infos[0].dtype, shape: null };
      return this.declare(n, info.dtype, info.shape);
    });
    this.nodes.push(node);
    for (const n of names) this.producers.set(n, node);
    if (domain && !this.opsets.has(domain)) this.opsets.set(domain, 1);
    return outs;
  }

  /** Appends a node that was already built (ONNX loader); declares outputs with the given infos. */
  addNode(node: Node, outputs: { dtype: DType; shape: Shape }[]): Value[] {
    const outs = node.outputs.map((n, i) => (n === '' ? null : this.declare(n, outputs[i].dtype, outputs[i].shape)));
    this.nodes.push(node);
    for (const n of node.outputs) if (n) this.producers.set(n, node);
    return outs.filter((v): v is Value => v !== null);
  }

  /**
   * Removes every node no graph output depends on (a gradient rule's branch for an input that
   * needs none, say), and the initializers only those nodes read; returns how many nodes went.
   * ONNX Runtime runs such nodes anyway, after everything else, so each would keep the
   * activations it reads alive to the end of the run. Regions that lose a boundary node are dropped.
   */
  prune(): number {
    const needed = new Set(this.outputs.map((v) => v.name));
    const keep = new Set<Node>();
    const readBy = (n: Node): string[] => [...n.inputs, ...Object.values(n.attrs).flatMap((a) => (a.type === 'graph' ? subgraphReads(a.value) : []))];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      if (!n.outputs.some((o) => o && needed.has(o))) continue;
      keep.add(n);
      for (const x of readBy(n)) if (x) needed.add(x);
    }
    const removed = this.nodes.length - keep.size;
    if (removed === 0) return 0;
    for (const n of this.nodes) {
      if (keep.has(n)) continue;
      for (const o of n.outputs) {
        if (!o) continue;
        this.values.delete(o);
        this.producers.delete(o);
      }
    }
    const kept = this.nodes.filter((n) => keep.has(n));
    this.nodes.splice(0, this.nodes.length, ...kept);
    for (const name of [...this.initializers.keys()]) {
      if (!needed.has(name)) {
        this.initializers.delete(name);
        this.values.delete(name);
      }
    }
    const live = this.regions.filter((r) => keep.has(r.first) && keep.has(r.last));
    this.regions.splice(0, this.regions.length, ...live);
    return removed;
  }

  private uniqueNodeName(opType: string): string {
    return `${opType}_${this.nodes.length}`;
  }
}

/** Every value name a subgraph's nodes read (its own and outer-scope ones alike), nested subgraphs included. */
function subgraphReads(g: Graph): string[] {
  return g.nodes.flatMap((n) => [...n.inputs, ...Object.values(n.attrs).flatMap((a) => (a.type === 'graph' ? subgraphReads(a.value) : []))]);
}

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case 'float64':
    case 'int64':
      return 8;
    case 'float32':
    case 'int32':
      return 4;
    case 'float16':
    case 'bfloat16':
    case 'int16':
      return 2;
    case 'int8':
    case 'uint8':
    case 'bool':
      return 1;
    case 'int4':
    case 'uint4':
      return 1; // packed two per byte; callers halve the count
  }
}

/** Builds TensorData from plain numbers; int64 goes to BigInt64Array. */
export function tensor(dtype: DType, dims: number[], values: ArrayLike<number>): TensorData {
  let data: TypedArray;
  switch (dtype) {
    case 'float32':
      data = Float32Array.from(values);
      break;
    case 'float64':
      data = Float64Array.from(values);
      break;
    case 'int64':
      data = BigInt64Array.from(Array.from(values, (x) => BigInt(Math.trunc(x))));
      break;
    case 'int32':
      data = Int32Array.from(values);
      break;
    case 'int8':
      data = Int8Array.from(values);
      break;
    case 'uint8':
    case 'bool':
      data = Uint8Array.from(values);
      break;
    default:
      throw new Error(`tensor(): build ${dtype} data from raw bytes instead`);
  }
  return { dtype, dims, data };
}

/** Product of known dims, or null when any dim is symbolic. */
export function numel(shape: Shape): number | null {
  if (!shape) return null;
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number') return null;
    n *= d;
  }
  return n;
}
