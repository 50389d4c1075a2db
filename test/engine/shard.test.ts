// The sharded-training engine: a shard run interrupted and resumed from its snapshot ends
// bit-identical to an uninterrupted one, W=1 rounds with plain averaging are exactly ordinary AdamW,
// the DiLoCo outer step matches torch's SGD(nesterov=True) arithmetic, and evaluation is
// token-weighted.

import { sampleLmBatch } from '../../engine/data/sampler';
import { initParams } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams } from '../../engine/models/gpt';
import { OptimConfigSchema } from '../../engine/optim';
import { LmEvaluator } from '../../engine/train/evaluate';
import { NonFiniteWeightError, OuterAggregator, outerStep } from '../../engine/train/outer';
import { compileLmTrainStep, restoreSnapshot, runShard, zeroState, type CompiledTrainStep, type ShardSnapshot } from '../../engine/train/shard';
import { Trainer } from '../../engine/train/trainer';

const model = GptConfigSchema.parse({ vocab_size: 64, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32 });
const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 });
const setup = { model, optim, batchSize: 4, contextLength: 16 };
const session = { intraOpThreads: 1 };

// A learnable stream: a fixed pseudo-random walk over 64 symbols with short repeats.
const ids = Uint16Array.from({ length: 4000 }, (_, i) => (i * 7 + ((i >> 3) % 5) * 11) % 64);

const init = (): ShardSnapshot => {
  const w = initParams(gptParams(model), 7);
  return { step: 0, params: Object.fromEntries(w), state: {} };
};

function sameBits(a: Record<string, Float32Array>, b: Record<string, Float32Array>): string[] {
  const diff: string[] = [];
  for (const k of Object.keys(a)) {
    const x = new Uint32Array(a[k].buffer, a[k].byteOffset, a[k].length);
    const y = new Uint32Array(b[k].buffer, b[k].byteOffset, b[k].length);
    if (x.length !== y.length || x.some((v, i) => v !== y[i])) diff.push(k);
  }
  return diff;
}

let compiled: CompiledTrainStep;
beforeAll(async () => {
  compiled = await compileLmTrainStep(setup, session);
});
afterAll(() => compiled?.session.release());

test('a shard run stopped mid-way and resumed on a fresh session ends bit-identical to an uninterrupted run', async () => {
  const run = { ids, seed: 3, shard: 1, batchSize: 4, contextLength: 16 };
  const a = compiled.runner({ ...init(), state: zeroState(compiled.step) });
  const full = await runShard({ ...run, runner: a, endStep: 12 });
  expect(full.history.map((m) => m.step)).toEqual([...Array(12).keys()]);

  // Interrupted: snapshots every 4 steps; the "crash" happens after step 9 ran.
  const saved: ShardSnapshot[] = [];
  const b = compiled.runner({ ...init(), state: zeroState(compiled.step) });
  await expect(
    runShard({
      ...run,
      runner: b,
      endStep: 12,
      checkpoint: { everySteps: 4, everySeconds: 0, save: async (s) => void saved.push(s) },
      onStep: (m) => {
        if (m.step === 9) throw new Error('worker killed');
      },
    }),
  ).rejects.toThrow('worker killed');
  expect(saved.map((s) => s.step)).toEqual([4, 8]);

  // A new process would compile its own session: do the same.
  const fresh = await compileLmTrainStep(setup, session);
  const c = fresh.runner(saved[1]);
  const rest = await runShard({ ...run, runner: c, endStep: 12 });
  expect(rest.history.map((m) => m.step)).toEqual([8, 9, 10, 11]);
  expect(rest.history.map((m) => m.loss)).toEqual(full.history.slice(8).map((m) => m.loss));
  expect(sameBits(a.getParams(), c.getParams())).toEqual([]);
  expect(sameBits(a.getState(), c.getState())).toEqual([]);
  await fresh.session.release();
});

test('a recycled runner (shards one after another on one GPU worker) runs the same steps bit for bit as a new one', async () => {
  const run = { ids, seed: 3, batchSize: 4, contextLength: 16 };
  // Shard 0 trains 5 steps and hands its runner back; shard 1 starts from other weights on it.
  const used = compiled.runner({ ...init(), state: zeroState(compiled.step) });
  await runShard({ ...run, shard: 0, runner: used, endStep: 5 });
  compiled.recycle!(used);
  const other = { step: 5, params: Object.fromEntries(initParams(gptParams(model), 11)), state: {} };
  const again = compiled.runner(other);
  expect(again).toBe(used);
  const reused = await runShard({ ...run, shard: 1, runner: again, endStep: 9 });
  const fresh = await compileLmTrainStep(setup, session);
  const b = fresh.runner(other);
  const direct = await runShard({ ...run, shard: 1, runner: b, endStep: 9 });
  expect(reused.history.map((m) => m.loss)).toEqual(direct.history.map((m) => m.loss));
  expect(sameBits(again.getParams(), b.getParams())).toEqual([]);
  expect(sameBits(again.getState(), b.getState())).toEqual([]);
  // Only a runner handed back is reused: two asked for at once are two.
  expect(compiled.runner(other)).not.toBe(compiled.runner(other));
  await fresh.session.release();
});

test('snapshots also come every T seconds of training, and never for the final step', async () => {
  let clock = 0;
  const saved: number[] = [];
  const r = compiled.runner({ ...init(), state: zeroState(compiled.step) });
  const res = await runShard({
    ids,
    seed: 0,
    shard: 0,
    batchSize: 4,
    contextLength: 16,
    runner: r,
    endStep: 7,
    now: () => clock,
    onStep: () => void (clock += 1000), // each step "takes" one second
    checkpoint: { everySteps: 0, everySeconds: 2.5, save: async (s) => void saved.push(s.step) },
  });
  expect(saved).toEqual([3, 6]);
  expect(res.checkpoints).toEqual([3, 6]);
  expect(res.tokens).toBe(7 * 4 * 16);
});

test('W=1 rounds with plain averaging and carried inner state equal ordinary AdamW training bit for bit', async () => {
  const H = 4;
  const rounds = 3;
  let global = new Map(Object.entries(init().params));
  let state = zeroState(compiled.step);
  const runner = compiled.runner({ ...init(), state });
  for (let r = 0; r < rounds; r++) {
    restoreSnapshot(runner, { step: r * H, params: Object.fromEntries(global), state });
    await runShard({ runner, ids, seed: 5, shard: 0, batchSize: 4, contextLength: 16, endStep: (r + 1) * H });
    state = runner.getState();
    global = outerStep(global, [new Map(Object.entries(runner.getParams()))], { kind: 'average' }).weights;
  }

  const trainer = await Trainer.create(compiled.step, { session: compiled.session, weights: new Map(Object.entries(init().params)) });
  for (let s = 0; s < rounds * H; s++) {
    const b = sampleLmBatch(ids, { seed: 5, shard: 0, step: s, batchSize: 4, contextLength: 16 });
    await trainer.run({ tokens: { dtype: 'int64', dims: [4, 16], data: b.tokens }, targets: { dtype: 'int64', dims: [4, 16], data: b.targets } });
  }
  expect(sameBits(Object.fromEntries(trainer.params()), Object.fromEntries(global))).toEqual([]);
  expect(sameBits(Object.fromEntries(trainer.optimizerState()), state)).toEqual([]);
});

test('the DiLoCo outer step is SGD with Nesterov momentum on the mean pseudo-gradient', () => {
  const g0 = new Map([['w', Float32Array.from([1, -2, 0.5])]]);
  const l1 = new Map([['w', Float32Array.from([0.8, -1.5, 0.5])]]);
  const l2 = new Map([['w', Float32Array.from([0.6, -2.5, 0.7])]]);
  const cfg = { kind: 'nesterov' as const, lr: 0.7, momentum: 0.9 };
  const r1 = outerStep(g0, [l1, l2], cfg);
  // Δ = g − mean(l) = [0.3, 0, −0.1]; buf = Δ; g' = g − 0.7·(Δ + 0.9·buf) = g − 1.33·Δ.
  const delta = [0.3, 0, -0.1];
  const expected1 = [1, -2, 0.5].map((g, i) => g - 0.7 * (delta[i] + 0.9 * delta[i]));
  Array.from(r1.weights.get('w')!).forEach((v, i) => expect(v).toBeCloseTo(expected1[i], 6));
  Array.from(r1.momentum.get('w')!).forEach((v, i) => expect(v).toBeCloseTo(delta[i], 6));
  expect(r1.pseudoGradNorm).toBeCloseTo(Math.hypot(...delta), 6);

  // Round two reuses the buffer: buf = 0.9·buf + Δ₂.
  const g1 = r1.weights;
  const l3 = new Map([['w', g1.get('w')!.map((x) => x - 0.1)]]);
  const r2 = outerStep(g1, [l3], cfg, r1.momentum);
  const buf2 = delta.map((d) => 0.9 * d + 0.1);
  Array.from(r2.weights.get('w')!).forEach((v, i) => expect(v).toBeCloseTo(g1.get('w')![i] - 0.7 * (0.1 + 0.9 * buf2[i]), 5));

  // Plain averaging is the exact mean of the float32 inputs, rounded once.
  const mean = l1.get('w')!.map((x, i) => (x + l2.get('w')![i]) / 2);
  expect(Array.from(outerStep(g0, [l1, l2], { kind: 'average' }).weights.get('w')!)).toEqual(Array.from(mean));
});

test('aggregation refuses a NaN weight or a missing tensor, naming worker and tensor', () => {
  const g = new Map([['h.0.attn.c_attn.weight', new Float32Array(4)]]);
  const agg = new OuterAggregator(g);
  expect(() => agg.add(new Map([['h.0.attn.c_attn.weight', Float32Array.from([0, NaN, 0, 0])]]), 'shard 1 round 3')).toThrow(NonFiniteWeightError);
  expect(() => agg.add(new Map([['h.0.attn.c_attn.weight', Float32Array.from([0, NaN, 0, 0])]]), 'shard 1 round 3')).toThrow(
    'shard 1 round 3: tensor "h.0.attn.c_attn.weight" holds NaN at index 1',
  );
  expect(() => agg.add(new Map(), 'shard 0')).toThrow('shard 0: parameter "h.0.attn.c_attn.weight" is missing');
});

test('validation loss is token-weighted (independent of batch size) and starts near ln(vocab)', async () => {
  const ev = new LmEvaluator(model, session);
  const weights = new Map(Object.entries(init().params));
  const val = ids.subarray(0, 16 * 11 + 1); // 11 windows: batches of 4 leave a remainder of 3
  const a = await ev.evaluate(weights, val, { batchSize: 4, contextLength: 16 });
  const b = await ev.evaluate(weights, val, { batchSize: 11, contextLength: 16 });
  await ev.release();
  expect(a.tokens).toBe(11 * 16);
  expect(a.batches).toBe(3);
  expect(b.batches).toBe(1);
  expect(a.loss).toBeCloseTo(b.loss, 5);
  expect(Math.abs(a.loss - Math.log(64))).toBeLessThan(0.05);
  expect(a.perplexity).toBeCloseTo(Math.exp(a.loss), 6);
});
