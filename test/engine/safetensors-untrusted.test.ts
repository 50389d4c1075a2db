// readSafetensors on hand-built malicious files (issue 15): every header that the reference reader
// (Hugging Face safetensors) refuses is refused here too, with a SafetensorsError naming the file
// and, where there is one, the tensor; no header byte is ever read as a weight.

import { MAX_HEADER_BYTES, readSafetensors, SafetensorsError, writeSafetensors } from '../../engine/checkpoint/safetensors';
import type { TensorData } from '../../engine/graph/ir';

const FILE = 'evil.safetensors';

/** A file from a raw header (any JSON value; a string or Buffer is taken as is) and `dataLen` data bytes. */
function craft(header: unknown, dataLen: number, lengthField?: bigint): Buffer {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = Buffer.alloc(8 + json.length + dataLen, 0x7f);
  out.writeBigUInt64LE(lengthField ?? BigInt(json.length), 0);
  json.copy(out, 8);
  return out;
}

const f32 = (shape: unknown, offsets: unknown, extra: Record<string, unknown> = {}) => ({ dtype: 'F32', shape, data_offsets: offsets, ...extra });

/** Expects a SafetensorsError naming the file (and `tensor` when given) whose message matches `re`. */
function refused(buf: Uint8Array, tensor: string | null, re: RegExp): void {
  let err: unknown;
  try {
    readSafetensors(buf, FILE);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SafetensorsError);
  const e = err as SafetensorsError;
  expect(e.file).toBe(FILE);
  expect(e.tensor).toBe(tensor);
  expect(e.message).toMatch(re);
  expect(e.message.startsWith(tensor ? `${FILE}: tensor "${tensor}": ` : `${FILE}: `)).toBe(true);
}

describe('safetensors reader on untrusted input', () => {
  test('a well-formed crafted file loads (the harness itself is sound)', () => {
    const buf = craft({ __metadata__: { format: 'pt' }, a: f32([2], [0, 8]), b: f32([1], [8, 12]) }, 12);
    const back = readSafetensors(buf, FILE);
    expect([...back.tensors.keys()].sort()).toEqual(['a', 'b']);
    expect(back.metadata).toEqual({ format: 'pt' });
  });

  test('a negative offset is refused (it would read header bytes as weights)', () => {
    refused(craft({ w: f32([2], [-8, 0]) }, 0), 'w', /data_offsets \[-8,0\] are not two non-negative integers/);
  });

  test('non-integer, missing or wrongly sized offsets are refused', () => {
    refused(craft({ w: f32([1], [0.5, 4.5]) }, 4), 'w', /data_offsets/);
    refused(craft({ w: f32([1], [0]) }, 4), 'w', /data_offsets \[0\]/);
    refused(craft({ w: { dtype: 'F32', shape: [1] } }, 4), 'w', /data_offsets missing/);
    refused(craft({ w: f32([1], ['0', '4']) }, 4), 'w', /data_offsets/);
  });

  test('offsets that end before they begin are refused', () => {
    refused(craft({ w: f32([0], [4, 0]) }, 4), 'w', /end before they begin/);
  });

  test('an end past the data is refused as truncation', () => {
    refused(craft({ w: f32([4], [0, 16]) }, 8), 'w', /truncated: data ends at 16, file has 8 data bytes/);
  });

  test('overlapping tensors are refused, naming both', () => {
    refused(craft({ a: f32([2], [0, 8]), b: f32([2], [4, 12]) }, 12), 'b', /overlap tensor "a"/);
    // Two names for the same bytes are an overlap too.
    refused(craft({ a: f32([2], [0, 8]), b: f32([2], [0, 8]) }, 8), 'b', /overlap tensor "a"/);
  });

  test('a gap between tensors, data not starting at 0, and bytes after the last tensor are refused', () => {
    refused(craft({ a: f32([1], [0, 4]), b: f32([1], [8, 12]) }, 12), 'b', /gap: bytes \[4, 8\) belong to no tensor/);
    refused(craft({ a: f32([1], [4, 8]) }, 8), 'a', /gap: bytes \[0, 4\)/);
    refused(craft({ a: f32([1], [0, 4]) }, 12), null, /8 bytes after the last tensor's data belong to no tensor/);
  });

  test('negative and non-integer dims are refused', () => {
    refused(craft({ w: f32([-1, -4], [0, 16]) }, 16), 'w', /shape \[-1,-4\] is not a list of non-negative integers/);
    refused(craft({ w: f32([1.5, 2], [0, 12]) }, 12), 'w', /shape \[1.5,2\]/);
    refused(craft({ w: f32('4', [0, 16]) }, 16), 'w', /shape "4"/);
  });

  test('an unknown dtype is refused', () => {
    refused(craft({ w: { dtype: 'F7', shape: [1], data_offsets: [0, 1] } }, 1), 'w', /unsupported dtype F7/);
    refused(craft({ w: { dtype: 4, shape: [1], data_offsets: [0, 4] } }, 4), 'w', /dtype 4 is not a string/);
    refused(craft({ w: { dtype: 'constructor', shape: [1], data_offsets: [0, 4] } }, 4), 'w', /unsupported dtype constructor/);
  });

  test('a byte length that does not match shape × dtype size is refused', () => {
    refused(craft({ w: f32([3], [0, 8]) }, 8), 'w', /shape \[3\] F32 needs 12 bytes, offsets give 8/);
    // An overflowing element count never matches.
    refused(craft({ w: f32([2 ** 40, 2 ** 40], [0, 8]) }, 8), 'w', /needs .* bytes, offsets give 8/);
  });

  test('unknown keys in an entry and entries that are not objects are refused', () => {
    refused(craft({ w: f32([1], [0, 4], { offset: 0 }) }, 4), 'w', /unknown key "offset"/);
    refused(craft({ w: [1, 2] }, 0), 'w', /header entry is \[1,2\], not an object/);
  });

  test('a header length larger than the file is refused', () => {
    refused(craft({ w: f32([1], [0, 4]) }, 4, 1000n), null, /truncated: header says 1000 bytes/);
  });

  test('a huge header length is refused before anything is allocated', () => {
    refused(craft({}, 0, BigInt(MAX_HEADER_BYTES) + 1n), null, /header length 100000001 exceeds the 100000000-byte limit/);
    refused(craft({}, 0, 0xffffffffffffffffn), null, /exceeds the 100000000-byte limit/);
  });

  test('a header that is not a JSON object is refused', () => {
    refused(craft([1, 2, 3], 0), null, /header is an array, not a JSON object/);
    refused(craft('null', 0), null, /header is null, not a JSON object/);
    refused(craft('"w"', 0), null, /not a JSON object/);
    refused(craft('{"w":', 0), null, /header is not valid UTF-8 JSON/);
    // Valid JSON but for one byte that is not UTF-8 (a lenient decoder would turn it into U+FFFD).
    refused(craft(Buffer.concat([Buffer.from('{"__metadata__":{"a":"'), Buffer.from([0xff]), Buffer.from('"}}')]), 0), null, /not valid UTF-8 JSON/);
  });

  test('metadata with a non-string value, or metadata that is not a map, is refused', () => {
    refused(craft({ __metadata__: { step: 7 }, w: f32([1], [0, 4]) }, 4), null, /__metadata__ "step" is 7, not a string/);
    refused(craft({ __metadata__: ['pt'] }, 0), null, /__metadata__ is \["pt"\], not a string→string map/);
  });

  test('zero-element tensors may share an offset, as the reference allows', () => {
    const back = readSafetensors(craft({ e: f32([0, 3], [0, 0]), z: f32([0], [0, 0]), w: f32([1], [0, 4]) }, 4), FILE);
    expect(back.tensors.get('e')!.dims).toEqual([0, 3]);
    expect(back.tensors.get('w')!.data).toEqual(new Float32Array(Buffer.alloc(4, 0x7f).buffer));
  });

  test('everything the writer produces passes the reader, empty and zero-size tensors included', () => {
    const tensors = new Map<string, TensorData>([
      ['empty', { dtype: 'float32', dims: [0, 4], data: new Float32Array(0) }],
      ['ids', { dtype: 'int64', dims: [3], data: BigInt64Array.from([1n, 2n, 3n]) }],
      ['w', { dtype: 'float16', dims: [2, 1], data: Uint8Array.from([0, 60, 0, 188]) }],
    ]);
    for (const [ts, meta] of [[tensors, { step: '3' }], [new Map<string, TensorData>(), {}]] as const) {
      const back = readSafetensors(writeSafetensors(ts, meta), FILE);
      expect([...back.tensors.keys()].sort()).toEqual([...ts.keys()].sort());
      expect(back.metadata).toEqual(meta);
    }
  });
});
