// ONNX bytes or file -> IR Graph: inputs, outputs, initializers (external data resolved relative
// to the model file), nodes with attributes (Loop/If bodies become nested Graphs) and value_info
// shapes. Nodes go in through `graph.addNode`, so ops without a shape rule still load.
// A model file is untrusted input: an external-data reference must stay inside the model's folder
// and inside its side file, or loading fails with an ExternalDataError naming model and tensor.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { EngineError } from '../errors';
import { Graph, type Attr, type Node, type Shape, type TensorData, type Value } from './ir';
import { lookupOp, type ValueInfo } from './registry';
import { byteSize, dtypeFromOnnx, inlineTensorBytes, toNumber, typedFromBytes } from './onnx-tensor';

export interface LoadOptions {
  /** Folder that external-data locations are relative to (default: the model file's folder). */
  baseDir?: string;
  /** In-memory side files by location, for models given as bytes (e.g. from serializeModel). */
  external?: Record<string, Uint8Array>;
}

/**
 * Values whose dtype the loader had to guess (no value_info and no shape rule for the producing
 * op). The serializer writes no value_info for them, so a guess never reaches ORT as a claim.
 */
const guessed = new WeakMap<Graph, Set<string>>();

export function hasGuessedType(g: Graph, name: string): boolean {
  return guessed.get(g)?.has(name) ?? false;
}

/** Marks `name` of `g` as guessed (a pass that copies a loaded graph's values into another graph keeps the mark). */
export function markGuessedType(g: Graph, name: string): void {
  let set = guessed.get(g);
  if (!set) guessed.set(g, (set = new Set()));
  set.add(name);
}

interface LoadContext {
  baseDir: string | null;
  external: Record<string, Uint8Array>;
  fds: Map<string, number>;
  /** Where the model came from, for error messages. */
  source: string;
}

function shapeOf(t: onnx.ITypeProto | null | undefined, g: Graph): Shape {
  const s = t?.tensorType?.shape;
  if (!s) return null;
  return (s.dim ?? []).map((d) => {
    if (d.dimParam) return d.dimParam;
    // A dim with neither value nor param is unknown; give it a name no other dim of g has.
    return d.dimValue !== null && d.dimValue !== undefined ? toNumber(d.dimValue) : g.freshDim('unk');
  });
}

function infoOf(vi: onnx.IValueInfoProto, where: string, g: Graph): ValueInfo {
  const tt = vi.type?.tensorType;
  if (!tt) throw new Error(`${where}: value "${vi.name}" is not a tensor (sequences, maps and optionals are not supported)`);
  return { dtype: dtypeFromOnnx(tt.elemType ?? 0, `${where}: value "${vi.name}"`), shape: shapeOf(vi.type, g) };
}

/** A tensor's external-data reference is unsafe or inconsistent; names the model and the tensor. */
export class ExternalDataError extends EngineError {
  constructor(
    readonly model: string,
    readonly tensor: string,
    message: string,
  ) {
    super('corrupt', `${model}: tensor "${tensor}": ${message}`);
  }
}

/**
 * The side file a location names must sit in the model's folder or below it: no absolute path
 * (POSIX, Windows drive or UNC), no `..` segment, nothing that is not a plain relative name.
 */
function checkLocation(location: string, fail: (msg: string) => never): void {
  const what = `external data location "${location}"`;
  if (location.includes('\0')) fail(`${what} contains a NUL character`);
  if (path.posix.isAbsolute(location) || path.win32.isAbsolute(location) || /^[A-Za-z]:/.test(location)) {
    fail(`${what} is absolute; it must be relative to the model file`);
  }
  if (location.split(/[\\/]/).includes('..')) fail(`${what} has a ".." segment; it must stay inside the model's folder`);
}

/** An external-data offset or length: a decimal string of a non-negative safe integer. */
function byteCount(key: string, raw: string | undefined, def: number, fail: (msg: string) => never): number {
  if (raw === undefined) return def;
  const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n)) fail(`external data ${key} "${raw}" is not a non-negative integer`);
  return n;
}

function readExternal(p: onnx.ITensorProto, ctx: LoadContext, nbytes: number): Uint8Array {
  const fail = (msg: string): never => {
    throw new ExternalDataError(ctx.source, p.name ?? '', msg);
  };
  const entries = new Map((p.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const location = entries.get('location');
  if (!location) return fail('has external data without a location');
  checkLocation(location, fail);
  const offset = byteCount('offset', entries.get('offset'), 0, fail);
  const length = byteCount('length', entries.get('length'), nbytes, fail);
  if (length !== nbytes) fail(`external length ${length} != ${nbytes} bytes for its shape`);
  const past = (size: number) => `external data [${offset}, ${offset + length}) reads past the end of ${location} (${size} bytes)`;
  if (Object.hasOwn(ctx.external, location)) {
    const inMemory = ctx.external[location];
    if (offset + length > inMemory.length) fail(past(inMemory.length));
    return Uint8Array.prototype.slice.call(inMemory, offset, offset + length);
  }
  if (ctx.baseDir === null) fail(`is in external file ${location}; pass options.external or load from a path`);
  const baseDir = ctx.baseDir as string;
  const file = path.join(baseDir, location);
  let fd = ctx.fds.get(file);
  if (fd === undefined) {
    if (!fs.existsSync(file)) throw new ExternalDataError(ctx.source, p.name ?? '', `external data file ${file} does not exist`);
    // A symlink may not lead out of the model's folder either.
    const real = fs.realpathSync(file);
    const rel = path.relative(fs.realpathSync(baseDir), real);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) fail(`external data location "${location}" resolves to ${real}, outside the model's folder`);
    if (!fs.statSync(real).isFile()) fail(`external data location "${location}" is not a regular file`);
    fd = fs.openSync(file, 'r');
    ctx.fds.set(file, fd);
  }
  const size = fs.fstatSync(fd).size;
  if (offset + length > size) fail(past(size));
  const out = new Uint8Array(length); // own buffer, offset 0: typed views need no copy
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, out, done, length - done, offset + done);
    if (n === 0) fail(`external file ${file} ends before the tensor (offset ${offset}, length ${length})`);
    done += n;
  }
  return out;
}

function tensorFromProto(p: onnx.ITensorProto, ctx: LoadContext): TensorData {
  const what = `${ctx.source}: tensor "${p.name ?? ''}"`;
  if (p.segment) throw new Error(`${what}: segmented tensors are not supported`);
  const dtype = dtypeFromOnnx(p.dataType ?? 0, what);
  const dims = (p.dims ?? []).map(toNumber);
  const count = dims.reduce((a, b) => a * b, 1);
  const nbytes = byteSize(dtype, count);
  if (p.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    const bytes = readExternal(p, ctx, nbytes);
    return { dtype, dims, data: typedFromBytes(dtype, bytes, false) };
  }
  const bytes = inlineTensorBytes(p, dtype, count);
  if (bytes.length !== nbytes) throw new Error(`${what}: ${bytes.length} bytes of ${dtype} data for shape [${dims.join(', ')}]`);
  return { dtype, dims, data: typedFromBytes(dtype, bytes) };
}

function attrFromProto(a: onnx.IAttributeProto, node: string, scope: Graph[], ctx: LoadContext): Attr | null {
  const T = onnx.AttributeProto.AttributeType;
  const name = a.name ?? '';
  if (a.refAttrName) return null; // only meaningful inside FunctionProto bodies, which we do not load
  switch (a.type) {
    case T.INT:
      return { type: 'int', value: toNumber(a.i) };
    case T.FLOAT:
      return { type: 'float', value: a.f ?? 0 };
    case T.STRING:
      return { type: 'string', value: Buffer.from(a.s ?? new Uint8Array(0)).toString('utf8') };
    case T.INTS:
      return { type: 'ints', value: (a.ints ?? []).map(toNumber) };
    case T.FLOATS:
      return { type: 'floats', value: [...(a.floats ?? [])] };
    case T.STRINGS:
      return { type: 'strings', value: (a.strings ?? []).map((s) => Buffer.from(s).toString('utf8')) };
    case T.TENSOR:
      return { type: 'tensor', value: tensorFromProto(a.t ?? {}, ctx) };
    case T.GRAPH:
      return { type: 'graph', value: graphFromProto(a.g ?? {}, new Graph(a.g?.name || `${node}_${name}`), scope, ctx) };
    default:
      throw new Error(`${ctx.source}: node "${node}" attribute "${name}" has type ${a.type}, which the TruthGPT IR does not support`);
  }
}

/** A value visible from `scope[0]`: its own values first, then enclosing graphs (Loop/If bodies). */
function lookup(scope: Graph[], name: string): Value | null {
  for (const g of scope) {
    const v = g.values.get(name);
    if (v) return v;
  }
  return null;
}

function outputInfos(node: Node, g: Graph, scope: Graph[], infos: Map<string, ValueInfo>): ValueInfo[] {
  const known = node.outputs.map((o) => (o ? infos.get(o) : undefined));
  if (known.every((k, i) => k || !node.outputs[i])) return known.map((k) => k ?? { dtype: 'float32', shape: null });
  const def = lookupOp(node.opType, node.domain);
  const inputs = node.inputs.map((n) => (n ? lookup(scope, n) : null));
  let inferred: ValueInfo[] = [];
  if (def && inputs.every((v, i) => v || !node.inputs[i])) {
    try {
      inferred = def.infer(inputs, node.attrs, g);
    } catch {
      inferred = []; // a rule that cannot handle this node's form: fall back to value_info / guess
    }
  }
  const guess = inputs.find((v) => v)?.dtype ?? 'float32';
  return node.outputs.map((o, i) => {
    if (known[i]) return known[i];
    if (inferred[i]) return inferred[i];
    if (o) {
      let set = guessed.get(g);
      if (!set) guessed.set(g, (set = new Set()));
      set.add(o);
    }
    return { dtype: guess, shape: null };
  });
}

function graphFromProto(gp: onnx.IGraphProto, g: Graph, outer: Graph[], ctx: LoadContext): Graph {
  const where = `${ctx.source}: graph "${gp.name ?? g.name}"`;
  const scope = [g, ...outer];
  // Names for unknown dims must not alias the file's own dim_params or an enclosing graph's dims.
  const declared = [...(gp.input ?? []), ...(gp.valueInfo ?? []), ...(gp.output ?? [])];
  g.reserveDims(declared.flatMap((vi) => (vi.type?.tensorType?.shape?.dim ?? []).map((d) => d.dimParam ?? '').filter((p) => p)));
  for (const o of outer) for (const v of o.values.values()) g.reserveDims((v.shape ?? []).filter((d): d is string => typeof d === 'string'));
  for (const t of gp.initializer ?? []) g.initializer(t.name ?? '', tensorFromProto(t, ctx));
  if ((gp.sparseInitializer ?? []).length > 0) throw new Error(`${where}: sparse initializers are not supported`);
  for (const vi of gp.input ?? []) {
    // IR < 4 lists every initializer as an input too; the initializer already declares it.
    if (g.initializers.has(vi.name ?? '')) continue;
    const info = infoOf(vi, where, g);
    g.input(vi.name ?? '', info.dtype, info.shape);
  }
  const infos = new Map<string, ValueInfo>();
  for (const vi of [...(gp.valueInfo ?? []), ...(gp.output ?? [])]) {
    if (vi.type?.tensorType) infos.set(vi.name ?? '', infoOf(vi, where, g));
  }
  for (const np of gp.node ?? []) {
    const name = np.name ?? '';
    const attrs: Record<string, Attr> = {};
    for (const a of np.attribute ?? []) {
      const attr = attrFromProto(a, name || (np.opType ?? ''), scope, ctx);
      if (attr) attrs[a.name ?? ''] = attr;
    }
    const domain = np.domain === 'ai.onnx' ? '' : (np.domain ?? '');
    const node: Node = { opType: np.opType ?? '', domain, name, inputs: [...(np.input ?? [])], outputs: [...(np.output ?? [])], attrs };
    g.addNode(node, outputInfos(node, g, scope, infos));
  }
  for (const vi of gp.output ?? []) {
    const v = lookup(scope, vi.name ?? '');
    if (!v) throw new Error(`${where}: output "${vi.name}" is produced by no node, input or initializer`);
    g.outputs.push(v);
  }
  return g;
}

/** Builds a Graph from ONNX bytes or a model file path (external data resolved next to it). */
export function loadModel(src: Uint8Array | string, opts: LoadOptions = {}): Graph {
  const fromPath = typeof src === 'string';
  const bytes = fromPath ? fs.readFileSync(src) : src;
  const source = fromPath ? src : 'model bytes';
  let proto: onnx.ModelProto;
  try {
    proto = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new Error(`${source}: not an ONNX model (${(e as Error).message})`);
  }
  if (!proto.graph) throw new Error(`${source}: ONNX model has no graph`);
  const ctx: LoadContext = {
    baseDir: opts.baseDir ?? (fromPath ? path.dirname(src) : null),
    external: opts.external ?? {},
    fds: new Map(),
    source,
  };
  const g = new Graph(proto.graph.name || 'truthgpt');
  g.opsets.clear();
  for (const o of proto.opsetImport ?? []) g.opsets.set(o.domain === 'ai.onnx' ? '' : (o.domain ?? ''), toNumber(o.version));
  try {
    return graphFromProto(proto.graph, g, [], ctx);
  } catch (e) {
    // Every error names the model it came from (a tensor's own errors know only the tensor).
    if (e instanceof Error && !e.message.startsWith(source)) e.message = `${source}: ${e.message}`;
    throw e;
  } finally {
    for (const fd of ctx.fds.values()) fs.closeSync(fd);
  }
}
