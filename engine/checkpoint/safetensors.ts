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

interface HeaderEntry {
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

/** Parses a safetensors buffer; `file` names the source in every error. */
export function readSafetensors(buf: Uint8Array, file = '<buffer>'): SafetensorsFile {
  if (buf.byteLength < 8) throw new SafetensorsError(file, null, `truncated: ${buf.byteLength} bytes, no header length`);
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = Number(view.readBigUInt64LE(0));
  if (8 + n > buf.byteLength) throw new SafetensorsError(file, null, `truncated: header says ${n} bytes, file has ${buf.byteLength - 8}`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(view.subarray(8, 8 + n).toString('utf8'));
  } catch (e) {
    throw new SafetensorsError(file, null, `header is not valid JSON (${(e as Error).message})`);
  }
  const dataStart = 8 + n;
  const dataLen = buf.byteLength - dataStart;
  const tensors = new Map<string, TensorData>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as HeaderEntry;
    const dtype = ST_TO_DTYPE[e.dtype];
    if (!dtype) throw new SafetensorsError(file, name, `unsupported dtype ${e.dtype}`);
    const [begin, end] = e.data_offsets;
    const expected = e.shape.reduce((a, b) => a * b, 1) * ST_BYTES[e.dtype];
    if (end - begin !== expected) {
      throw new SafetensorsError(file, name, `shape [${e.shape.join(', ')}] ${e.dtype} needs ${expected} bytes, offsets give ${end - begin}`);
    }
    if (end > dataLen) throw new SafetensorsError(file, name, `truncated: data ends at ${end}, file has ${dataLen} data bytes`);
    // typedFromBytes copies, so the tensor is aligned and owns its memory.
    tensors.set(name, { dtype, dims: e.shape, data: typedFromBytes(dtype, buf.subarray(dataStart + begin, dataStart + end)) });
  }
  return { tensors, metadata };
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
