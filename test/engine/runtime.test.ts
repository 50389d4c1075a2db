import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tensor } from 'onnxruntime-node';
import { Graph, ops, saveModel, serializeModel, tensor, type DType } from '../../engine/graph';
import {
  checkCudaInstalled,
  createSession,
  CUDA_INSTALL_STEP,
  CudaUnavailableError,
  NonFiniteLossError,
  StepRunner,
} from '../../engine/runtime';

const N = 5;
const LR = 0.1;

/**
 * A plain-SGD training step with the fed gradient `grad` standing in for backprop:
 *   param_out:w = w - lr * grad;  state_out:acc = acc + grad (a running sum)
 *   loss = sum(w_out^2) / 2, or the batch input `poison` added to it
 *   grad_norm = sqrt(sum(grad^2));  lr_used = lr * (step + 1)  (checks which step was fed)
 */
function sgdStep(stepType: DType = 'float32') {
  const g = new Graph('sgd_step');
  const w = g.input('param:w', 'float32', [N]);
  const acc = g.input('state:acc', 'float32', [N]);
  const grad = g.input('grad', 'float32', [N]);
  const poison = g.input('poison', 'float32', []);
  const step = g.input('step', stepType, []);
  const wOut = ops.sub(w, ops.mul(grad, g.scalar(LR)));
  g.output(wOut, 'param_out:w');
  g.output(ops.add(acc, grad), 'state_out:acc');
  const half = ops.mul(ops.reduceSum(ops.mul(wOut, wOut), [0], false), g.scalar(0.5));
  g.output(ops.add(half, poison), 'loss');
  g.output(ops.sqrt(ops.reduceSum(ops.mul(grad, grad), [0], false)), 'grad_norm');
  const stepF = stepType === 'float32' ? step : ops.cast(step, 1);
  g.output(ops.mul(ops.add(stepF, g.scalar(1)), g.scalar(LR)), 'lr_used');
  return g;
}

const grads = [
  [1, 2, 3, 4, 5],
  [-1, 0.5, 0, 2, -3],
  [0.25, 0.25, -4, 1, 1],
];
const w0 = Float32Array.from([1, -1, 0.5, 2, 0]);
const feed = (gr: number[], poison = 0) => ({
  grad: new Tensor('float32', Float32Array.from(gr), [N]),
  poison: new Tensor('float32', Float32Array.from([poison]), []),
});

describe('StepRunner', () => {
  it.each(['float32', 'int64'] as const)('ping-pongs params and state across 3 steps to the closed form (step input %s)', async (stepType) => {
    const session = await createSession(serializeModel(sgdStep(stepType)).model, { intraOpThreads: 1 });
    const runner = new StepRunner(session, { params: { w: w0 } });
    expect(runner.batchInputs).toEqual(['grad', 'poison']);
    const results = [];
    for (const gr of grads) results.push(await runner.run(feed(gr)));

    // w3 = w0 - lr * (g1 + g2 + g3); acc3 = g1 + g2 + g3.
    const sum = w0.map((_, i) => grads.reduce((s, gr) => s + gr[i], 0));
    const w3 = runner.getParams().w;
    w3.forEach((v, i) => expect(v).toBeCloseTo(w0[i] - LR * sum[i], 5));
    runner.getState().acc.forEach((v, i) => expect(v).toBeCloseTo(sum[i], 5));
    expect(results.map((r) => r.step)).toEqual([0, 1, 2]);
    results.forEach((r, k) => expect(r.scalars.lr_used).toBeCloseTo(LR * (k + 1), 6));
    expect(results[0].gradNorm).toBeCloseTo(Math.sqrt(55), 5);
    expect(results[2].loss).toBeCloseTo(w3.reduce((s, v) => s + v * v, 0) / 2, 4);
    expect(runner.step).toBe(3);
    await session.release();
  });

  it('returns weights as copies, and setParams/setState replace what the next step reads', async () => {
    const session = await createSession(serializeModel(sgdStep()).model);
    const runner = new StepRunner(session, { params: { w: w0 }, state: { acc: new Float32Array(N).fill(10) }, step: 7 });
    const snapshot = runner.getParams().w;
    snapshot.fill(99); // must not leak into the runner
    const r = await runner.run(feed(grads[0]));
    expect(r.step).toBe(7);
    expect(Array.from(runner.getParams().w)).toEqual(Array.from(w0, (v, i) => Math.fround(v - Math.fround(LR * grads[0][i]))));
    expect(Array.from(runner.getState().acc)).toEqual([11, 12, 13, 14, 15]);

    runner.setParams({ w: new Float32Array(N) });
    runner.setState({ acc: new Float32Array(N) });
    await runner.run(feed([10, 10, 10, 10, 10]));
    expect(Array.from(runner.getParams().w)).toEqual(new Array(N).fill(-1));
    expect(Array.from(runner.getState().acc)).toEqual(new Array(N).fill(10));
    await session.release();
  });

  it('on a NaN loss throws naming the step and keeps the weights from before it', async () => {
    const session = await createSession(serializeModel(sgdStep()).model);
    const runner = new StepRunner(session, { params: { w: w0 } });
    await runner.run(feed(grads[0]));
    const before = runner.getParams().w;
    await expect(runner.run(feed(grads[1], NaN))).rejects.toThrow(NonFiniteLossError);
    await expect(runner.run(feed(grads[1], NaN))).rejects.toThrow(/training step 1: loss is NaN/);
    expect(runner.getParams().w).toEqual(before);
    expect(runner.step).toBe(1);
    // The run goes on from the same weights once the batch is sane again.
    expect((await runner.run(feed(grads[1]))).step).toBe(1);
    await session.release();
  });

  it('names the missing batch input, the wrong-sized param and the unknown param', async () => {
    const session = await createSession(serializeModel(sgdStep()).model);
    expect(() => new StepRunner(session, { params: {} })).toThrow(/set params: "w" is missing/);
    expect(() => new StepRunner(session, { params: { w: new Float32Array(3) } })).toThrow(/set param "w": 3 values for shape \[5\] \(5\)/);
    expect(() => new StepRunner(session, { params: { w: w0, v: w0 } })).toThrow(/session has no input "param:v"/);
    const runner = new StepRunner(session, { params: { w: w0 } });
    await expect(runner.run({ grad: feed(grads[0]).grad })).rejects.toThrow(/batch input "poison" is missing \(need: grad, poison\)/);
    await session.release();
  });

  it('feeds frozen weights every step and accepts IR TensorData batches', async () => {
    // param_out:w = w - lr * base * g, with base a frozen input: after two steps w0 - lr*base*(g1+g2).
    const g = new Graph('frozen');
    const w = g.input('param:w', 'float32', [3]);
    const base = g.input('frozen:base', 'float32', [3]);
    const gr = g.input('g', 'float32', [3]);
    g.output(ops.sub(w, ops.mul(ops.mul(base, gr), g.scalar(LR))), 'param_out:w');
    g.output(ops.reduceSum(w, [0], false), 'loss');
    g.output(ops.reduceSum(gr, [0], false), 'grad_norm');
    const session = await createSession(serializeModel(g).model);
    expect(() => new StepRunner(session, { params: { w: new Float32Array(3) } })).toThrow(/set frozen weights: "base" is missing/);
    const runner = new StepRunner(session, { params: { w: new Float32Array(3) }, frozen: { base: Float32Array.from([1, 2, 3]) } });
    expect(runner.batchInputs).toEqual(['g']);
    await runner.run({ g: tensor('float32', [3], [1, 1, 1]) });
    await runner.run({ g: tensor('float32', [3], [2, 0, -1]) });
    Array.from(runner.getParams().w).forEach((v, i) => expect(v).toBeCloseTo(-LR * [1, 2, 3][i] * [3, 1, 0][i], 6));
    await session.release();
  });

  it('refuses a session without a matching param_out or a loss', async () => {
    const g = new Graph('bad');
    const w = g.input('param:w', 'float32', [2]);
    g.output(ops.identity(w), 'loss_typo');
    const session = await createSession(serializeModel(g).model);
    expect(() => new StepRunner(session, { params: { w: new Float32Array(2) } })).toThrow(/no "loss" output/);
    await session.release();
  });
});

describe('createSession', () => {
  it('loads a model from a path with external data and runs it with the given thread counts', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-rt-'));
    try {
      const g = new Graph('scale');
      const x = g.input('x', 'float32', ['n', 512]);
      const w = g.initializer('w', { dtype: 'float32', dims: [512], data: Float32Array.from({ length: 512 }, (_, i) => i) });
      g.output(ops.mul(x, w), 'y');
      const file = path.join(dir, 'm.onnx');
      saveModel(g, file, { externalData: { location: 'm.data' } });
      const s = await createSession(file, { intraOpThreads: 1, interOpThreads: 1, graphOptimizationLevel: 'all', logSeverity: 'error' });
      const out = await s.run({ x: new Tensor('float32', new Float32Array(1024).fill(2), [2, 512]) });
      expect((out.y.data as Float32Array)[511 + 512]).toBe(1022);
      await s.release();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says which model failed and why', async () => {
    await expect(createSession(new Uint8Array([1, 2, 3]))).rejects.toThrow(/createSession\(model \(3 bytes\)\)/);
    await expect(createSession('/nonexistent/model.onnx')).rejects.toThrow(/\/nonexistent\/model\.onnx/);
  });

  const cudaInstalled = (() => {
    try {
      checkCudaInstalled();
      return true;
    } catch {
      return false;
    }
  })();
  (cudaInstalled ? it.skip : it)('asks for CUDA without the CUDA provider installed: the error names the install step', async () => {
    const g = new Graph('relu');
    g.output(ops.relu(g.input('x', 'float32', [2])), 'y');
    const err = await createSession(serializeModel(g).model, { ep: 'cuda', deviceId: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CudaUnavailableError);
    expect((err as Error).message).toContain(CUDA_INSTALL_STEP);
    expect((err as Error).message).toMatch(/libonnxruntime_providers_shared\.so and libonnxruntime_providers_cuda\.so not found/);
  });
});
