// Autodiff: every gradcheck case (the list `npm run gradcheck` runs), plus the behaviour of
// gradients() itself: errors that name the op or loss, accumulation over two consumers, and a
// tiny MLP whose loss falls under plain gradient descent on the autodiff gradients.
import '../../engine/runtime/host-realm';
import * as ort from 'onnxruntime-node';
import { allCases, runCase } from '../../engine/autodiff/cases';
import { checkOp, rng } from '../../engine/autodiff/gradcheck';
import * as R from '../../engine/autodiff/reference';
import { gradients } from '../../engine/autodiff/gradients';
import { Graph, f, type Value } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';

async function runGraph(g: Graph, feeds: Record<string, ort.Tensor>): Promise<Record<string, number[]>> {
  const s = await ort.InferenceSession.create(serializeModel(g).model);
  try {
    const out = await s.run(feeds);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, Array.from(t.data as Float32Array, Number)]));
  } finally {
    await s.release();
  }
}

describe('gradcheck cases (forward vs TS reference, gradient vs central differences)', () => {
  test.each(allCases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const r = await runCase(c);
    expect({ name: c.name, message: r.message }).toEqual({ name: c.name, message: undefined });
    expect(r.ok).toBe(true);
  });

  test('covers at least 35 ops', () => {
    expect(new Set(allCases.map((c) => c.op)).size).toBeGreaterThanOrEqual(35);
  });

  // The float32 Gelu cases must tell exact (erf) GELU from the tanh form, in value and in slope:
  // checked against the other form's reference each fails, on the forward check and, with the
  // forward check switched off, on the element-wise gradient check alone.
  test.each(allCases.filter((c) => c.op === 'Gelu').map((c) => [c.name, c] as const))('%s fails against the other GELU form', async (name, c) => {
    const other = name === 'Gelu exact' ? 'tanh' : 'none';
    const opts = { ...c.opts, reference: ([x]: R.ND[]) => R.map(x, (v) => R.gelu(v, other)) };
    const fwd = await checkOp(name, c.shapes, c.build, opts);
    expect(fwd.message).toMatch(/^forward differs from reference by/);
    const grad = await checkOp(name, c.shapes, c.build, { ...opts, fwdTol: 1 });
    expect(grad.message).toMatch(/^gradient differs from the reference gradient by/);
    expect(grad.gradErr).toBeGreaterThan(1e-4); // 50x the default gradTol; observed 6.9e-4
  });
});

describe('gradients()', () => {
  test('an op without a gradient rule throws naming the op and node', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 3]);
    const p = g.op('ReduceProd', [x, g.vector([1])], { keepdims: 0 })[0];
    const loss = g.op('ReduceSum', [p], { keepdims: 0 })[0];
    expect(() => gradients(g, loss, [x])).toThrow(/op ReduceProd \(node ReduceProd_\d+\) has no gradient rule/);
  });

  test('a non-scalar loss is refused, naming it', () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [2, 3]);
    const y = g.op('Tanh', [x], {}, { outputNames: ['per_token_loss'] })[0];
    expect(() => gradients(g, y, [x])).toThrow(/loss per_token_loss must be a scalar, got shape \[2, 3\]/);
  });

  test('nodes off the path are not differentiated, unused wrt get zeros or an error', async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [3]);
    const unused = g.input('u', 'float32', [2]);
    g.output(g.op('ReduceProd', [x], { keepdims: 0 })[0], 'side'); // no gradient rule, not on the path
    const loss = g.op('ReduceSum', [g.op('Mul', [x, x])[0]], { keepdims: 0 })[0];
    expect(() => gradients(g, loss, [x, unused], { unused: 'error' })).toThrow(/u does not reach loss/);
    const grads = gradients(g, loss, [x, unused]);
    g.output(grads.get('x')!, 'gx');
    g.output(grads.get('u')!, 'gu');
    const out = await runGraph(g, {
      x: new ort.Tensor('float32', Float32Array.of(1, -2, 3), [3]),
      u: new ort.Tensor('float32', Float32Array.of(5, 6), [2]),
    });
    expect(out.gx).toEqual([2, -4, 6]);
    expect(out.gu).toEqual([0, 0]);
  });

  test('a value read by two consumers gets the sum of both gradients', async () => {
    const g = new Graph();
    const x = g.input('x', 'float64', [4]);
    // L = Σ sin(x) + Σ x², so dL/dx = cos(x) + 2x
    const a = g.op('ReduceSum', [g.op('Sin', [x])[0]], { keepdims: 0 })[0];
    const b = g.op('ReduceSum', [g.op('Mul', [x, x])[0]], { keepdims: 0 })[0];
    const loss = g.op('Add', [a, b])[0];
    g.output(gradients(g, loss, [x]).get('x')!, 'gx');
    const xs = [0.3, -1.2, 2.0, 0.0];
    const out = await runGraph(g, { x: new ort.Tensor('float64', Float64Array.from(xs), [4]) });
    out.gx.forEach((v, i) => expect(v).toBeCloseTo(Math.cos(xs[i]) + 2 * xs[i], 12));
  });

  test("ONNX Dropout in training mode: the backward reuses the forward's mask output", async () => {
    const g = new Graph();
    const x = g.input('x', 'float32', [200]);
    const [y, mask] = g.op('Dropout', [x, g.scalar(0.3), g.const({ dtype: 'bool', dims: [], data: Uint8Array.of(1) })], { seed: 5 }, { outputs: 2 });
    g.output(y, 'y');
    g.output(mask, 'mask');
    g.output(gradients(g, g.op('ReduceSum', [y], { keepdims: 0 })[0], [x]).get('x')!, 'gx');
    const out = await runGraph(g, { x: new ort.Tensor('float32', new Float32Array(200).fill(2), [200]) });
    const kept = out.mask.filter((m) => m === 1).length;
    expect(kept).toBeGreaterThan(100);
    expect(kept).toBeLessThan(180);
    expect(out.gx).toEqual(out.mask.map((m) => (m ? Math.fround(1 / Math.fround(0.7)) : 0)));
  });

  test('a tiny MLP (Gemm + Relu + MatMul + SoftmaxCrossEntropyLoss) learns under gradient descent', async () => {
    const [N, D, H, C] = [32, 4, 16, 3];
    const rand = rng(7);
    const xs = Array.from({ length: N * D }, () => rand() * 2 - 1);
    // Labels from a fixed rule the MLP has to learn: which of three features is largest.
    const labels = Array.from({ length: N }, (_, n) => {
      const row = xs.slice(n * D, n * D + 3);
      return row.indexOf(Math.max(...row));
    });
    const g = new Graph('mlp');
    const x = g.input('x', 'float32', ['N', D]);
    const y = g.input('y', 'int64', ['N']);
    const w1 = g.input('w1', 'float32', [D, H]);
    const b1 = g.input('b1', 'float32', [H]);
    const w2 = g.input('w2', 'float32', [H, C]);
    const b2 = g.input('b2', 'float32', [C]);
    const h = g.op('Relu', [g.op('Gemm', [x, w1, b1], { alpha: f(1) })[0]])[0]; // (N, H)
    const logits = g.op('Add', [g.op('MatMul', [h, w2])[0], b2])[0]; // (N, C)
    const loss = g.op('SoftmaxCrossEntropyLoss', [logits, y], {}, { outputs: 1 })[0];
    g.output(loss, 'loss');
    const params: Value[] = [w1, b1, w2, b2];
    const grads = gradients(g, loss, params);
    for (const p of params) g.output(grads.get(p.name)!, `grad_${p.name}`);

    const session = await ort.InferenceSession.create(serializeModel(g).model);
    const values: Record<string, Float32Array> = {
      w1: Float32Array.from({ length: D * H }, () => (rand() * 2 - 1) * 0.5),
      b1: new Float32Array(H),
      w2: Float32Array.from({ length: H * C }, () => (rand() * 2 - 1) * 0.5),
      b2: new Float32Array(C),
    };
    const losses: number[] = [];
    for (let step = 0; step < 150; step++) {
      const feeds: Record<string, ort.Tensor> = {
        x: new ort.Tensor('float32', Float32Array.from(xs), [N, D]),
        y: new ort.Tensor('int64', BigInt64Array.from(labels.map(BigInt)), [N]),
      };
      for (const p of params) feeds[p.name] = new ort.Tensor('float32', values[p.name], p.shape as number[]);
      const out = await session.run(feeds);
      losses.push((out.loss.data as Float32Array)[0]);
      for (const p of params) {
        const gp = out[`grad_${p.name}`].data as Float32Array;
        values[p.name] = values[p.name].map((v, i) => v - 0.5 * gp[i]);
      }
    }
    await session.release();
    expect(losses[0]).toBeGreaterThan(0.9); // about ln 3 at the start
    expect(losses[losses.length - 1]).toBeLessThan(0.3 * losses[0]);
  });
});
