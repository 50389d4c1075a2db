// K optimizer steps per session.run (engine/train/ksteps.ts): the Loop graph's weights, optimizer
// moments and per-step losses equal those of K single runs BIT FOR BIT, on nanoGPT's CPU config
// (the `small` of `npm run bench -- step`) with dropout, a warmup-cosine schedule and gradient
// clipping; with per-tensor and flat optimizer buffers, with activation checkpointing and for a
// LoRA step. A run shorter than K (the tail of a shard) runs on the same session.

import { sampleLmBatch } from '../../engine/data/sampler';
import type { TensorData } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import * as path from 'node:path';
import { buildImportedLoraStep, initAdapters, isAdapterParam, loraModel, planLora } from '../../engine/lora';
import { tensor } from '../../engine/graph/ir';
import { initParams } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainLoss, type GptConfig } from '../../engine/models/gpt';
import { OptimConfigSchema, type OptimLayout } from '../../engine/optim';
import { createSession, NonFiniteLossError, StepRunner } from '../../engine/runtime';
import type { ActivationCheckpointing } from '../../engine/train/checkpointing';
import { bertTrainParams, buildBertTrainStep, mlmBatch } from '../../engine/train/bert';
import { buildMultiStepGraph, stepGraph } from '../../engine/train/ksteps';
import * as fs from 'node:fs';
import { OnnxBase } from '../../engine/finetune/onnx-base';
import { parseLoraConfig } from '../../engine/lora';
import { compileLmTrainStep, runShard, zeroState, type ShardSnapshot } from '../../engine/train/shard';
import { buildTrainStep, type TrainStep } from '../../engine/train/step';
import { buildT5TrainStep } from '../../engine/train/seq2seq';
import { seq2seqBatch } from '../../engine/data/t5-span';
import { T5ConfigSchema, t5Params } from '../../engine/models/t5';

// nanoGPT's CPU config (bench/step.ts SIZES.small), with dropout so the masks' step dependence is covered.
const small = GptConfigSchema.parse({ vocab_size: 256, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128, dropout: 0.1, dropout_seed: 5 });
const B = 12;
const T = 64;
// Warmup over the first steps compared, so every step has its own lr; clipping at a norm the first steps exceed.
const optim = OptimConfigSchema.parse({
  optimizer: { kind: 'adamw', lr: 1e-3, beta2: 0.99, weight_decay: 0.1 },
  schedule: { kind: 'warmup_cosine', warmup_steps: 4, decay_steps: 50, min_lr: 1e-4 },
  grad_clip: 0.5,
});
const session = { intraOpThreads: 1 };
const ids = Uint16Array.from({ length: 20000 }, (_, i) => (i * 7 + ((i >> 3) % 5) * 11 + (i % 13)) % 256);

const batchOf = (step: number): Record<string, TensorData> => {
  const b = sampleLmBatch(ids, { seed: 1, shard: 0, step, batchSize: B, contextLength: T });
  return { tokens: { dtype: 'int64', dims: [B, T], data: b.tokens }, targets: { dtype: 'int64', dims: [B, T], data: b.targets } };
};

/** Names of tensors whose bits differ, with the largest absolute difference. */
function bitDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): string[] {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  const diff: string[] = [];
  for (const k of Object.keys(a)) {
    const x = new Uint32Array(a[k].buffer, a[k].byteOffset, a[k].length);
    const y = new Uint32Array(b[k].buffer, b[k].byteOffset, b[k].length);
    if (x.length !== y.length || x.some((v, i) => v !== y[i])) diff.push(`${k} (max |Δ| ${a[k].reduce((m, v, i) => Math.max(m, Math.abs(v - b[k][i])), 0)})`);
  }
  return diff;
}

interface Case {
  step: TrainStep;
  params: Record<string, Float32Array>;
  frozen?: Record<string, Float32Array | TensorData>;
}

function gptCase(cfg: GptConfig, layout: OptimLayout, ac: ActivationCheckpointing = 'off'): Case {
  const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, optim, { optimizer: { layout }, activationCheckpointing: ac });
  return { step, params: Object.fromEntries(initParams(gptParams(cfg), 7)) };
}

/** Steps [start, start + n) one run each, and the same steps in runs of at most K; compares everything. */
async function compare(c: Case, K: number, n: number, start = 0, feeds: (step: number) => Record<string, TensorData> = batchOf): Promise<void> {
  const single = await createSession(serializeModel(c.step.graph).model, { graphOptimizationLevel: 'all', ...session });
  const multi = await createSession(serializeModel(buildMultiStepGraph(c.step)).model, { graphOptimizationLevel: 'all', ...session });
  try {
    const init = { params: c.params, frozen: c.frozen, step: start };
    const a = new StepRunner(single, init);
    const b = new StepRunner(multi, { ...init, stepsPerRun: K });
    const one = [];
    for (let s = start; s < start + n; s++) one.push(await a.run(feeds(s)));
    const many = [];
    for (let s = start; s < start + n; s += K) {
      const batches = Array.from({ length: Math.min(K, start + n - s) }, (_, i) => feeds(s + i));
      many.push(...(await b.runSteps(batches)));
    }
    expect(b.step).toBe(start + n);
    expect(many.map((r) => r.step)).toEqual(one.map((r) => r.step));
    // Per-step losses, gradient norms and learning rates: the same float32 values.
    for (const key of ['loss', 'grad_norm', 'lr']) expect(many.map((r) => r.scalars[key])).toEqual(one.map((r) => r.scalars[key]));
    expect(new Set(one.map((r) => r.scalars.lr)).size).toBe(n); // the schedule moved every step
    expect(bitDiff(a.getParams(), b.getParams())).toEqual([]);
    expect(bitDiff(a.getState(), b.getState())).toEqual([]);
  } finally {
    await single.release();
    await multi.release();
  }
}

describe('K steps per session.run', () => {
  it('equal K single steps bit for bit: per-tensor optimizer state, K = 4 over 7 steps (a full run, then a 3-step tail)', async () => {
    await compare(gptCase(small, 'per-tensor'), 4, 7);
  });

  it('equal K single steps bit for bit: flat optimizer buffers, resumed mid-schedule at step 3', async () => {
    await compare(gptCase(small, 'flat'), 4, 5, 3);
  });

  it('equal K single steps bit for bit with activation checkpointing (every block recomputed)', async () => {
    await compare(gptCase(small, 'flat', 'block'), 3, 6);
  });

  it('equal K single steps bit for bit with fused attention (MultiHeadAttention and its blockwise backward in the body)', async () => {
    await compare(gptCase(GptConfigSchema.parse({ ...small, dropout: 0, attention: 'fused' }), 'flat'), 3, 4);
  });

  it('equal K single steps bit for bit for a LoRA step (frozen base from the outer scope, adapters carried)', async () => {
    const base = { params: gptParams(small), loss: gptTrainLoss(small, B, T) };
    const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_dropout: 0.1 });
    const step = buildTrainStep(loraModel(base, plan), optim, { trainable: isAdapterParam });
    // Non-zero B so the adapters' gradients are not all zero on the first step.
    const adapters = initAdapters(plan);
    for (const [name, t] of adapters) if (name.endsWith('lora_B.weight')) t.forEach((_, i) => (t[i] = ((i % 7) - 3) * 1e-3));
    await compare({ step, params: Object.fromEntries(adapters), frozen: Object.fromEntries(initParams(gptParams(small), 3)) }, 4, 4);
  });

  it('equal K single steps bit for bit for a BERT masked-LM step (its own batch inputs: input_ids, attention_mask, token_type_ids, labels)', async () => {
    const model = { vocab_size: 256, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128, max_position_embeddings: 64, type_vocab_size: 2, layer_norm_eps: 1e-12, initializer_range: 0.02, add_pooling_layer: false, head: { kind: 'mlm' as const } };
    const step = buildBertTrainStep({ model, task: 'mlm', optim, batchSize: 4, contextLength: 32 });
    const tok = { cls: 2, sep: 3, pad: 0, mask: 4, specials: [0, 2, 3, 4], vocabSize: 256 };
    const feeds = (s: number) => mlmBatch(ids, { seed: 2, shard: 0, step: s, batchSize: 4, contextLength: 32 }, tok);
    await compare({ step, params: Object.fromEntries(initParams(bertTrainParams(model), 5)) }, 4, 5, 0, feeds);
  });

  it('equal K single steps bit for bit for a LoRA step on an int8 base (quantized weights fed, read from the outer scope)', async () => {
    const base = { params: gptParams(small), loss: gptTrainLoss(small, B, T) };
    const weights = initParams(gptParams(small), 3);
    const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8, baseQuantization: 'int8' });
    const step = buildTrainStep(loraModel(base, plan, weights), optim, { trainable: isAdapterParam });
    const adapters = initAdapters(plan);
    for (const [name, t] of adapters) if (name.endsWith('lora_B.weight')) t.forEach((_, i) => (t[i] = ((i % 7) - 3) * 1e-3));
    await compare({ step, params: Object.fromEntries(adapters), frozen: { ...Object.fromEntries(step.frozen.map((p) => [p.name, weights.get(p.name)!])), ...Object.fromEntries(step.fixed ?? []) } }, 3, 4);
  });

  it('equal K single steps bit for bit for a T5 seq2seq step (encoder and decoder batches)', async () => {
    const cfg = T5ConfigSchema.parse({ vocab_size: 64, d_model: 32, d_kv: 8, d_ff: 64, num_layers: 2, num_heads: 4, relative_attention_num_buckets: 8, relative_attention_max_distance: 16 });
    const step = buildT5TrainStep({ model: cfg, optim, batchSize: 3, srcLen: 6, tgtLen: 4 });
    const feeds = (s: number) =>
      seq2seqBatch(
        Array.from({ length: 3 }, (_, i) => ({ inputs: [2 + ((s * 5 + i * 3) % 50), 3 + ((s + i) % 40), 1], targets: [4 + ((s * 7 + i) % 50), 1] })),
        cfg,
        6,
        4,
      );
    await compare({ step, params: Object.fromEntries(initParams(t5Params(cfg), 4)) }, 3, 5, 0, feeds);
  });

  it('equal K single steps bit for bit for a LoRA step on an imported ONNX model (base weights as initializers of the body)', async () => {
    const [b, t] = [4, 8];
    const hfBert = path.join(__dirname, '..', 'fixtures', 'lora', 'hf-bert-mlm.onnx');
    const step = await buildImportedLoraStep(hfBert, { target_modules: ['query', 'value'], r: 4, lora_alpha: 8, lora_dropout: 0.1 }, optim, { inputShapes: { input_ids: [b, t], attention_mask: [b, t] } });
    const feeds = (s: number): Record<string, TensorData> => {
      const tok = Array.from({ length: b * t }, (_, i) => 5 + ((i * 7 + s * 3) % 11));
      return { input_ids: tensor('int64', [b, t], tok.map((x, i) => (i % 3 === s % 3 ? 0 : x))), attention_mask: tensor('int64', [b, t], tok.map(() => 1)), labels: tensor('int64', [b, t], tok.map((x, i) => (i % 3 === s % 3 ? x : -100))) };
    };
    const adapters = initAdapters(step.plan);
    for (const [name, a] of adapters) if (name.endsWith('lora_B.weight')) a.forEach((_, i) => (a[i] = ((i % 5) - 2) * 1e-3));
    await compare({ step, params: Object.fromEntries(adapters) }, 3, 5, 0, feeds);
  });

  it('stacks the batch as (k, B, T) and the per-step outputs as (k); a non-finite loss leaves the values from before the run', async () => {
    const tiny = GptConfigSchema.parse({ vocab_size: 32, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16 });
    // An absurd learning rate: step 0 is finite, its update throws the weights to ±1e20 and step 1's loss is not.
    const step = buildTrainStep({ params: gptParams(tiny), loss: gptTrainLoss(tiny, 2, 8) }, OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e20 } }));
    const g = stepGraph(step, 5);
    expect(g.inputs.find((v) => v.name === 'tokens')!.shape).toEqual(['steps', 2, 8]);
    expect(g.outputs.find((v) => v.name === 'loss')!.shape).toEqual(['steps']);
    expect(stepGraph(step, 1)).toBe(step.graph);
    const s = await createSession(serializeModel(g).model, session);
    try {
      expect(() => new StepRunner(s, { params: Object.fromEntries(initParams(gptParams(tiny), 1)) })).toThrow(/output "loss" has rank 1; stepsPerRun 1 needs a one-step session/);
      const params = Object.fromEntries(initParams(gptParams(tiny), 1));
      const r = new StepRunner(s, { params, stepsPerRun: 5 });
      const feed = (v: number): Record<string, TensorData> => ({ tokens: { dtype: 'int64', dims: [2, 8], data: new BigInt64Array(16).fill(1n) }, targets: { dtype: 'int64', dims: [2, 8], data: new BigInt64Array(16).fill(BigInt(v)) } });
      await expect(r.runSteps(Array.from({ length: 6 }, () => feed(2)))).rejects.toThrow(/6 batches for one run; this runner makes 1\.\.5 steps per run/);
      const before = r.getParams();
      await expect(r.runSteps([feed(2), feed(2), feed(2)])).rejects.toThrow(NonFiniteLossError);
      await expect(r.runSteps([feed(2), feed(2), feed(2)])).rejects.toThrow(/training step 1: loss is (NaN|-?Infinity); params and optimizer state were left at their values before step 0, where this multi-step run began/);
      expect(bitDiff(before, r.getParams())).toEqual([]);
      expect(r.step).toBe(0);
    } finally {
      await s.release();
    }
  });
});

describe('runShard with K steps per run', () => {
  const tiny = GptConfigSchema.parse({ vocab_size: 64, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32 });
  const setup = { model: tiny, optim, batchSize: 4, contextLength: 16 };
  const shardIds = Uint16Array.from({ length: 4000 }, (_, i) => (i * 7 + ((i >> 3) % 5) * 11) % 64);
  const run = { ids: shardIds, seed: 3, shard: 1, batchSize: 4, contextLength: 16 };
  const start = (): ShardSnapshot => ({ step: 0, params: Object.fromEntries(initParams(gptParams(tiny), 7)), state: {} });

  it('gives the history and bits of K = 1, snapshots only between runs, and a run resumed from one ends identical', async () => {
    const one = await compileLmTrainStep(setup, session);
    const four = await compileLmTrainStep({ ...setup, stepsPerRun: 4 }, session);
    try {
      const a = one.runner({ ...start(), state: zeroState(one.step) });
      const full = await runShard({ ...run, runner: a, endStep: 10 });

      // K = 4 over 10 steps: runs [0, 4), [4, 8), [8, 10); the "crash" is seen at step 6, after the second run.
      const saved: ShardSnapshot[] = [];
      const seen: number[] = [];
      const b = four.runner({ ...start(), state: zeroState(four.step) });
      await expect(
        runShard({
          ...run,
          runner: b,
          endStep: 10,
          checkpoint: { everySteps: 4, everySeconds: 0, save: async (s) => void saved.push(s) },
          onStep: (m) => {
            seen.push(m.step);
            if (m.step === 6) throw new Error('worker killed');
          },
        }),
      ).rejects.toThrow('worker killed');
      expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6]);
      expect(saved.map((s) => s.step)).toEqual([4]);

      const c = four.runner(saved[0]);
      const rest = await runShard({ ...run, runner: c, endStep: 10 });
      expect(rest.history.map((m) => m.step)).toEqual([4, 5, 6, 7, 8, 9]);
      expect(rest.history).toEqual(full.history.slice(4));
      expect(bitDiff(a.getParams(), c.getParams())).toEqual([]);
      expect(bitDiff(a.getState(), c.getState())).toEqual([]);

      // A count policy off the run boundaries cannot be honoured: refused before any step runs.
      const d = four.runner({ ...start(), state: zeroState(four.step) });
      await expect(runShard({ ...run, runner: d, endStep: 10, checkpoint: { everySteps: 6, everySeconds: 0, save: async () => {} } })).rejects.toThrow(
        'checkpoint.everySteps (6) must be a multiple of stepsPerRun (4): a snapshot can only be taken between runs',
      );
      expect(d.step).toBe(0);
    } finally {
      await one.session.release();
      await four.session.release();
    }
  });

  it('a fine-tune of an imported ONNX base (feeds mapped per step: MLM masks) gives the same history and adapters with K = 3', async () => {
    const bytes = fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'lora', 'hf-bert-mlm.onnx'));
    const base = new OnnxBase(bytes, { name: 'hf-bert-mlm', objective: { kind: 'mlm', maskId: 4, probability: 0.5 }, inputName: 'input_ids' }, parseLoraConfig({ target_modules: ['query', 'value'], r: 4, lora_alpha: 8 }), 9);
    const geo = { batchSize: 4, contextLength: 8 };
    const [one, three] = [await base.compile(optim, geo, session), await base.compile(optim, { ...geo, stepsPerRun: 3 }, session)];
    const init = (): ShardSnapshot => ({ step: 0, params: Object.fromEntries(initAdapters(base.plan)), state: zeroState(one.step) });
    const a = one.runner(init());
    const b = three.runner(init());
    const lm = { ids: shardIds, seed: 4, shard: 0, batchSize: 4, contextLength: 8, endStep: 7 };
    const ha = await runShard({ ...lm, runner: a });
    const hb = await runShard({ ...lm, runner: b });
    expect(hb.history).toEqual(ha.history);
    expect(bitDiff(a.getParams(), b.getParams())).toEqual([]);
    expect(bitDiff(a.getState(), b.getState())).toEqual([]);
  });
});
