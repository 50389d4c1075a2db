// Mixed precision (engine/train/precision.ts) verified on CPU through the emulation: the same
// analysis as the CUDA half graph, every half value rounded through a Cast to half and back.
// What a CPU can check: the rounding is ORT's own Cast; loss scaling skips an overflowed step
// without touching weights or moments, halves the scale and grows it again; updates below half
// precision's resolution accumulate in the fp32 master weights; half gradients are close to fp32
// ones; a resumed run and a K-step run are bit-identical with the scale state; and the CUDA op-set
// check of the half step graphs. No CUDA kernel has run here (no GPU on this machine).

import { sampleLmBatch } from '../../engine/data/sampler';
import { Graph, type TensorData } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { initParams } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainLoss, type GptConfig } from '../../engine/models/gpt';
import { isAdapterParam, loraModel, parseLoraConfig, planLora } from '../../engine/lora';
import { OptimConfigSchema, paramIn } from '../../engine/optim';
import { createSession } from '../../engine/runtime';
import { gradients } from '../../engine/autodiff/gradients';
import { cudaFallbacks, summarizeFallbacks, type CudaKernel } from '../../engine/doctor/cuda-opset';
import { deriveCudaKernels } from '../../engine/doctor/derive-cuda-kernels';
import { AMP_STATE, fromFloat16Bits, mixedGradients, mixedPrecisionFor, roundToHalf, toBfloat16Bits, toFloat16Bits, type MixedPrecision } from '../../engine/train/precision';
import { compileLmTrainStep, runShard, zeroState, type ShardSnapshot } from '../../engine/train/shard';
import { buildTrainStep } from '../../engine/train/step';
import * as ort from 'onnxruntime-node';

const cfg = GptConfigSchema.parse({ vocab_size: 64, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32 });
const B = 4;
const T = 32;
const ids = Uint16Array.from({ length: 4000 }, (_, i) => (i * 7 + ((i >> 3) % 5) * 11 + (i % 13)) % 64);
const run = { ids, seed: 3, shard: 0, batchSize: B, contextLength: T };
const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3, weight_decay: 0.1 }, grad_clip: 1 });
const fp16: MixedPrecision = { precision: 'fp16', mode: 'emulate', growthInterval: 3 };
const bf16: MixedPrecision = { precision: 'bf16', mode: 'emulate' };
const session = { intraOpThreads: 1 };

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
function bitDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): string[] {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  return Object.keys(a).filter((k) => bits(a[k]).join() !== bits(b[k]).join());
}
const start = (c: GptConfig = cfg): ShardSnapshot => ({ step: 0, params: Object.fromEntries(initParams(gptParams(c), 7)), state: {} });

async function compiled(precision: MixedPrecision | undefined, opts: { lr?: number; stepsPerRun?: number; attention?: 'explicit' | 'fused' } = {}) {
  const model = opts.attention ? { ...cfg, attention: opts.attention } : cfg;
  const o = opts.lr ? OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: opts.lr, weight_decay: 0 } }) : optim;
  return compileLmTrainStep({ model, optim: o, batchSize: B, contextLength: T, precision, stepsPerRun: opts.stepsPerRun }, session);
}

describe('half rounding', () => {
  // What the emulation's Cast pair computes is ORT's Cast; the JS conversions (used for constants)
  // must agree with it bit for bit, including ties, overflow and subnormals.
  const xs = Float32Array.from([0, -0, 1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519.99, 65520, 1e6, -1e6, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 1e-8, 0.1, -0.3333, 3.14159, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, Infinity, -Infinity, NaN]);
  it.each([
    ['fp16', 10],
    ['bf16', 16],
  ] as const)('%s: roundToHalf equals ORT Cast float→half→float', async (p, to) => {
    const g = new Graph('cast');
    const x = g.input('x', 'float32', [xs.length]);
    const h = g.op('Cast', [x], { to })[0];
    g.output(g.op('Cast', [h], { to: 1 })[0], 'y');
    const s = await createSession(serializeModel(g).model, session);
    try {
      const y = (await s.run({ x: new ort.Tensor('float32', xs, [xs.length]) })).y.data as Float32Array;
      const ours = Float32Array.from(xs, (v) => roundToHalf(v, p));
      expect(bits(ours)).toEqual(bits(y));
    } finally {
      await s.release();
    }
  });

  it('fp16 overflows to inf above 65519 and keeps subnormals', () => {
    expect(fromFloat16Bits(toFloat16Bits(65519))).toBe(65504);
    expect(fromFloat16Bits(toFloat16Bits(65520))).toBe(Infinity);
    expect(fromFloat16Bits(toFloat16Bits(2 ** -24))).toBe(2 ** -24);
    expect(toBfloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // a tie rounds to even
  });
});

describe('dynamic loss scaling (fp16)', () => {
  it('an overflowed step keeps weights and moments, halves the scale and counts the skip; growth after N good steps', async () => {
    const c = await compiled(fp16);
    try {
      // Step 0 normally, so the moments are not zero, then force an overflow: scale 2^(16+24).
      const r = c.runner({ ...start(), state: zeroState(c.step) });
      await runShard({ ...run, runner: r, endStep: 1 });
      expect(r.getState()[AMP_STATE.goodSteps][0]).toBe(1);
      r.setState({ ...r.getState(), [AMP_STATE.scaleExp]: Float32Array.of(24) });
      const params = r.getParams();
      const state = r.getState();
      const h = await runShard({ ...run, runner: r, endStep: 2 });
      expect(Number.isFinite(h.history[0].loss)).toBe(true);
      expect(Number.isFinite(h.history[0].gradNorm)).toBe(false); // NaN here: inf − inf inside the half backward
      expect(bitDiff(r.getParams(), params)).toEqual([]);
      const after = r.getState();
      const moments = (s: Record<string, Float32Array>) => Object.fromEntries(Object.entries(s).filter(([k]) => !k.startsWith('@amp.')));
      expect(bitDiff(moments(after), moments(state))).toEqual([]);
      expect([after[AMP_STATE.scaleExp][0], after[AMP_STATE.goodSteps][0], after[AMP_STATE.skipped][0]]).toEqual([23, 0, 1]);

      // Back to a scale that fits: 3 finite steps (growthInterval 3) double it once.
      r.setState({ ...after, [AMP_STATE.scaleExp]: Float32Array.of(0) });
      const good = await runShard({ ...run, runner: r, endStep: 5 });
      expect(good.history.every((m) => Number.isFinite(m.gradNorm))).toBe(true);
      const s = r.getState();
      expect([s[AMP_STATE.scaleExp][0], s[AMP_STATE.goodSteps][0], s[AMP_STATE.skipped][0]]).toEqual([1, 0, 1]);
      expect(bitDiff(r.getParams(), params).length).toBeGreaterThan(0);
    } finally {
      await c.session.release();
    }
  });

  it("a skipped step does not count in Adam's bias correction (t = step − skipped + 1)", async () => {
    // Run A overflows at step 0 (skipped), then makes its first real update at step 1. That update
    // must be the one a fresh run makes as its first step (t = 1) on the same batch, bit for bit.
    const c = await compiled(fp16);
    try {
      const a = c.runner({ ...start(), state: { ...zeroState(c.step), [AMP_STATE.scaleExp]: Float32Array.of(24) } });
      await runShard({ ...run, runner: a, endStep: 1 });
      expect(a.getState()[AMP_STATE.skipped][0]).toBe(1);
      a.setState({ ...a.getState(), [AMP_STATE.scaleExp]: Float32Array.of(0) });
      await runShard({ ...run, runner: a, endStep: 2 });
      const ref = c.runner({ ...start(), state: zeroState(c.step) });
      await runShard({ ...run, runner: ref, endStep: 1, batch: () => lmBatch(1) });
      expect(bitDiff(a.getParams(), ref.getParams())).toEqual([]);
    } finally {
      await c.session.release();
    }
  });
});

/** The batch runShard feeds at `step` (engine/train/shard.ts lmFeeds), built the same way. */
function lmBatch(step: number): Record<string, TensorData> {
  const b = sampleLmBatch(ids, { seed: run.seed, shard: 0, step, batchSize: B, contextLength: T });
  return { tokens: { dtype: 'int64', dims: [B, T], data: b.tokens }, targets: { dtype: 'int64', dims: [B, T], data: b.targets } };
}

describe('fp32 master weights', () => {
  it.each([
    ['fp16', fp16, 2 ** -11],
    ['bf16', bf16, 2 ** -8],
  ] as const)('%s: updates below half resolution accumulate in the master weights', async (_name, mp, halfUlp) => {
    // LayerNorm gains start at 1.0, where half precision's spacing is 2^-10 (fp16) / 2^-7 (bf16);
    // AdamW steps of ~lr = 1e-5 are far below half of it, so a half copy of the weight would never
    // move, while the fp32 master does.
    expect(roundToHalf(1 - 1e-5, mp.precision)).toBe(1);
    const c = await compiled(mp, { lr: 1e-5 });
    try {
      const r = c.runner({ ...start(), state: zeroState(c.step) });
      await runShard({ ...run, runner: r, endStep: 8 });
      const w = r.getParams()['ln_f.weight'];
      const moved = Array.from(w, (x) => Math.abs(x - 1));
      expect(Math.min(...moved)).toBeGreaterThan(0);
      expect(Math.max(...moved)).toBeLessThan(halfUlp); // below half the spacing at 1.0: invisible in half
      expect(Math.max(...moved)).toBeGreaterThan(4e-5); // ~8 steps of ~1e-5 each
      expect(Array.from(w).every((x) => roundToHalf(x, mp.precision) === 1)).toBe(true);
    } finally {
      await c.session.release();
    }
  });
});

describe('half gradients against fp32', () => {
  // Gradients of the GPT loss w.r.t. every weight (explicit attention), fp32 vs the emulated half
  // forward/backward, same weights and batch. Observed relative L2 error (worst tensor): fp16
  // 1.12e-3, bf16 1.01e-2; loss |Δ| fp16 9.54e-6, bf16 7.63e-6. Tolerances ≈ 3-4× those.
  it.each([
    ['fp16', fp16, 4e-3, 3e-5],
    ['bf16', bf16, 3e-2, 3e-5],
  ] as const)('%s', async (_name, mp, gradTol, lossTol) => {
    const build = (half: boolean) => {
      const g = new Graph('grads');
      const params = gptParams(cfg).map((p) => g.input(paramIn(p.name), 'float32', p.shape));
      const byName = new Map(gptParams(cfg).map((p, i) => [p.name, params[i]]));
      const step = g.input('step', 'float32', []);
      const loss = gptTrainLoss(cfg, B, T)(g, (n) => byName.get(n)!);
      const grads = half ? mixedGradients(g, loss, params, step, mp).grads : gradients(g, loss, params);
      g.output(half ? g.op('Identity', [loss])[0] : loss, 'loss');
      for (const p of gptParams(cfg)) g.output(grads.get(paramIn(p.name))!, `grad:${p.name}`);
      return g;
    };
    const weights = start().params;
    const feeds: Record<string, ort.Tensor> = { step: new ort.Tensor('float32', Float32Array.of(0), []) };
    for (const [k, v] of Object.entries(weights)) feeds[paramIn(k)] = new ort.Tensor('float32', v, gptParams(cfg).find((p) => p.name === k)!.shape);
    const b = lmBatch(0);
    feeds.tokens = new ort.Tensor('int64', b.tokens.data, b.tokens.dims);
    feeds.targets = new ort.Tensor('int64', b.targets.data, b.targets.dims);
    for (const k of Object.values(AMP_STATE)) feeds[`state:${k}`] = new ort.Tensor('float32', Float32Array.of(0), []);
    const outs = [];
    for (const half of [false, true]) {
      const g = build(half);
      const s = await createSession(serializeModel(g).model, session);
      try {
        const f = Object.fromEntries(Object.entries(feeds).filter(([k]) => s.inputNames.includes(k)));
        outs.push(await s.run(f));
      } finally {
        await s.release();
      }
    }
    const [ref, hp] = outs;
    let worst = 0;
    for (const p of gptParams(cfg)) {
      const a = ref[`grad:${p.name}`].data as Float32Array;
      const h = hp[`grad:${p.name}`].data as Float32Array;
      let num = 0;
      let den = 0;
      a.forEach((x, i) => {
        num += (h[i] - x) ** 2;
        den += x * x;
      });
      worst = Math.max(worst, Math.sqrt(num / den));
    }
    const dLoss = Math.abs((hp.loss.data as Float32Array)[0] - (ref.loss.data as Float32Array)[0]);
    process.stdout.write(`${mp.precision}: gradient relative L2 error (worst tensor) ${worst.toExponential(2)}, loss |Δ| ${dLoss.toExponential(2)}\n`);
    expect(worst).toBeGreaterThan(0); // the half graph really rounds
    expect(worst).toBeLessThan(gradTol);
    expect(dLoss).toBeLessThan(lossTol);
  });
});

describe('dropout', () => {
  // Dropout's mask is a 24-bit integer hash scaled by 2^-24 (engine/autodiff/dropout.ts): computed
  // in half it would overflow (2^24 > 65504) and drop the wrong elements. It stays fp32, so a GPT
  // with dropout trains like the fp32 one within rounding. Observed max |Δ loss| over 6 steps:
  // fp16 3.96e-5, bf16 1.85e-4; with the mask computed in half, fp16 gave 2.37e-2 here (and +0.43
  // at one step of the LoRA run through fineTuneWorkflow, where the stored model has dropout).
  it.each([
    ['fp16', fp16, 1e-4],
    ['bf16', bf16, 5e-4],
  ] as const)('%s: the masks are the fp32 ones', async (_name, mp, tol) => {
    const withDropout = GptConfigSchema.parse({ ...cfg, dropout: 0.1, dropout_seed: 5 });
    const losses: number[][] = [];
    for (const precision of [undefined, mp]) {
      const c = await compileLmTrainStep({ model: withDropout, optim, batchSize: B, contextLength: T, precision }, session);
      try {
        const r = c.runner({ ...start(withDropout), state: zeroState(c.step) });
        losses.push((await runShard({ ...run, runner: r, endStep: 6 })).history.map((m) => m.loss));
      } finally {
        await c.session.release();
      }
    }
    const d = Math.max(...losses[1].map((l, i) => Math.abs(l - losses[0][i])));
    process.stdout.write(`dropout ${mp.precision}: max |Δ loss| ${d.toExponential(2)}\n`);
    expect(d).toBeLessThan(tol);
  });
});

describe('resume and K steps with the scale state', () => {
  it('8 steps straight = 4 + resume from the snapshot + 4, and = 4 runs of K = 2, bit for bit (skips and growth included)', async () => {
    const c = await compiled(fp16);
    const k2 = await compiled(fp16, { stepsPerRun: 2 });
    try {
      // Start with an overflowing scale so the run skips a few steps, then grows (interval 3).
      const init = (): ShardSnapshot => ({ ...start(), state: { ...zeroState(c.step), [AMP_STATE.scaleExp]: Float32Array.of(14) } });
      const straight = c.runner(init());
      const h = await runShard({ ...run, runner: straight, endStep: 8 });
      const skipped = straight.getState()[AMP_STATE.skipped][0];
      expect(skipped).toBeGreaterThan(0);
      expect(h.history.filter((m) => !Number.isFinite(m.gradNorm))).toHaveLength(skipped);

      const first = c.runner(init());
      await runShard({ ...run, runner: first, endStep: 4 });
      const snap: ShardSnapshot = { step: 4, params: first.getParams(), state: first.getState() };
      const resumed = c.runner(snap);
      await runShard({ ...run, runner: resumed, endStep: 8 });
      expect(bitDiff(resumed.getParams(), straight.getParams())).toEqual([]);
      expect(bitDiff(resumed.getState(), straight.getState())).toEqual([]);

      const multi = k2.runner(init());
      await runShard({ ...run, runner: multi, endStep: 8 });
      expect(bitDiff(multi.getParams(), straight.getParams())).toEqual([]);
      expect(bitDiff(multi.getState(), straight.getState())).toEqual([]);
    } finally {
      await c.session.release();
      await k2.session.release();
    }
  });
});

describe('the op set against the CUDA EP', () => {
  const lora = parseLoraConfig({ family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8 });
  const steps = {
    small: (p: 'fp16' | 'bf16') => buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, optim, { precision: { precision: p, mode: 'half' } }),
    'fused attention + LoRA': (p: 'fp16' | 'bf16') => {
      const fused = GptConfigSchema.parse({ ...cfg, attention: 'fused' });
      const base = { params: gptParams(fused), loss: gptTrainLoss(fused, B, T) };
      const plan = planLora(base, lora);
      return buildTrainStep(loraModel(base, plan, initParams(gptParams(fused), 1)), optim, { trainable: isAdapterParam, precision: { precision: p, mode: 'half' } });
    },
  };
  it.each([
    ['small', 'fp16'],
    ['small', 'bf16'],
    ['fused attention + LoRA', 'fp16'],
    ['fused attention + LoRA', 'bf16'],
  ] as const)('%s GPT step, %s: only the loss op falls back to the CPU', (kind, p) => {
    const step = steps[kind](p);
    const half = p === 'fp16' ? 'float16' : 'bfloat16';
    // The graph really computes in half: its MatMuls read half inputs.
    const matmuls = step.graph.nodes.filter((n) => n.opType === 'MatMul' || n.opType === 'MultiHeadAttention');
    expect(matmuls.length).toBeGreaterThan(0);
    expect(matmuls.every((n) => step.graph.value(n.inputs[0]).dtype === half)).toBe(true);
    if (kind !== 'small') expect(step.graph.nodes.some((n) => n.opType === 'MultiHeadAttention')).toBe(true);
    // SoftmaxCrossEntropyLoss is a training op: ORT's CUDA EP (inference build) lists no kernel
    // for it, so it and its (fp32) logits would run on the CPU. Everything else has a kernel.
    expect(summarizeFallbacks(cudaFallbacks(step.graph))).toEqual(['1× SoftmaxCrossEntropyLoss(float, int64): no CUDA kernel for this op']);
  });

  it('names a missing op, an opset outside the kernels and input types without a kernel', () => {
    const table: CudaKernel[] = [
      { op: 'Add', domain: '', since: 14, until: null, inputs: [['T', 'T']], types: { T: ['tensor(float)', 'tensor(float16)'] } },
      { op: 'Tanh', domain: '', since: 6, until: 12, inputs: [['T']], types: { T: ['tensor(float)'] } },
    ];
    const g = new Graph('t');
    const x = g.input('x', 'bfloat16', [2]);
    const y = g.input('y', 'float16', [2]);
    g.output(g.op('Add', [x, x])[0]);
    g.output(g.op('Add', [y, y])[0]);
    g.output(g.op('Tanh', [y])[0]);
    g.output(g.op('Relu', [y])[0]);
    expect(cudaFallbacks(g, table).map((f) => `${f.op}: ${f.reason}`)).toEqual([
      'Add: no CUDA kernel for input types (tensor(bfloat16), tensor(bfloat16))',
      'Tanh: no CUDA kernel for opset 23 (kernels: [6, 12])',
      'Relu: no CUDA kernel for this op',
    ]);
  });

  it('the derivation keeps the CUDA section: domains, ranges, signatures and types', () => {
    const md = [
      '## Operators implemented by CPUExecutionProvider',
      '|**Operator Domain:** *ai.onnx*||||',
      '|Abs|*in* X:**T**<br> *out* Y:**T**|13+|**T** = tensor(float)|',
      '## Operators implemented by CUDAExecutionProvider',
      '| Op Name | Parameters | OpSet Version | Types Supported |',
      '|---------|------------|---------------|-----------------|',
      '|**Operator Domain:** *ai.onnx*||||',
      '|Add|*in* A:**T**<br> *in* B:**T**<br> *out* C:**T**|14+|**T** = tensor(bfloat16), tensor(float)|',
      '|||[7, 12]|**T** = tensor(float)|',
      '|**Operator Domain:** *com.microsoft*||||',
      '|Gelu|*in* X:**T**<br> *out* Y:**T**<br><br>or<br><br>*in* X:**T**<br> *in* B:**tensor(int64)**<br> *out* Y:**T**|1+|**T** = tensor(float16)<br/> **U** = tensor(float)|',
      '## Operators implemented by DmlExecutionProvider',
      '|Add|*in* A:**T**|7+|**T** = tensor(float)|',
    ].join('\n');
    expect(deriveCudaKernels(md)).toEqual([
      { op: 'Add', domain: '', since: 14, until: null, inputs: [['T', 'T']], types: { T: ['tensor(bfloat16)', 'tensor(float)'] } },
      { op: 'Add', domain: '', since: 7, until: 12, inputs: [['T', 'T']], types: { T: ['tensor(float)'] } },
      { op: 'Gelu', domain: 'com.microsoft', since: 1, until: null, inputs: [['T'], ['T', 'tensor(int64)']], types: { T: ['tensor(float16)'], U: ['tensor(float)'] } },
    ]);
  });
});

describe('where a half step may run', () => {
  it('a CPU worker refuses fp16/bf16 naming the field, unless emulation is on; a CUDA worker builds the real half graph', () => {
    expect(() => mixedPrecisionFor('fp16', undefined, 'cpu', false)).toThrow(/^precision: fp16 training needs a CUDA worker \(TRUTHGPT_EP=cuda\)/);
    expect(() => mixedPrecisionFor('bf16', undefined, 'cpu', false, 'train.precision')).toThrow(/^train\.precision: bf16 training needs a CUDA worker/);
    expect(mixedPrecisionFor('fp16', { growthInterval: 7 }, 'cpu', true)).toEqual({ precision: 'fp16', mode: 'emulate', growthInterval: 7 });
    expect(mixedPrecisionFor('bf16', undefined, 'cuda', false)).toEqual({ precision: 'bf16', mode: 'half', growthInterval: 2000 });
    expect(mixedPrecisionFor('fp32', undefined, 'cpu', false)).toBeUndefined();
    expect(mixedPrecisionFor(undefined, undefined, 'cpu', false)).toBeUndefined();
  });

  it('fp32 (absent) builds the step exactly as before: no amp state, no Cast', () => {
    const a = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, optim);
    expect(a.state.some((s) => s.key.startsWith('@amp.'))).toBe(false);
    expect(a.graph.inputs.some((v) => v.name.startsWith('state:@amp'))).toBe(false);
    expect(a.graph.nodes.some((n) => n.opType === 'Cast' && n.name.startsWith('amp_cast'))).toBe(false);
  });
});
