// jest runs each test file in a vm sandbox with its own Float32Array, BigInt64Array, ... classes,
// and loads onnxruntime-common inside it. ORT's native binding builds every output buffer with the
// host realm's classes, so when onnxruntime-common wraps an output in a Tensor, its
// `data instanceof Float32Array` check (against the sandbox's class) fails and session.run throws
// "A float32 tensor's data must be type of function Float32Array()". Inputs built in the sandbox
// pass; a host-realm array passed to `new ort.Tensor` fails the same check. engine/runtime/host-realm.ts
// puts the host realm's classes on the sandbox's globals, so both sides agree; it must run before
// onnxruntime-node loads (jest.config.js lists it in setupFiles; importing it first here keeps this
// file correct on its own). Outside jest the classes are already the host's and it is a no-op.
import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { f, Graph, lookupOp, registerOp, tensor } from '../../engine/graph';
import { EXTERNAL_ALIGNMENT, loadModel, saveModel, serializeModel, toModelProto } from '../../engine/graph/onnx';
import { hasGuessedType } from '../../engine/graph/onnx-load';

// The op table has no Loop rule (yet); Loop(M, cond, v...) -> final v... keeps the carried types.
if (!lookupOp('Loop')) registerOp('Loop', { infer: (inputs) => inputs.slice(2).map((v) => ({ dtype: v!.dtype, shape: v!.shape })) });

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-onnx-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function run(model: Uint8Array | string, feeds: Record<string, ort.Tensor>) {
  const opts: ort.InferenceSession.SessionOptions = { logSeverityLevel: 3 };
  const session = typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

/** y = relu(x @ w + b), the plain-TS reference. */
function reference(x: number[][], w: number[][], b: number[]): number[][] {
  return x.map((row) => b.map((bj, j) => Math.max(0, row.reduce((s, xi, i) => s + xi * w[i][j], bj))));
}

function tinyMlp() {
  const w = [[1, -1], [2, 0.5], [-3, 1]];
  const b = [0.5, -0.5];
  const g = new Graph('mlp');
  const x = g.input('x', 'float32', ['batch', 3]);
  const wv = g.initializer('w', tensor('float32', [3, 2], w.flat()));
  const bv = g.initializer('b', tensor('float32', [2], b));
  const h = g.op('MatMul', [x, wv])[0]; // (batch, 2)
  g.output(g.op('Relu', [g.op('Add', [h, bv])[0]])[0], 'y');
  return { g, w, b };
}

describe('serializeModel', () => {
  it('writes a MatMul+Add+Relu graph that ORT runs with a symbolic batch dim', async () => {
    const { g, w, b } = tinyMlp();
    const { model, external } = serializeModel(g);
    expect(external).toBeUndefined();
    for (const x of [[[1, 2, 3], [-1, 0, 1]], [[0.25, -2, 4]]]) {
      const out = await run(model, { x: new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, 3]) });
      expect(out.y.dims).toEqual([x.length, 2]);
      const want = reference(x, w, b).flat();
      Array.from(out.y.data as Float32Array).forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
    }
  });

  it('declares opset 23, which ORT accepts for LayerNormalization, Gelu and RMSNormalization', async () => {
    const g = new Graph('norms');
    expect(g.opsets.get('')).toBe(23);
    const x = g.input('x', 'float32', [2, 4]);
    const scale = g.initializer('scale', tensor('float32', [4], [1, 1, 1, 1]));
    const ln = g.op('LayerNormalization', [x, scale, null], { axis: -1, epsilon: f(1e-5) }, { outputs: 1 })[0];
    const rms = g.op('RMSNormalization', [x, scale], { axis: -1, epsilon: f(1e-5) })[0];
    g.output(g.op('Gelu', [ln])[0], 'gelu_ln');
    g.output(rms, 'rms');
    const xs = [1, 2, 3, 4, -1, 0, 1, 2];
    const out = await run(serializeModel(g).model, { x: new ort.Tensor('float32', Float32Array.from(xs), [2, 4]) });
    // Row 1 normalized: (x - 2.5) / sqrt(1.25 + eps); gelu of the first entry (-1.3416).
    const z = (1 - 2.5) / Math.sqrt(1.25 + 1e-5);
    const gelu = (t: number) => 0.5 * t * (1 + erf(t / Math.SQRT2));
    expect((out.gelu_ln.data as Float32Array)[0]).toBeCloseTo(gelu(z), 4);
    // RMS of row 1 = sqrt(30/4).
    expect((out.rms.data as Float32Array)[3]).toBeCloseTo(4 / Math.sqrt(7.5 + 1e-5), 5);
  });
});

// Abramowitz-Stegun 7.1.26, |error| < 1.5e-7: enough for a 4-digit check.
function erf(x: number): number {
  const s = Math.sign(x);
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return s * y;
}

/** Deterministic pseudo-random floats, so failures reproduce. */
function lcg(n: number, seed = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) * 2 - 1);
}

/** y = relu(x @ W + b) with W (K, N) big enough to cross the external-data threshold. */
function wideMlp(K = 64, N = 48) {
  const g = new Graph('wide');
  const x = g.input('x', 'float32', ['batch', K]);
  const w = g.initializer('w', { dtype: 'float32', dims: [K, N], data: lcg(K * N, 7) });
  const b = g.initializer('b', { dtype: 'float32', dims: [N], data: lcg(N, 9) });
  const h = g.op('MatMul', [x, w])[0]; // (batch, N)
  g.output(g.op('Relu', [g.op('Add', [h, b])[0]])[0], 'y');
  return g;
}

describe('external data', () => {
  it('saves weights to a 4096-aligned side file that ORT loads from the model path with identical outputs', async () => {
    const g = wideMlp();
    // A second big tensor checks that the second offset is aligned too.
    g.initializer('unused_big', { dtype: 'float32', dims: [700], data: lcg(700, 3) });
    const file = path.join(tmp, 'ext', 'model.onnx');
    const { externalPath } = saveModel(g, file, { externalData: { location: 'model.onnx.data', sizeThreshold: 1024 } });
    expect(externalPath).toBe(path.join(tmp, 'ext', 'model.onnx.data'));

    const proto = toModelProto(g, { externalData: { location: 'model.onnx.data' } });
    const byName = new Map(proto.graph!.initializer!.map((t) => [t.name, t]));
    expect(byName.get('b')!.dataLocation ?? 0).toBe(0); // 192 bytes: under the threshold, stays inline
    const offsets = ['w', 'unused_big'].map((n) => {
      const t = byName.get(n)!;
      expect(t.dataLocation).toBe(onnx.TensorProto.DataLocation.EXTERNAL);
      return Number(t.externalData!.find((e) => e.key === 'offset')!.value);
    });
    expect(offsets).toEqual([0, EXTERNAL_ALIGNMENT * 3]); // w is 12288 bytes = 3 pages
    expect(fs.statSync(externalPath!).size).toBe(EXTERNAL_ALIGNMENT * 3 + 700 * 4);
    expect(fs.statSync(file).size).toBeLessThan(2000); // weights are not in the model file

    const x = new ort.Tensor('float32', lcg(2 * 64, 5), [2, 64]);
    const fromPath = await run(file, { x });
    const inline = await run(serializeModel(g).model, { x });
    expect(Array.from(fromPath.y.data as Float32Array)).toEqual(Array.from(inline.y.data as Float32Array));
    expect((inline.y.data as Float32Array).some((v) => v > 0)).toBe(true);
  });

  it('loads external weights back bit-identical, from a path or from in-memory side-file bytes', () => {
    const g = wideMlp();
    const file = path.join(tmp, 'ext2', 'm.onnx');
    saveModel(g, file, { externalData: { location: 'weights/m.bin' } });
    const { model, external } = serializeModel(g, { externalData: { location: 'weights/m.bin' } });
    expect(Buffer.compare(Buffer.from(external!), fs.readFileSync(path.join(tmp, 'ext2', 'weights/m.bin')))).toBe(0);
    for (const loaded of [loadModel(file), loadModel(model, { external: { 'weights/m.bin': external! } })]) {
      expect(loaded.initializers.get('w')!.data).toEqual(g.initializers.get('w')!.data);
      expect(loaded.initializers.get('b')!.data).toEqual(g.initializers.get('b')!.data);
    }
  });

  it('names the missing side file and refuses absolute locations', () => {
    const g = wideMlp();
    const file = path.join(tmp, 'ext3', 'm.onnx');
    saveModel(g, file, { externalData: { location: 'm.data' } });
    fs.rmSync(path.join(tmp, 'ext3', 'm.data'));
    expect(() => loadModel(file)).toThrow(/tensor "w": external data file .*m\.data does not exist/);
    expect(() => serializeModel(g, { externalData: { location: '/abs/m.data' } })).toThrow(/must be a path relative to the model file/);
  });
});

describe('loadModel', () => {
  it('round-trips build -> serialize -> load -> serialize to identical bytes, including a Loop body, int64, float16 and int4 data', async () => {
    const g = new Graph('roundtrip');
    const x = g.input('x', 'float32', ['batch', 3]);
    const body = new Graph('body');
    body.input('i', 'int64', []);
    const cond = body.input('cond', 'bool', []);
    const v = body.input('v', 'float32', ['batch', 3]);
    body.output(body.op('Identity', [cond])[0], 'cond_out');
    body.output(body.op('Add', [v, body.scalar(1)])[0], 'v_out');
    const trips = g.initializer('trips', tensor('int64', [], [3]));
    const looped = g.op('Loop', [trips, null, x], { body })[0];
    g.output(g.op('Relu', [looped])[0], 'y');
    const big = BigInt64Array.from([-(2n ** 40n), 5n, 2n ** 62n]);
    g.initializer('i64', { dtype: 'int64', dims: [3], data: big });
    g.initializer('half', { dtype: 'float16', dims: [2], data: Uint16Array.from([0x3c00, 0xc000]) });
    g.initializer('nibbles', { dtype: 'int4', dims: [3], data: Uint8Array.from([0x7f, 0x08]) }); // 3 values packed in 2 bytes

    const first = serializeModel(g).model;
    const loaded = loadModel(first);
    expect(Buffer.compare(Buffer.from(serializeModel(loaded).model), Buffer.from(first))).toBe(0);

    expect(loaded.inputs.map((i) => [i.name, i.dtype, i.shape])).toEqual([['x', 'float32', ['batch', 3]]]);
    expect(loaded.outputs.map((o) => o.name)).toEqual(['y']);
    expect(loaded.initializers.get('i64')!.data).toEqual(big);
    expect(Array.from(loaded.initializers.get('half')!.data as Uint16Array)).toEqual([0x3c00, 0xc000]);
    expect(loaded.initializers.get('nibbles')).toMatchObject({ dtype: 'int4', dims: [3], data: Uint8Array.from([0x7f, 0x08]) });
    const loop = loaded.nodes.find((n) => n.opType === 'Loop')!;
    expect(loop.inputs).toEqual(['trips', '', 'x']);
    const loadedBody = loop.attrs.body.value as Graph;
    expect(loadedBody.inputs.map((i) => i.name)).toEqual(['i', 'cond', 'v']);
    // output(v, name) renames through an Identity, hence four nodes.
    expect(loadedBody.nodes.map((n) => n.opType)).toEqual(['Identity', 'Identity', 'Add', 'Identity']);
    expect(loadedBody.outputs.map((o) => o.name)).toEqual(['cond_out', 'v_out']);

    // The reloaded model still computes relu(x + 3).
    const out = await run(serializeModel(loaded).model, { x: new ort.Tensor('float32', Float32Array.from([-5, -2.5, 0, 1, 2, -4]), [2, 3]) });
    expect(Array.from(out.y.data as Float32Array)).toEqual([0, 0.5, 3, 4, 5, 0]);
  });

  it('keeps int64 attributes beyond 32 bits, float attributes as float32 and strings', () => {
    const g = new Graph('attrs');
    const x = g.input('x', 'float32', [2]);
    g.output(g.op('Identity', [x], { big_int: 2 ** 40, neg_ints: [-1, 2 ** 33], alpha: f(0.1), mode: 'x', names: ['a', 'bé'] })[0]);
    const first = serializeModel(g).model;
    const loaded = loadModel(first);
    expect(loaded.nodes[0].attrs).toEqual({
      big_int: { type: 'int', value: 2 ** 40 },
      neg_ints: { type: 'ints', value: [-1, 2 ** 33] },
      alpha: { type: 'float', value: Math.fround(0.1) },
      mode: { type: 'string', value: 'x' },
      names: { type: 'strings', value: ['a', 'bé'] },
    });
    expect(Buffer.compare(Buffer.from(serializeModel(loaded).model), Buffer.from(first))).toBe(0);
  });

  it('loads a model that ORT optimized and wrote itself, and the reserialized model gives the same outputs', async () => {
    const g = wideMlp(16, 8);
    const optimizedPath = path.join(tmp, 'ort-optimized.onnx');
    const session = await ort.InferenceSession.create(serializeModel(g).model, { graphOptimizationLevel: 'extended', optimizedModelFilePath: optimizedPath, logSeverityLevel: 3 });
    const x = new ort.Tensor('float32', lcg(3 * 16, 11), [3, 16]);
    const want = Array.from((await session.run({ x })).y.data as Float32Array);
    await session.release();

    const loaded = loadModel(optimizedPath);
    expect(loaded.inputs.map((i) => i.name)).toEqual(['x']);
    expect(loaded.nodes.length).toBeGreaterThan(0);
    const got = await run(serializeModel(loaded).model, { x });
    expect(Array.from(got.y.data as Float32Array)).toEqual(want);
  });

  it('loads shape-computing ops without value_info, and an op without a shape rule, and ORT still runs them', async () => {
    const T = onnx.AttributeProto.AttributeType;
    const i64 = (name: string, vals: number[]) => ({ name, dims: [vals.length], dataType: 7, rawData: new Uint8Array(BigInt64Array.from(vals.map(BigInt)).buffer) });
    const vi = (name: string, elemType: number, dims: (number | string)[]) => ({
      name,
      type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
    });
    // y = ConstantOfShape(Concat(Gather(Shape(x), [0]), [2]), value=1.5): a (batch, 2) tensor of 1.5.
    // count = Cast(Size(x), float): Size has no shape rule, so the loader must guess its dtype.
    const proto: onnx.IModelProto = {
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'shapes',
        initializer: [i64('idx0', [0]), i64('two', [2])],
        input: [vi('x', 1, ['batch', 3])],
        output: [vi('y', 1, ['batch', 2]), vi('count', 1, [])],
        node: [
          { opType: 'Shape', input: ['x'], output: ['s'] },
          { opType: 'Gather', input: ['s', 'idx0'], output: ['b'], attribute: [{ name: 'axis', type: T.INT, i: 0 }] },
          { opType: 'Concat', input: ['b', 'two'], output: ['shape'], attribute: [{ name: 'axis', type: T.INT, i: 0 }] },
          { opType: 'ConstantOfShape', input: ['shape'], output: ['y'], attribute: [{ name: 'value', type: T.TENSOR, t: { dims: [1], dataType: 1, floatData: [1.5] } }] },
          { opType: 'Size', input: ['x'], output: ['n'] },
          { opType: 'Cast', input: ['n'], output: ['count'], attribute: [{ name: 'to', type: T.INT, i: 1 }] },
        ],
      },
    };
    const loaded = loadModel(onnx.ModelProto.encode(proto).finish());
    expect(loaded.opsets.get('')).toBe(17);
    expect(loaded.nodes.map((n) => n.opType)).toEqual(['Shape', 'Gather', 'Concat', 'ConstantOfShape', 'Size', 'Cast']);
    if (!lookupOp('Size')) expect(hasGuessedType(loaded, 'n')).toBe(true);
    const value = loaded.nodes[3].attrs.value;
    expect(value.type === 'tensor' && Array.from(value.value.data as Float32Array)).toEqual([1.5]);
    expect(loaded.value('y').shape).toEqual(['batch', 2]);
    const out = await run(serializeModel(loaded).model, { x: new ort.Tensor('float32', new Float32Array(12), [4, 3]) });
    expect(out.y.dims).toEqual([4, 2]);
    expect(Array.from(out.y.data as Float32Array)).toEqual(new Array(8).fill(1.5));
    expect(Array.from(out.count.data as Float32Array)).toEqual([12]);
  });

  it('names the op and attribute it cannot represent', () => {
    const proto: onnx.IModelProto = {
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'bad',
        input: [{ name: 'x', type: { tensorType: { elemType: 1 } } }],
        output: [{ name: 'y', type: { tensorType: { elemType: 1 } } }],
        node: [{ name: 'seqnode', opType: 'Foo', input: ['x'], output: ['y'], attribute: [{ name: 'tensors_attr', type: onnx.AttributeProto.AttributeType.TENSORS }] }],
      },
    };
    expect(() => loadModel(onnx.ModelProto.encode(proto).finish())).toThrow(/node "seqnode" attribute "tensors_attr" has type 9/);
    expect(() => loadModel(new Uint8Array([0xff, 0xff, 0xff]))).toThrow(/not an ONNX model/);
  });
});
