// IR Graph -> ONNX ModelProto bytes (via onnx-proto/protobufjs), optionally with weights in one
// external-data side file so models larger than protobuf's 2 GB limit can be saved and loaded.
// The loader (ONNX -> Graph) lives in onnx-load.ts; `loadModel` is re-exported here.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import type { Attr, Graph, TensorData, Value } from './ir';
import { hasGuessedType } from './onnx-load';
import { onnxDType, tensorBytes, tensorToProto } from './onnx-tensor';

export { ExternalDataError, loadModel, type LoadOptions } from './onnx-load';

/** IR version 10 (ONNX 1.16): needed for opset 21+, and what ORT 1.30 reads natively. */
export const IR_VERSION = 10;
/** ONNX requires external-data offsets aligned for mmap; 4096 is the page size ORT expects. */
export const EXTERNAL_ALIGNMENT = 4096;

export interface ExternalDataOptions {
  /** Side-file name, relative to the model file (ONNX forbids absolute locations). */
  location: string;
  /** Tensors of at least this many bytes go to the side file (default 1024, like onnx.save). */
  sizeThreshold?: number;
}

export interface SerializeOptions {
  externalData?: ExternalDataOptions;
  /** 'all' (default) also writes value_info for every intermediate value; 'io' only inputs/outputs. */
  valueInfo?: 'all' | 'io';
  producerName?: string;
  docString?: string;
}

export interface SerializedModel {
  model: Uint8Array;
  /** The side file's bytes when externalData was requested and some tensor went out. */
  external?: Uint8Array;
}

/** One tensor's bytes placed in the side file. */
interface ExternalChunk {
  offset: number;
  bytes: Uint8Array;
}

interface ExternalPlan {
  location: string;
  threshold: number;
  chunks: ExternalChunk[];
  length: number;
}

function valueInfo(v: Value): onnx.IValueInfoProto {
  const tensorType: onnx.TypeProto.ITensor = { elemType: onnxDType(v.dtype) };
  // No shape field at all means "rank unknown"; an empty dim list would mean "scalar".
  if (v.shape) tensorType.shape = { dim: v.shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) };
  return { name: v.name, type: { tensorType } };
}

function tensorProto(name: string, t: TensorData, ext: ExternalPlan | null): onnx.ITensorProto {
  const bytes = tensorBytes(t);
  if (!ext || bytes.length < ext.threshold) return tensorToProto(name, t);
  const offset = Math.ceil(ext.length / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
  ext.chunks.push({ offset, bytes });
  ext.length = offset + bytes.length;
  return {
    name,
    dims: t.dims,
    dataType: onnxDType(t.dtype),
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: ext.location },
      { key: 'offset', value: String(offset) },
      { key: 'length', value: String(bytes.length) },
    ],
  };
}

function attrProto(name: string, a: Attr, ext: ExternalPlan | null, opts: SerializeOptions): onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.type) {
    case 'int':
      return { name, type: T.INT, i: a.value };
    case 'float':
      return { name, type: T.FLOAT, f: a.value };
    case 'string':
      return { name, type: T.STRING, s: Buffer.from(a.value, 'utf8') };
    case 'ints':
      return { name, type: T.INTS, ints: a.value };
    case 'floats':
      return { name, type: T.FLOATS, floats: a.value };
    case 'strings':
      return { name, type: T.STRINGS, strings: a.value.map((s) => Buffer.from(s, 'utf8')) };
    case 'tensor':
      // Constant-node payloads stay inline: ORT resolves external data for initializers only.
      return { name, type: T.TENSOR, t: tensorToProto('', a.value) };
    case 'graph':
      return { name, type: T.GRAPH, g: graphProto(a.value, ext, opts) };
  }
}

function graphProto(g: Graph, ext: ExternalPlan | null, opts: SerializeOptions): onnx.IGraphProto {
  const outputNames = new Set(g.outputs.map((v) => v.name));
  const inputNames = new Set(g.inputs.map((v) => v.name));
  const intermediates: onnx.IValueInfoProto[] = [];
  if ((opts.valueInfo ?? 'all') === 'all') {
    for (const n of g.nodes) {
      for (const o of n.outputs) {
        if (!o || outputNames.has(o) || inputNames.has(o)) continue;
        const v = g.values.get(o);
        if (v && !hasGuessedType(g, o)) intermediates.push(valueInfo(v));
      }
    }
  }
  return {
    name: g.name,
    node: g.nodes.map((n) => ({
      name: n.name,
      opType: n.opType,
      domain: n.domain,
      input: trimOptionalTail(n.inputs),
      output: n.outputs,
      attribute: Object.entries(n.attrs).map(([k, a]) => attrProto(k, a, ext, opts)),
    })),
    initializer: [...g.initializers.values()].map((t) => tensorProto(t.name, t, ext)),
    input: g.inputs.map(valueInfo),
    output: g.outputs.map(valueInfo),
    valueInfo: intermediates,
  };
}

/**
 * Drops trailing '' (omitted optional) inputs. ONNX reads them as absent either way, but ORT 1.30
 * crashes the process (SIGSEGV) on e.g. LayerNormalization(x, scale, '').
 */
function trimOptionalTail(inputs: string[]): string[] {
  let n = inputs.length;
  while (n > 0 && inputs[n - 1] === '') n--;
  return n === inputs.length ? inputs : inputs.slice(0, n);
}

/** Every domain used by a node (subgraphs included) must be imported by the model. */
function collectDomains(g: Graph, into: Set<string>): void {
  for (const n of g.nodes) {
    into.add(n.domain);
    for (const a of Object.values(n.attrs)) if (a.type === 'graph') collectDomains(a.value, into);
  }
}

function planFor(opts: SerializeOptions): ExternalPlan | null {
  const e = opts.externalData;
  if (!e) return null;
  if (path.isAbsolute(e.location) || e.location.split(/[\\/]/).includes('..')) {
    throw new Error(`externalData.location "${e.location}" must be a path relative to the model file, inside its folder`);
  }
  return { location: e.location, threshold: e.sizeThreshold ?? 1024, chunks: [], length: 0 };
}

/** The ModelProto (as a protobufjs message object) for `graph`, plus the side-file layout. */
function buildModel(graph: Graph, opts: SerializeOptions): { proto: onnx.IModelProto; ext: ExternalPlan | null } {
  const ext = planFor(opts);
  const domains = new Set<string>();
  collectDomains(graph, domains);
  const opsets = new Map(graph.opsets);
  for (const d of domains) if (!opsets.has(d === 'ai.onnx' ? '' : d)) opsets.set(d, 1);
  const proto: onnx.IModelProto = {
    irVersion: IR_VERSION,
    producerName: opts.producerName ?? 'truthgpt',
    opsetImport: [...opsets].map(([domain, version]) => ({ domain, version })),
    graph: graphProto(graph, ext, opts),
  };
  if (opts.docString) proto.docString = opts.docString;
  return { proto, ext };
}

/** The ModelProto message for `graph` (weights inline or, with externalData, as references). */
export function toModelProto(graph: Graph, opts: SerializeOptions = {}): onnx.IModelProto {
  return buildModel(graph, opts).proto;
}

function encode(proto: onnx.IModelProto, graph: Graph): Uint8Array {
  try {
    return onnx.ModelProto.encode(proto).finish();
  } catch (e) {
    throw new Error(`serializing graph ${graph.name}: ${(e as Error).message} (models over 2 GB need externalData)`);
  }
}

/** Serializes `graph` to ONNX bytes; with externalData, large weights go to `external`. */
export function serializeModel(graph: Graph, opts: SerializeOptions = {}): SerializedModel {
  const { proto, ext } = buildModel(graph, opts);
  const model = encode(proto, graph);
  if (!ext || ext.chunks.length === 0) return { model };
  const external = new Uint8Array(ext.length);
  for (const c of ext.chunks) external.set(c.bytes, c.offset);
  return { model, external };
}

/**
 * Writes `graph` to `file` (and the side file next to it when externalData is set). The side file
 * is written tensor by tensor at its offsets, so it never has to fit in one buffer.
 */
export function saveModel(graph: Graph, file: string, opts: SerializeOptions = {}): { modelPath: string; externalPath?: string } {
  const { proto, ext } = buildModel(graph, opts);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, encode(proto, graph));
  if (!ext || ext.chunks.length === 0) return { modelPath: file };
  const externalPath = path.join(path.dirname(file), ext.location);
  fs.mkdirSync(path.dirname(externalPath), { recursive: true });
  const fd = fs.openSync(externalPath, 'w');
  try {
    for (const c of ext.chunks) {
      let done = 0;
      while (done < c.bytes.length) done += fs.writeSync(fd, c.bytes, done, c.bytes.length - done, c.offset + done);
    }
    fs.ftruncateSync(fd, ext.length);
  } finally {
    fs.closeSync(fd);
  }
  return { modelPath: file, externalPath };
}
