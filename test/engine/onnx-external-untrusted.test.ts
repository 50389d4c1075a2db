// loadModel on ONNX models whose external-data references were tampered with (issue 15): a
// location may not leave the model's folder (absolute, `..`, a symlink out), and offset/length must
// be non-negative integers that stay inside the side file and match the tensor's byte size. The
// models are made by the repo's own serializer, then one TensorProto's externalData is edited.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { onnx } from 'onnx-proto';
import { Graph } from '../../engine/graph';
import { loadModel, serializeModel } from '../../engine/graph/onnx';
import { ExternalDataError } from '../../engine/graph/onnx-load';

const K = 16;
const N = 32; // w is 2048 bytes: over the 1024-byte threshold, so it goes to the side file
const LOCATION = 'm.data';

let tmp: string;
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-onnx-ext-'))));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function model(): { model: Uint8Array; external: Uint8Array } {
  const g = new Graph('ext');
  const x = g.input('x', 'float32', ['batch', K]);
  const w = g.initializer('w', { dtype: 'float32', dims: [K, N], data: Float32Array.from({ length: K * N }, (_, i) => i) });
  g.output(g.op('MatMul', [x, w])[0], 'y');
  const out = serializeModel(g, { externalData: { location: LOCATION } });
  return { model: out.model, external: out.external! };
}

/** The model with w's externalData entries replaced by `edit(entries)`. */
function tampered(edit: (e: Record<string, string>) => Record<string, string>): Uint8Array {
  const proto = onnx.ModelProto.decode(model().model);
  const w = proto.graph!.initializer!.find((t) => t.name === 'w')!;
  const entries = Object.fromEntries(w.externalData!.map((e) => [e.key, e.value]));
  w.externalData = Object.entries(edit(entries)).map(([key, value]) => onnx.StringStringEntryProto.create({ key, value }));
  return onnx.ModelProto.encode(proto).finish();
}

/** Writes `bytes` as <tmp>/<name>/m.onnx next to the genuine side file and returns the model path. */
function onDisk(name: string, bytes: Uint8Array): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, LOCATION), model().external);
  fs.writeFileSync(path.join(dir, 'm.onnx'), bytes);
  return path.join(dir, 'm.onnx');
}

function refused(load: () => unknown, source: string, re: RegExp): void {
  let err: unknown;
  try {
    load();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ExternalDataError);
  const e = err as ExternalDataError;
  expect([e.model, e.tensor]).toEqual([source, 'w']);
  expect(e.message.startsWith(`${source}: tensor "w": `)).toBe(true);
  expect(e.message).toMatch(re);
}

describe('ONNX external data from untrusted models', () => {
  test('the untampered model loads from bytes and from a path (the harness itself is sound)', () => {
    const { model: bytes, external } = model();
    const w = new Float32Array(loadModel(bytes, { external: { [LOCATION]: external } }).initializers.get('w')!.data.buffer);
    expect(w[K * N - 1]).toBe(K * N - 1);
    const file = onDisk('ok', bytes);
    expect(loadModel(file).initializers.get('w')!.dims).toEqual([K, N]);
  });

  test('a location with a ".." segment is refused, from a path and from bytes', () => {
    // A real file one folder up, which a loader that followed ".." would read as weights.
    fs.writeFileSync(path.join(tmp, 'secret.bin'), Buffer.alloc(K * N * 4, 1));
    for (const location of ['../secret.bin', 'sub/../../secret.bin', '..\\secret.bin']) {
      const bytes = tampered((e) => ({ ...e, location }));
      const file = onDisk('dotdot', bytes);
      refused(() => loadModel(file), file, /has a "\.\." segment/);
      refused(() => loadModel(bytes, { external: { [location]: new Uint8Array(K * N * 4) } }), 'model bytes', /has a "\.\." segment/);
    }
  });

  test('an absolute location is refused (POSIX, Windows drive, UNC)', () => {
    for (const location of [path.join(tmp, 'secret.bin'), '/etc/passwd', 'C:\\weights.bin', 'c:weights.bin', '\\\\server\\share\\w.bin']) {
      const file = onDisk('abs', tampered((e) => ({ ...e, location })));
      refused(() => loadModel(file), file, /is absolute; it must be relative to the model file/);
    }
  });

  test('a symlink that leads out of the model folder is refused', () => {
    const file = onDisk('link', tampered((e) => ({ ...e, location: 'escape.bin' })));
    fs.writeFileSync(path.join(tmp, 'outside.bin'), Buffer.alloc(K * N * 4, 2));
    fs.symlinkSync(path.join(tmp, 'outside.bin'), path.join(tmp, 'link', 'escape.bin'));
    refused(() => loadModel(file), file, /resolves to .*outside\.bin, outside the model's folder/);
  });

  test('negative, fractional or non-numeric offsets and lengths are refused', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ offset: '-4' }, /offset "-4" is not a non-negative integer/],
      [{ offset: '1.5' }, /offset "1\.5" is not a non-negative integer/],
      [{ offset: '0x10' }, /offset "0x10"/],
      [{ offset: '' }, /offset ""/],
      [{ offset: '99999999999999999999' }, /offset "99999999999999999999"/],
      [{ length: '-2048' }, /length "-2048" is not a non-negative integer/],
      [{ length: '2048.0' }, /length "2048\.0"/],
    ];
    for (const [edit, re] of cases) {
      const bytes = tampered((e) => ({ ...e, ...edit }));
      const file = onDisk('numbers', bytes);
      refused(() => loadModel(file), file, re);
      refused(() => loadModel(bytes, { external: { [LOCATION]: model().external } }), 'model bytes', re);
    }
  });

  test('offset + length past the end of the side file is refused, before any read', () => {
    const { external } = model();
    const bytes = tampered((e) => ({ ...e, offset: String(external.length - 100) }));
    const file = onDisk('past', bytes);
    refused(() => loadModel(file), file, new RegExp(`reads past the end of m\\.data \\(${external.length} bytes\\)`));
    refused(() => loadModel(bytes, { external: { [LOCATION]: external } }), 'model bytes', /reads past the end of m\.data/);
  });

  test('a length that differs from the tensor byte size is refused', () => {
    const bytes = tampered((e) => ({ ...e, length: '1024' }));
    refused(() => loadModel(onDisk('length', bytes)), path.join(tmp, 'length', 'm.onnx'), /external length 1024 != 2048 bytes for its shape/);
  });

  test('a missing location, or one naming an Object.prototype key, is refused', () => {
    const bytes = tampered((e) => ({ offset: e.offset, length: e.length }));
    refused(() => loadModel(bytes, { external: {} }), 'model bytes', /external data without a location/);
    const proto = tampered((e) => ({ ...e, location: '__proto__' }));
    refused(() => loadModel(proto, { external: {} }), 'model bytes', /is in external file __proto__; pass options\.external/);
  });
});
