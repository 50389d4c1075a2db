// safetensors read/write (https://github.com/huggingface/safetensors format):
//   8-byte little-endian header length N | N bytes of JSON header | tensor bytes.
// The header maps tensor name → { dtype, shape, data_offsets: [begin, end) } relative to the
// byte buffer after the header, plus an optional "__metadata__" string map. Files we write are
// readable by the Python `safetensors` package and vice versa.

import type { DType, TensorData, TypedArray } from '../graph/ir';
import { EngineError } from '../errors';
import { typedFromBytes } from '../graph/onnx-tensor';

const DTYPE_TO_ST: Partial<Record<DType, string>> = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  float64: 'F64',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};
const ST_TO_DTYPE = Object.fromEntries(Object.entries(DTYPE_TO_ST).map(([k, v]) => [v, k])) as Record<string, DType>;
const ST_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export class SafetensorsError extends EngineError {
  constructor(
    readonly file: string,
    readonly tensor: string | null,
    message: string,
  ) {
    super('corrupt', `${file}${tensor ? `: tensor "${tensor}"` : ''}: ${message}`);
  }
}

export interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface SafetensorsFile {
  tensors: Map<string, TensorData>;
  metadata: Record<string, string>;
}

/**
 * Serializes tensors (sorted by name, 8-byte aligned header as the reference writer does).
 * @example writeSafetensors(new Map([['wte', { dtype: 'float32', dims: [4, 2], data }]]), { step: '0' })
 */
export function writeSafetensors(tensors: Map<string, TensorData>, metadata: Record<string, string> = {}): Buffer {
  const names = [...tensors.keys()].sort();
  const header: Record<string, HeaderEntry | Record<string, string>> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    const st = DTYPE_TO_ST[t.dtype];
    if (!st) throw new SafetensorsError('<write>', name, `dtype ${t.dtype} has no safetensors encoding`);
    const bytes = byteView(t.data).byteLength;
    const expected = t.dims.reduce((a, b) => a * b, 1) * ST_BYTES[st];
    if (bytes !== expected) {
      throw new SafetensorsError('<write>', name, `${bytes} bytes of data for ${t.dtype}[${t.dims.join(', ')}] (expected ${expected})`);
    }
    header[name] = { dtype: st, shape: [...t.dims], data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so tensor data starts 8-byte aligned (as the Rust writer does).
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.allocUnsafe(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const src = byteView(tensors.get(name)!.data);
    out.set(src, pos);
    pos += src.byteLength;
  }
  return out;
}

/** The reference reader's bound on the JSON header (huggingface/safetensors MAX_HEADER_SIZE). */
export const MAX_HEADER_BYTES = 100_000_000;
const ENTRY_KEYS = new Set(['dtype', 'shape', 'data_offsets']);
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const show = (x: unknown): string => (x === undefined ? 'missing' : JSON.stringify(x));

/**
 * Parses a safetensors buffer; `file` names the source in every error. The input is untrusted
 * (a downloaded checkpoint or adapter), so it is validated as the reference reader does before any
 * byte is read as a weight: a bounded header that is a JSON object, a string→string
 * `__metadata__`, entries with exactly dtype/shape/data_offsets of the right types, a known dtype,
 * byte lengths that match the shapes, and tensors that tile the data buffer exactly (sorted by
 * offset: starting at 0, no overlap, no gap, nothing after the last one).
 */
export function readSafetensors(buf: Uint8Array, file = '<buffer>'): SafetensorsFile {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = headerLength(view.subarray(0, 8), buf.byteLength, file);
  const { entries, metadata } = parseSafetensorsHeader(view.subarray(8, 8 + n), buf.byteLength - 8 - n, file);
  const dataStart = 8 + n;
  const tensors = new Map<string, TensorData>();
  for (const [name, { dtype, shape, data_offsets: [begin, end] }] of entries) {
    // typedFromBytes copies, so the tensor is aligned and owns its memory.
    tensors.set(name, { dtype: ST_TO_DTYPE[dtype], dims: shape, data: typedFromBytes(ST_TO_DTYPE[dtype], buf.subarray(dataStart + begin, dataStart + end)) });
  }
  return { tensors, metadata };
}

/**
 * readSafetensors over a stream of `fileBytes` bytes, one tensor at a time: the header is checked
 * as readSafetensors checks it, then `each(name, tensor)` gets every tensor, in file order, as soon
 * as its bytes are in; only the tensor being filled is held. A stream shorter or longer than
 * `fileBytes` is a truncated or corrupt file.
 * @example await forEachSafetensor(stream, size, 'shard-0/model.safetensors', (name, t) => agg.addTensor(name, t.data))
 */
export async function forEachSafetensor(chunks: AsyncIterable<Uint8Array>, fileBytes: number, file: string, each: (name: string, tensor: TensorData) => void | Promise<void>): Promise<void> {
  const it = chunks[Symbol.asyncIterator]();
  let chunk: Uint8Array = new Uint8Array(0);
  let at = 0; // next unread byte of `chunk`
  let read = 0;
  /** Fills `out` from the stream; false when the stream ended first. */
  const fill = async (out: Uint8Array): Promise<boolean> => {
    let filled = 0;
    while (filled < out.length) {
      if (at === chunk.length) {
        const next = await it.next();
        if (next.done) return false;
        chunk = next.value;
        at = 0;
        read += chunk.length;
        if (read > fileBytes) throw new SafetensorsError(file, null, `more than the ${fileBytes} bytes expected`);
      }
      const n = Math.min(out.length - filled, chunk.length - at);
      out.set(chunk.subarray(at, at + n), filled);
      filled += n;
      at += n;
    }
    return true;
  };
  const truncated = () => new SafetensorsError(file, null, `truncated: the stream ended after ${read} of ${fileBytes} bytes`);
  const first8 = new Uint8Array(8);
  if (fileBytes >= 8 && !(await fill(first8))) throw truncated();
  const n = headerLength(first8, fileBytes, file);
  const json = new Uint8Array(n);
  if (!(await fill(json))) throw truncated();
  const { entries } = parseSafetensorsHeader(json, fileBytes - 8 - n, file);
  // The tiling check guarantees that, sorted by offset, the tensors follow one another exactly.
  for (const [name, { dtype, shape, data_offsets: [begin, end] }] of [...entries].sort(([, a], [, b]) => a.data_offsets[0] - b.data_offsets[0])) {
    const bytes = new Uint8Array(end - begin); // owns its buffer: the tensor is a view of it, no copy
    if (!(await fill(bytes))) throw truncated();
    await each(name, { dtype: ST_TO_DTYPE[dtype], dims: shape, data: typedFromBytes(ST_TO_DTYPE[dtype], bytes, false) });
  }
  if (at < chunk.length || !(await it.next()).done) throw new SafetensorsError(file, null, `more than the ${fileBytes} bytes expected`);
}

/** One tensor as a header describes it: its dtype (ours), shape and byte range in the data buffer. */
export interface SafetensorsEntry {
  dtype: DType;
  shape: number[];
  /** [begin, end) relative to the first byte after the header. */
  offsets: [number, number];
}

/**
 * The JSON header length from a file's first 8 bytes, checked against the reference reader's
 * bound and the file size (`fileBytes`).
 */
export function headerLength(first8: Uint8Array, fileBytes: number, file: string): number {
  if (first8.byteLength < 8 || fileBytes < 8) throw new SafetensorsError(file, null, `truncated: ${fileBytes} bytes, no header length`);
  const n64 = Buffer.from(first8.buffer, first8.byteOffset, 8).readBigUInt64LE(0);
  if (n64 > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(file, null, `header length ${n64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(n64);
  if (8 + n > fileBytes) throw new SafetensorsError(file, null, `truncated: header says ${n} bytes, file has ${fileBytes - 8}`);
  return n;
}

/**
 * Validates a header (the JSON bytes after the length) against a data buffer of `dataLen` bytes,
 * so a reader that streams tensors from disk checks exactly what readSafetensors checks.
 */
export function parseSafetensorsHeader(json: Uint8Array, dataLen: number, file: string): { entries: [string, HeaderEntry][]; metadata: Record<string, string>; tensors: Map<string, SafetensorsEntry> } {
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(json));
  } catch (e) {
    throw new SafetensorsError(file, null, `header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (!isObject(header)) throw new SafetensorsError(file, null, `header is ${Array.isArray(header) ? 'an array' : show(header)}, not a JSON object`);
  const entries: [string, HeaderEntry][] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') metadata = checkMetadata(file, raw);
    else entries.push([name, checkEntry(file, name, raw, dataLen)]);
  }
  checkTiling(file, entries, dataLen);
  const tensors = new Map(entries.map(([name, e]) => [name, { dtype: ST_TO_DTYPE[e.dtype], shape: e.shape, offsets: e.data_offsets }]));
  return { entries, metadata, tensors };
}

/** `__metadata__` is a string→string map (null, as the reference reader allows, means none). */
function checkMetadata(file: string, raw: unknown): Record<string, string> {
  if (raw === null) return {};
  if (!isObject(raw)) throw new SafetensorsError(file, null, `__metadata__ is ${show(raw)}, not a string→string map`);
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string') throw new SafetensorsError(file, null, `__metadata__ "${k}" is ${show(v)}, not a string`);
  }
  return Object.fromEntries(Object.entries(raw as Record<string, string>));
}

/** One header entry on its own: key set, dtype, shape, offsets within the data, byte length. */
function checkEntry(file: string, name: string, raw: unknown, dataLen: number): HeaderEntry {
  const fail = (msg: string): never => {
    throw new SafetensorsError(file, name, msg);
  };
  if (!isObject(raw)) return fail(`header entry is ${show(raw)}, not an object`);
  const extra = Object.keys(raw).filter((k) => !ENTRY_KEYS.has(k));
  if (extra.length > 0) fail(`unknown key ${extra.map((k) => JSON.stringify(k)).join(', ')} in header entry`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') return fail(`dtype ${show(dtype)} is not a string`);
  if (!Object.hasOwn(ST_BYTES, dtype)) fail(`unsupported dtype ${dtype}`);
  if (!Array.isArray(shape) || !shape.every(isCount)) return fail(`shape ${show(shape)} is not a list of non-negative integers`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    return fail(`data_offsets ${show(offsets)} are not two non-negative integers [begin, end]`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) fail(`data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataLen) fail(`truncated: data ends at ${end}, file has ${dataLen} data bytes`);
  // A float product loses precision (or reaches Infinity) only far above dataLen, which end - begin cannot reach.
  const expected = (shape as number[]).reduce((a, b) => a * b, 1) * ST_BYTES[dtype];
  if (end - begin !== expected) fail(`shape [${shape.join(', ')}] ${dtype} needs ${expected} bytes, offsets give ${end - begin}`);
  return { dtype, shape: shape as number[], data_offsets: [begin, end] };
}

/** Sorted by offset, the tensors must cover [0, dataLen) exactly: no overlap, no gap, no tail. */
function checkTiling(file: string, entries: [string, HeaderEntry][], dataLen: number): void {
  const sorted = [...entries].sort(([, a], [, b]) => a.data_offsets[0] - b.data_offsets[0] || a.data_offsets[1] - b.data_offsets[1]);
  let pos = 0;
  let prev: string | null = null;
  for (const [name, e] of sorted) {
    const [begin, end] = e.data_offsets;
    if (begin < pos) throw new SafetensorsError(file, name, `data_offsets [${begin}, ${end}] overlap tensor "${prev}" (which ends at ${pos})`);
    if (begin > pos) throw new SafetensorsError(file, name, `data_offsets [${begin}, ${end}] leave a gap: bytes [${pos}, ${begin}) belong to no tensor`);
    pos = end;
    prev = name;
  }
  if (pos !== dataLen) throw new SafetensorsError(file, null, `${dataLen - pos} bytes after the last tensor's data belong to no tensor`);
}

/** Checks that a tensor has the shape the model expects; the error names tensor and file. */
export function expectShape(file: string, name: string, t: TensorData | undefined, dims: number[]): TensorData {
  if (!t) throw new SafetensorsError(file, name, 'missing');
  if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
    throw new SafetensorsError(file, name, `shape [${t.dims.join(', ')}], model expects [${dims.join(', ')}]`);
  }
  return t;
}

function byteView(a: TypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
