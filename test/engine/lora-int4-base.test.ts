// LoRA on an int4 base (`lora.baseQuantization: 'int4'`): the tile quantizer's error bound, the
// exact transposed copy, adapter gradients against a float base holding the dequantized weights,
// and the step's loss against the float base. Also: both quantized bases are fed as inputs, so the
// step graph holds no quantized (or float) copy of the linear weights.

import '../../engine/runtime/host-realm';
import * as ort from 'onnxruntime-node';
import path from 'node:path';
import { gradients } from '../../engine/autodiff/gradients';
import { Graph, type Value } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { buildImportedLoraStep, buildWithLora, initAdapters, isAdapterParam, loraModel, parseLoraConfig, planLora, quantizableWeights, quantizedInputs, quantizeLoraBase, type LoraPlan, type QuantizedBase } from '../../engine/lora';
import { initParams, mulberry32, type ParamLookup } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainLoss } from '../../engine/models/gpt';
import { OptimConfigSchema } from '../../engine/optim';
import { dequantizeInt4Blocks, quantizeInt4Tiles } from '../../engine/quant/weights';
import '../../engine/quant/rules';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';
import { affineStream, relErr } from '../helpers/lora-base';
import { GptBase } from '../../engine/finetune';
import { mergeWeights } from '../../engine/lora';

const cfg = GptConfigSchema.parse({ vocab_size: 64, block_size: 16, n_layer: 2, n_head: 2, n_embd: 64 });
const [B, T] = [4, 16];
const base = { params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) };
const baseWeights = initParams(base.params, 1);
baseWeights.set('wte', baseWeights.get('wte')!.map((x) => x * 5)); // a head sharp enough for the adapters to move the loss
const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 }, grad_clip: 1 });

const batch = (seed: number): Batch => affineStream(cfg.vocab_size, B, T, seed);

/** d loss / d adapters of one batch: on `weights` as a float base, or on the quantized base `q`. */
async function adapterGrads(plan: LoraPlan, weights: Map<string, Float32Array>, q: QuantizedBase | null): Promise<Map<string, Float32Array>> {
  const g = new Graph('grads');
  const inputs = new Map<string, Value>();
  const p: ParamLookup = (name) => {
    const known = inputs.get(name);
    if (known) return known;
    const spec = [...base.params, ...plan.adapterParams].find((s) => s.name === name)!;
    const v = isAdapterParam(name) ? g.input(name, 'float32', spec.shape) : g.initializer(name, { dtype: 'float32', dims: spec.shape, data: weights.get(name)! });
    inputs.set(name, v);
    return v;
  };
  g.input('step', 'float32', []);
  const loss = buildWithLora(g, p, plan, (pp) => base.loss(g, pp), { quantized: q });
  const wrt = plan.adapterParams.map((s) => p(s.name));
  const grads = gradients(g, loss, wrt);
  for (const s of plan.adapterParams) g.output(grads.get(s.name)!, `grad:${s.name}`);
  g.prune();
  const session = await ort.InferenceSession.create(serializeModel(g).model);
  const adapters = initAdapters(plan);
  const r = mulberry32(5);
  for (const [name, t] of adapters) if (name.endsWith('lora_B.weight')) for (let i = 0; i < t.length; i++) t[i] = (r() - 0.5) * 0.2;
  const b = batch(1);
  const feeds: Record<string, ort.Tensor> = { tokens: new ort.Tensor('int64', b.tokens.data as BigInt64Array, [B, T]), targets: new ort.Tensor('int64', b.targets.data as BigInt64Array, [B, T]), step: new ort.Tensor('float32', Float32Array.of(0), []) };
  for (const s of plan.adapterParams) feeds[s.name] = new ort.Tensor('float32', adapters.get(s.name)!, s.shape);
  const fixed = q ? quantizedInputs(q) : new Map();
  for (const v of g.inputs) {
    const t = fixed.get(v.name.slice('frozen:'.length));
    if (t) feeds[v.name] = new ort.Tensor(t.dtype, t.data, t.dims);
  }
  const out = await session.run(feeds);
  await session.release();
  return new Map(plan.adapterParams.map((s) => [s.name, out[`grad:${s.name}`].data as Float32Array]));
}

describe('int4 tiles (quantizeInt4Tiles)', () => {
  it.each([
    [32, true],
    [32, false],
    [128, true],
    [128, false],
  ])('block %i, symmetric %s: |W − deq(q(W))| within each block’s bound, and the transposed copy dequantizes to exactly Wᵀ’s', (bs, symmetric) => {
    const [K, N] = [160, 200]; // not multiples of 128: padded edge tiles
    const r = mulberry32(bs + (symmetric ? 1 : 0));
    const W = Float32Array.from({ length: K * N }, () => (r() - 0.5) * (r() < 0.01 ? 2 : 0.2)); // a few outliers
    const t = quantizeInt4Tiles(W, K, N, bs, symmetric);
    const fwd = dequantizeInt4Blocks(t.forward, K, N, bs); // (K, N)
    const bwd = dequantizeInt4Blocks(t.transposed, N, K, bs); // (N, K)
    let worstRatio = 0;
    const bad: string[] = []; // one expect at the end: 32,000 expects take 20 s
    for (let k = 0; k < K; k++) {
      for (let n = 0; n < N; n++) {
        if (bwd[n * K + k] !== fwd[k * N + n]) bad.push(`Wᵀ copy differs at (${k}, ${n})`); // the same codes, scales and zero points
        const blk = n * t.forward.kBlocks + Math.floor(k / bs);
        const s = t.forward.scales[blk]; // signed for symmetric blocks (extreme / −8)
        const zpByte = t.forward.zeroPoints ? t.forward.zeroPoints[n * Math.ceil(t.forward.kBlocks / 2) + (Math.floor(k / bs) >> 1)] : 8;
        const zp = t.forward.zeroPoints ? (Math.floor(k / bs) & 1 ? zpByte >> 4 : zpByte & 15) : 8;
        const u = Math.round(W[k * N + n] / s) + zp; // the code before clamping to 0..15
        // Half a step, unless the code was clamped: then at most one step (in a symmetric block the
        // extreme weight sits on −8, so its mirror +|extreme| clamps to +7).
        const bound = u < 0 || u > 15 ? Math.abs(s) : Math.abs(s) / 2;
        if ((u < 0 || u > 15) && Math.min(Math.abs(u), Math.abs(u - 15)) > 1) bad.push(`code ${u} at (${k}, ${n}) clamped by more than one step`);
        const err = Math.abs(W[k * N + n] - fwd[k * N + n]);
        worstRatio = Math.max(worstRatio, err / Math.abs(s));
        if (err > bound * (1 + 1e-6) + 1e-12) bad.push(`|ΔW| ${err} > ${bound} at (${k}, ${n})`);
      }
    }
    expect(bad.slice(0, 5)).toEqual([]);
    expect(worstRatio).toBeGreaterThan(0.4); // the bound is reached, not loose
  });
});

describe("baseQuantization: 'int4'", () => {
  it('is a LoRA config field with baseBlockSize 32|128 and baseSymmetric, each refused outside int4, naming the field', () => {
    expect(parseLoraConfig({ baseQuantization: 'int4', baseBlockSize: 128, baseSymmetric: false })).toMatchObject({ baseQuantization: 'int4', baseBlockSize: 128, baseSymmetric: false });
    expect(() => parseLoraConfig({ baseQuantization: 'int4', baseBlockSize: 64 })).toThrow(/lora\.baseBlockSize: /);
    expect(() => parseLoraConfig({ baseQuantization: 'int8', baseBlockSize: 32 })).toThrow(/lora\.baseBlockSize: only applies to baseQuantization: int4/);
    expect(() => parseLoraConfig({ baseSymmetric: true })).toThrow(/lora\.baseSymmetric: only applies to baseQuantization: int4 \(got none\)/);
  });

  it.each([
    [true, 32],
    [false, 32],
  ])('symmetric %s: adapter gradients equal a float base holding the dequantized weights', async (symmetric, bs) => {
    const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8, baseQuantization: 'int4', baseBlockSize: bs as 32, baseSymmetric: symmetric });
    const q = quantizeLoraBase(base, plan, baseWeights)!;
    const deq = new Map(baseWeights);
    for (const [name, l] of q.linears) {
      const t = quantizeInt4Tiles(baseWeights.get(name)!, l.K, l.N, bs, symmetric);
      deq.set(name, dequantizeInt4Blocks(t.forward, l.K, l.N, bs));
    }
    const floatPlan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8 });
    const ref = await adapterGrads(floatPlan, deq, null);
    const got = await adapterGrads(plan, baseWeights, q);
    const onFloat = await adapterGrads(floatPlan, baseWeights, null);
    let worst = 0;
    let vsFloat = 0;
    for (const [name, gr] of ref) {
      worst = Math.max(worst, relErr(got.get(name)!, gr));
      vsFloat = Math.max(vsFloat, relErr(got.get(name)!, onFloat.get(name)!));
    }
    // Observed worst over the 16 adapter tensors: 0 (bit-identical: with its weight an input, ORT's
    // MatMulNBits dequantizes and runs the same float GEMM); against the original float base the
    // int4 error shows: 1.3e-1 (symmetric) and 1.4e-1 (zero points). 1e-5 is the bar of the issue.
    expect(worst).toBeLessThan(1e-5);
    expect(vsFloat).toBeGreaterThan(100 * worst); // really a different (quantized) base
    console.log(`int4 sym=${symmetric}: adapter grads vs dequantized float base ${worst.toExponential(2)}, vs the float base ${vsFloat.toExponential(2)}`);
  });

  it('an imported .onnx base refuses int4, naming the field', async () => {
    const hfBert = path.join(__dirname, '..', 'fixtures', 'lora', 'hf-bert-mlm.onnx');
    await expect(buildImportedLoraStep(hfBert, { target_modules: ['query', 'value'], r: 4, baseQuantization: 'int4' }, optim, { inputShapes: { input_ids: [2, 8], attention_mask: [2, 8] } })).rejects.toThrow(
      /^lora\.baseQuantization: int4 is supported on GPT checkpoints only/,
    );
  });

  it('the step reads no float linear weight: MatMulNBits over fed inputs, no initializer holds a weight', () => {
    const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8, baseQuantization: 'int4' });
    const step = buildTrainStep(loraModel(base, plan, baseWeights), optim, { trainable: isAdapterParam });
    const linear = /\.(c_attn|c_proj|c_fc)\.weight$/;
    expect(step.frozen.filter((s) => linear.test(s.name))).toEqual([]);
    const ops = step.graph.nodes.map((n) => n.opType);
    expect(ops.filter((o) => o === 'MatMulNBits').length).toBe(2 * cfg.n_layer * 4 - 1); // forward 8, input grads 7 (none below layer 0's c_attn)
    const bigInit = [...step.graph.initializers.values()].filter((t) => t.data.byteLength > 4096);
    expect(bigInit).toEqual([]);
    // Fed: forward and transposed codes + scales per linear, less layer 0 c_attn's unused transposed copy.
    expect(step.fixed!.size).toBe(4 * quantizableWeights(base).size - 2);
    expect(step.graph.inputs.filter((v) => v.name.startsWith('frozen:') && v.dtype === 'uint8').length).toBe(2 * (cfg.n_layer * 4) - 1); // codes forward + transposed per linear (symmetric: no zero points)
  });

  it('30 steps fitting one batch on the int4 base reach the loss of the float base', async () => {
    const losses: Record<string, number[]> = {};
    const fast = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 3e-2, weight_decay: 0 }, grad_clip: 1 });
    for (const mode of ['none', 'int4'] as const) {
      const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 8, lora_alpha: 16, baseQuantization: mode });
      const step = buildTrainStep(loraModel(base, plan, baseWeights), fast, { trainable: isAdapterParam });
      const trainer = await Trainer.create(step, { weights: new Map([...baseWeights, ...initAdapters(plan)]) });
      losses[mode] = [];
      for (let i = 0; i < 30; i++) losses[mode].push((await trainer.run(batch(100))).loss);
      await trainer.release();
    }
    const [f, q] = [losses.none, losses.int4];
    const tail = (l: number[]) => l.slice(-5).reduce((a, b) => a + b, 0) / 5;
    console.log(`int4 vs float: step 1 ${q[0]} vs ${f[0]}, last-5 means ${tail(q)} vs ${tail(f)}`);
    expect(tail(f)).toBeLessThan(f[0] - 1.5); // it learns: observed 6.536 → 2.644 (mean of the last 5)
    // Observed: step 1 6.5375 (int4) vs 6.5357, |Δ| 1.8e-3; last-5 means 2.489 vs 2.644, |Δ| 0.155 —
    // the int4 base's error is ~14% of a weight gradient, so the trajectories part further than int8's.
    expect(q[0]).not.toBe(f[0]);
    expect(Math.abs(q[0] - f[0])).toBeLessThan(1e-2);
    expect(Math.abs(tail(q) - tail(f))).toBeLessThan(0.4);
  });
});

describe('GptBase on a quantized base', () => {
  it('holds no float linear weight while a step runner exists, reads the base again to merge, and merges into the float weights', async () => {
    const lora = parseLoraConfig({ family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8, baseQuantization: 'int4' });
    const weights = new Map([...baseWeights].map(([k, v]) => [k, v.slice()]));
    let reloads = 0;
    const gb = new GptBase(cfg, weights, lora, { batchSize: B, contextLength: T }, async () => {
      reloads++;
      return new Map([...baseWeights].map(([k, v]) => [k, v.slice()]));
    });
    const linears = [...quantizableWeights(base).keys()];
    const c = await gb.compile(optim, { batchSize: B, contextLength: T }, {});
    expect(linears.every((k) => weights.has(k))).toBe(true); // compiled, not training yet
    const runner = c.runner({ step: 0, params: Object.fromEntries(initAdapters(gb.plan)), state: {} });
    expect(linears.filter((k) => weights.has(k))).toEqual([]); // training: no float copy
    const loss = (await runner.run(batch(3))).loss;
    expect(Number.isFinite(loss)).toBe(true);
    const adapters = new Map(Object.entries(runner.getParams()));
    const merged = await gb.merge(adapters);
    expect(reloads).toBe(1);
    expect(linears.every((k) => weights.has(k))).toBe(true);
    const expected = mergeWeights(baseWeights, gb.plan, adapters); // the float base, not the dequantized one
    for (const [k, v] of expected) expect(merged.get(k)).toEqual(v);
    await runner.release();
    await gb.release();
  });
});
