// jest runs tests in a vm context whose typed-array classes differ from the ones ORT's native
// binding creates, so ORT-common's `data instanceof Float32Array` check fails on every output.
// Use the host realm's classes before onnxruntime loads (see /work/shared/notes/onnx-runtime.md).
import '../../engine/runtime/host-realm';
import * as ort from 'onnxruntime-node';
import { f, Graph, tensor, type Value } from '../../engine/graph/ir';
import { lookupOp, registerOp } from '../../engine/graph/registry';
import { serializeModel } from '../../engine/graph/onnx';

// The shared rules land in engine/autodiff/rules; until then give the few ops used here a
// same-shape-as-first-input rule (only when no real rule is registered).
const sameAsFirst = (inputs: (Value | null)[]) => [{ dtype: inputs[0]!.dtype, shape: inputs[0]!.shape }];
for (const op of ['Add', 'Relu', 'Identity', 'LayerNormalization', 'Gelu', 'RMSNormalization']) {
  if (!lookupOp(op)) registerOp(op, { infer: sameAsFirst });
}
if (!lookupOp('MatMul')) {
  registerOp('MatMul', { infer: ([a, b]) => [{ dtype: a!.dtype, shape: [a!.shape![0], b!.shape![1]] }] });
}

async function run(model: Uint8Array, feeds: Record<string, ort.Tensor>) {
  const session = await ort.InferenceSession.create(model);
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
