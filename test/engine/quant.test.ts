// Post-training quantization on real data: a tiny GPT trained briefly on Brown (byte vocab) is
// exported, quantized three ways, re-loaded from the saved file and scored. The bounds are the
// issue's: int8 within 2% of fp32 perplexity, int4 within 5%. Kernel-level checks compare each
// quantized Linear in ORT against the dequantization formula computed here.
//
// Figures seen on the 2-core dev box (2 layers × 64, 400 steps, 8 val batches of 8×64 tokens):
// fp32 ppl 11.236; int8 dynamic +0.01%, int8 static +0.01% (minmax and percentile), int4 (block 32)
// +0.02%; int4 (block 128) with the LM head quantized too +0.49%. Weight bytes shrink 2.5× (int8)
// and 3.2× (int4) with the 259×64 embedding kept float.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import '../../engine/graph';
import { prepareDataset, shardTokens } from '../../engine/data/dataset';
import { evalLmBatches, sampleLmBatch, type LmBatch } from '../../engine/data/sampler';
import { Graph, type Value } from '../../engine/graph/ir';
import { loadModel, saveModel, serializeModel } from '../../engine/graph/onnx';
import { lmFeeds, lmPerplexity } from '../../engine/eval/lm';
import { modelFileBytes } from '../../engine/eval/speed';
import { mulberry32 } from '../../engine/models/blocks';
import { exportGpt } from '../../engine/models/export';
import { GptConfigSchema, gptParams, gptTrainLoss } from '../../engine/models/gpt';
import { OptimConfigSchema } from '../../engine/optim';
import { quantizeGraph, QuantRejectedError, validateQuantized, type QuantConfigInput } from '../../engine/quant';
import { percentileRange } from '../../engine/quant/calibrate';
import { activationQParams } from '../../engine/quant/methods';
import { dequantizeInt4Blocks, quantizeInt4Blocks, quantizeInt8PerChannel } from '../../engine/quant/weights';
import { createSession } from '../../engine/runtime';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer } from '../../engine/train/trainer';

const threads = { intraOpThreads: 1 };

function randn(n: number, seed: number, std = 1): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()) * std);
}

/** (M, K) @ (K, N) in float64. */
function refMatmul(x: Float32Array, w: Float32Array, M: number, K: number, N: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) y[m * N + n] += x[m * K + k] * w[k * N + n];
  return y;
}

/** A one-Linear graph y = x @ W (+ b), W a constant (K, N), for kernel checks. */
function linearGraph(W: Float32Array, K: number, N: number, bias?: Float32Array): Graph {
  const g = new Graph('linear');
  const x = g.input('x', 'float32', ['rows', K]);
  let y: Value = g.op('MatMul', [x, g.initializer('fc.weight', { dtype: 'float32', dims: [K, N], data: W })], {}, { name: 'fc' })[0];
  if (bias) y = g.op('Add', [y, g.initializer('fc.bias', { dtype: 'float32', dims: [N], data: bias })])[0];
  g.output(y, 'y');
  return g;
}

async function runLinear(g: Graph, x: Float32Array, M: number, K: number): Promise<Float32Array> {
  const s = await createSession(serializeModel(g).model, threads);
  const r = await s.run({ x: new ort.Tensor('float32', x, [M, K]) });
  await s.release();
  return r.y.data as Float32Array;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe('quantized Linear kernels match the dequantization formula', () => {
  const [M, K, N] = [6, 80, 24]; // K = 80 is not a multiple of 32/64/128: the last block is padded
  const W = randn(K * N, 1, 0.05);
  const x = randn(M * K, 2);

  test.each([
    [32, true],
    [64, false],
    [128, true],
  ])('int4 MatMulNBits block %i (symmetric %s): ORT output = x @ dequant(W) and dequant(W) ≈ W', async (blockSize, symmetric) => {
    const packed = quantizeInt4Blocks(W, K, N, blockSize, symmetric);
    const deq = dequantizeInt4Blocks(packed, K, N, blockSize);
    // Asymmetric blocks round to the nearest of 16 levels: error ≤ half a step. Symmetric blocks put
    // the extreme on −8, so the other sign tops out at 7 steps: up to one step of clipping there.
    const step = Math.max(...packed.scales.map(Math.abs));
    expect(maxAbsDiff(deq, W)).toBeLessThanOrEqual((symmetric ? step : step / 2) + 1e-6);
    const { graph, report } = await quantizeGraph(linearGraph(W, K, N), { method: 'int4', blockSize: blockSize as 32 | 64 | 128, symmetric });
    expect(report.quantized).toEqual([{ node: 'fc', weight: 'fc.weight', shape: [K, N], kernel: expect.stringContaining('MatMulNBits') }]);
    expect(graph.nodes.some((n) => n.opType === 'MatMulNBits' && n.domain === 'com.microsoft')).toBe(true);
    const y = await runLinear(graph, x, M, K);
    expect(maxAbsDiff(y, refMatmul(x, deq, M, K, N))).toBeLessThan(1e-4);
  });

  test('int8 dynamic, both kernels: close to the float product, and the weight file is ~4× smaller', async () => {
    const bias = randn(N, 3, 0.1);
    const ref = refMatmul(x, W, M, K, N).map((v, i) => v + bias[i % N]);
    const scale = Math.max(...Array.from(ref, Math.abs));
    const { q, scale: ws } = quantizeInt8PerChannel(W, K, N);
    expect(Math.max(...Array.from(q, Math.abs))).toBe(127);
    expect(ws).toHaveLength(N);
    for (const kernel of ['dynamic-quantize-matmul', 'matmul-integer'] as const) {
      const { graph, report } = await quantizeGraph(linearGraph(W, K, N, bias), { method: 'int8-dynamic', kernel });
      expect(report.weightBytesBefore).toBe(4 * (K * N + N));
      expect(report.weightBytesAfter).toBe(K * N + 4 * N + 4 * N); // int8 W + float scales + bias
      const y = await runLinear(graph, x, M, K);
      // Activation and 7-bit weight rounding: 1.5% of the output range observed for K = 80 (AVX2;
      // full 8-bit weights gave 16% there, from u8·s8 int16 saturation).
      expect(maxAbsDiff(y, ref) / scale).toBeLessThan(0.02);
    }
  });

  test('activation parameters keep zero exact; percentile trims the tails of a histogram', () => {
    const qp = activationQParams(-1, 3, 'int8', false);
    expect(qp.scale).toBeCloseTo(4 / 255, 7);
    expect(Math.round(0 / qp.scale) + qp.zeroPoint).toBe(qp.zeroPoint); // 0 → zero point → 0
    expect(-128 + (0 - -1) / qp.scale).toBeCloseTo(qp.zeroPoint, 0);
    expect(activationQParams(0.5, 2, 'uint8', false).zeroPoint).toBe(0); // range widened to include 0
    const h = new Float64Array(100).fill(0);
    h[0] = 1; // one outlier at the bottom
    h[99] = 1; // and one at the top
    for (let i = 40; i < 60; i++) h[i] = 100;
    expect(percentileRange(h, { lo: 0, hi: 100 }, 0.01)).toEqual({ lo: 40, hi: 60 });
    expect(percentileRange(h, { lo: 0, hi: 100 }, 0)).toEqual({ lo: 0, hi: 100 });
  });

  test('bad configs are refused naming the field', async () => {
    const g = linearGraph(W, K, N);
    await expect(quantizeGraph(g, { method: 'int4', blockSize: 48 } as unknown as QuantConfigInput)).rejects.toThrow(/quant config: blockSize/);
    await expect(quantizeGraph(g, { method: 'int8-static' })).rejects.toThrow(/calibration: int8-static needs calibration batches/);
  });

  test('onSite is awaited after each Linear, changes no byte of the result, and a throw there stops the quantization', async () => {
    const g = linearGraph(W, K, N);
    const calls: [number, number][] = [];
    const plain = await quantizeGraph(g, { method: 'int4', blockSize: 32 });
    const paced = await quantizeGraph(g, { method: 'int4', blockSize: 32 }, { onSite: async (done, of) => {
      await new Promise((r) => setImmediate(r));
      calls.push([done, of]);
    } });
    expect(calls).toEqual([[1, 1]]);
    expect(Buffer.from(serializeModel(paced.graph).model).equals(Buffer.from(serializeModel(plain.graph).model))).toBe(true);
    await expect(quantizeGraph(g, { method: 'int8-dynamic' }, { onSite: () => { throw new Error('cancelled'); } })).rejects.toThrow('cancelled');
  });
});

describe('tiny GPT trained on Brown', () => {
  const cfg = GptConfigSchema.parse({ vocab_size: 259, block_size: 64, n_layer: 2, n_head: 2, n_embd: 64 });
  let dir: string;
  let fp32: Graph;
  let fp32Ppl: number;
  let val: LmBatch[];
  let calibration: ReturnType<typeof lmFeeds>[];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-quant-'));
    const m = await prepareDataset({ name: 'brown-quant', corpus: { kind: 'brown', categories: ['humor', 'science_fiction', 'religion'] }, valFraction: 0.2, seed: 1 }, dir);
    const train = shardTokens(fs.readFileSync(path.join(dir, 'train-0.bin')), m.dtype);
    const valIds = shardTokens(fs.readFileSync(path.join(dir, 'val-0.bin')), m.dtype);
    const [B, T] = [8, 64];
    const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0 } }));
    const trainer = await Trainer.create(step, { seed: 1, sessionConfig: threads });
    for (let s = 0; s < 400; s++) {
      const b = sampleLmBatch(train, { seed: 1, shard: 0, step: s, batchSize: B, contextLength: T });
      await trainer.run({ tokens: { dtype: 'int64', dims: [B, T], data: b.tokens }, targets: { dtype: 'int64', dims: [B, T], data: b.targets } });
    }
    const weights = trainer.params();
    await trainer.release();
    fp32 = exportGpt(cfg, weights);
    val = [...evalLmBatches(valIds, 8, 64)].slice(0, 8);
    calibration = [...evalLmBatches(train, 8, 64)].slice(0, 4).map((b) => lmFeeds(fp32, b.tokens, b.dims));
    fp32Ppl = (await lmPerplexity(fp32, val, threads)).ppl;
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('the fp32 model learned: perplexity far below the 259-way uniform guess', () => {
    expect(fp32Ppl).toBeLessThan(16);
    expect(val.reduce((n, b) => n + b.dims[0] * b.dims[1], 0)).toBe(8 * 8 * 64);
  });

  test.each<[string, QuantConfigInput, number, number]>([
    ['int8 dynamic (DynamicQuantizeMatMul)', { method: 'int8-dynamic' }, 0.02, 2.4],
    ['int8 dynamic (MatMulInteger)', { method: 'int8-dynamic', kernel: 'matmul-integer' }, 0.02, 2.4],
    ['int8 static QDQ, MinMax', { method: 'int8-static', calibration: { batches: 4, method: 'minmax' } }, 0.02, 2.4],
    ['int8 static QDQ, percentile', { method: 'int8-static', calibration: { batches: 4, method: 'percentile', percentile: 99.99 } }, 0.02, 2.4],
    ['int4 MatMulNBits block 32', { method: 'int4', blockSize: 32 }, 0.05, 3.0],
  ])('%s: saved, re-loaded and within the perplexity bound', async (label, config, bound, minCompression) => {
    const { graph, report } = await quantizeGraph(fp32, { ...config, maxPplIncrease: bound }, { calibration, sessionConfig: threads });
    // Every block Linear is quantized; the tied LM head (wte) stays float by default.
    expect(report.quantized.map((q) => q.weight).sort()).toEqual(
      ['h.0.attn.c_attn.weight', 'h.0.attn.c_proj.weight', 'h.0.mlp.c_fc.weight', 'h.0.mlp.c_proj.weight', 'h.1.attn.c_attn.weight', 'h.1.attn.c_proj.weight', 'h.1.mlp.c_fc.weight', 'h.1.mlp.c_proj.weight'].sort(),
    );
    expect(report.skipped).toEqual([{ node: 'lm_head', reason: 'excluded (weight wte)' }]);
    expect(report.compression).toBeGreaterThan(minCompression);
    const file = path.join(dir, `${label.replace(/\W+/g, '-')}.onnx`);
    saveModel(graph, file);
    const fp32File = path.join(dir, 'fp32.onnx');
    saveModel(fp32, fp32File);
    expect(modelFileBytes(file)).toBeLessThan(modelFileBytes(fp32File) / minCompression + 64 * 1024);
    const v = await validateQuantized(file, fp32Ppl, val, { method: report.method, maxPplIncrease: bound, sessionConfig: threads });
    expect(v.increase).toBeLessThanOrEqual(bound);
    expect(v.ppl).toBeGreaterThan(fp32Ppl * 0.99); // quantization noise does not make the model better by much
    expect(v.tokens).toBe(4096);
  });

  test('a rise above the bound is refused, naming the bound and the figure', async () => {
    // int4 with 128-wide blocks and the LM head quantized too: a visible but small rise.
    const { graph } = await quantizeGraph(fp32, { method: 'int4', blockSize: 128, exclude: [] });
    const bytes = serializeModel(graph).model;
    expect(loadModel(bytes).nodes.filter((n) => n.opType === 'MatMulNBits')).toHaveLength(9);
    const err = await validateQuantized(bytes, fp32Ppl, val, { method: 'int4', maxPplIncrease: 0.001, sessionConfig: threads }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QuantRejectedError);
    const r = err as QuantRejectedError;
    expect(r.increase).toBeGreaterThan(0.001);
    expect(r.message).toMatch(/^int4 model rejected: validation perplexity \d+\.\d{4} vs fp32 \d+\.\d{4} is \d+\.\d\d% higher, above the bound maxPplIncrease = 0\.10%$/);
  });

  test('the KV-cache export quantizes the same Linears and its first step scores like the fp32 no-cache graph', async () => {
    const kv = exportGpt(cfg, new Map([...fp32.initializers].map(([k, t]) => [k, t.data as Float32Array])), { kvCache: true });
    const { graph, report } = await quantizeGraph(kv, { method: 'int8-dynamic' });
    expect(report.quantized).toHaveLength(8);
    expect((await lmPerplexity(kv, val.slice(0, 2), threads)).ppl).toBeCloseTo((await lmPerplexity(fp32, val.slice(0, 2), threads)).ppl, 4);
    expect(graph.outputs.map((v) => v.name)).toEqual(['logits', 'present.0.key', 'present.0.value', 'present.1.key', 'present.1.value']);
  });
});
