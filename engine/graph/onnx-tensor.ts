// Tensor <-> TensorProto conversion and the dtype table shared by the ONNX writer and loader.
//
// We always write raw_data (little-endian bytes): it is the only encoding that covers every
// dtype we use (float16, bfloat16, int4 are packed bytes) and it is what ORT reads fastest.
// The loader also accepts the typed fields (float_data, int32_data, int64_data, ...) that
// other exporters write.

import { onnx } from 'onnx-proto';
import type { DType, TensorData, TypedArray } from './ir';

// ONNX TensorProto.DataType numbers. uint4/int4 (21/22) are newer than onnx-proto's enum;
// protobufjs writes any int32 in an enum field, so the numbers are all that matter.
export const ONNX_DTYPE: Readonly<Record<DType, number>> = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int16: 5,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
  uint4: 21,
  int4: 22,
};
const FROM_ONNX = new Map<number, DType>(Object.entries(ONNX_DTYPE).map(([k, v]) => [v, k as DType]));

export function onnxDType(dtype: DType): number {
  return ONNX_DTYPE[dtype];
}

export function dtypeFromOnnx(code: number, what: string): DType {
  const d = FROM_ONNX.get(code);
  if (!d) throw new Error(`${what}: ONNX element type ${code} is not supported by the TruthGPT IR`);
  return d;
}

/** int64 proto fields decode as Long objects (or numbers when Long is absent). */
export function toNumber(x: number | { toNumber(): number } | null | undefined): number {
  if (x === null || x === undefined) return 0;
  return typeof x === 'number' ? x : x.toNumber();
}

/** Size in bytes of `count` elements, packing 4-bit types two per byte. */
export function byteSize(dtype: DType, count: number): number {
  switch (dtype) {
    case 'int4':
    case 'uint4':
      return Math.ceil(count / 2);
    case 'float64':
    case 'int64':
      return count * 8;
    case 'float32':
    case 'int32':
      return count * 4;
    case 'float16':
    case 'bfloat16':
    case 'int16':
      return count * 2;
    default:
      return count;
  }
}

/** A view of the tensor's bytes (no copy). Little-endian hosts only, like ORT itself. */
export function tensorBytes(t: TensorData): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/**
 * The typed array that natural-dtype consumers expect for `bytes`. float16/bfloat16 come back as
 * Uint16Array bit patterns, 4-bit types packed. `copy` (default) makes it aligned and the owner of
 * its memory; pass false only for a fresh buffer that starts at offset 0.
 */
export function typedFromBytes(dtype: DType, bytes: Uint8Array, copy = true): TypedArray {
  const owns = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  // Uint8Array.prototype.slice, not bytes.slice(): on a Node Buffer the latter is a view.
  const buf = copy || !owns ? Uint8Array.prototype.slice.call(bytes).buffer : bytes.buffer;
  switch (dtype) {
    case 'float32':
      return new Float32Array(buf);
    case 'float64':
      return new Float64Array(buf);
    case 'int64':
      return new BigInt64Array(buf);
    case 'int32':
      return new Int32Array(buf);
    case 'int16':
      return new Int16Array(buf);
    case 'float16':
    case 'bfloat16':
      return new Uint16Array(buf);
    case 'int8':
      return new Int8Array(buf);
    default:
      return new Uint8Array(buf);
  }
}

export function tensorToProto(name: string, t: TensorData): onnx.ITensorProto {
  return { name, dims: t.dims, dataType: onnxDType(t.dtype), rawData: tensorBytes(t) };
}

/** Bytes of a proto tensor stored inline (raw_data or one of the typed repeated fields). */
export function inlineTensorBytes(p: onnx.ITensorProto, dtype: DType, count: number): Uint8Array {
  const what = `tensor "${p.name ?? ''}"`;
  if (p.rawData && p.rawData.length > 0) return p.rawData;
  if (count === 0) return new Uint8Array(0);
  let out: TypedArray;
  switch (dtype) {
    case 'float32':
      out = Float32Array.from(p.floatData ?? []);
      break;
    case 'float64':
      out = Float64Array.from(p.doubleData ?? []);
      break;
    case 'int64':
      out = BigInt64Array.from((p.int64Data ?? []).map((x) => BigInt(toNumber(x))));
      break;
    case 'int32':
      out = Int32Array.from(p.int32Data ?? []);
      break;
    case 'int16':
      out = Int16Array.from(p.int32Data ?? []);
      break;
    case 'float16':
    case 'bfloat16':
      // The spec stores 16-bit floats as their bit patterns in int32_data.
      out = Uint16Array.from(p.int32Data ?? []);
      break;
    case 'int8':
      out = Int8Array.from(p.int32Data ?? []);
      break;
    case 'int4':
    case 'uint4':
      // int32_data holds one packed byte pair per element in the spec; keep the low byte.
      out = Uint8Array.from(p.int32Data ?? [], (x) => x & 0xff);
      break;
    default:
      out = Uint8Array.from(p.int32Data ?? []);
  }
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  if (bytes.length !== byteSize(dtype, count)) {
    throw new Error(`${what}: ${bytes.length} bytes of ${dtype} data for ${count} elements`);
  }
  return bytes;
}
