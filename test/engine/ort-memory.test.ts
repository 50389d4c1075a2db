// A spec's `ortMemory` (spec/ort-memory.ts) sets ORT's memory pattern and CPU arena for the step
// session. They change how ORT allocates, not what it computes: a GPT training step and a LoRA step
// compiled with both off give the same losses, weights and optimizer state BIT FOR BIT as the
// default session (dropout, clipping, a warmup schedule and activation checkpointing included), and
// the options reach onnxruntime-node's session options only when the spec sets them.

import { GptBase } from '../../engine/finetune/gpt-base';
import { initAdapters, parseLoraConfig } from '../../engine/lora';
import { initParams } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams } from '../../engine/models/gpt';
import { OptimConfigSchema } from '../../engine/optim';
import type { SessionConfig } from '../../engine/runtime';
import { toOrtOptions } from '../../engine/runtime/session';
import { compileLmTrainStep, runShard, zeroState, type ShardSnapshot } from '../../engine/train/shard';
import { ortMemorySession } from '../../spec/ort-memory';

const cfg = GptConfigSchema.parse({ vocab_size: 64, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, dropout: 0.1, dropout_seed: 5 });
const optim = OptimConfigSchema.parse({
  optimizer: { kind: 'adamw', lr: 1e-3, weight_decay: 0.1 },
  schedule: { kind: 'warmup_cosine', warmup_steps: 3, decay_steps: 20, min_lr: 1e-4 },
  grad_clip: 0.5,
});
const B = 4;
const T = 32;
const ids = Uint16Array.from({ length: 4000 }, (_, i) => (i * 7 + ((i >> 3) % 5) * 11 + (i % 13)) % 64);
const run = { ids, seed: 3, shard: 0, batchSize: B, contextLength: T, endStep: 6 };
const defaults: SessionConfig = { intraOpThreads: 1 };
const off: SessionConfig = { intraOpThreads: 1, ...ortMemorySession({ pattern: false, arena: false }) };

function bitDiff(a: Record<string, Float32Array>, b: Record<string, Float32Array>): string[] {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  const diff: string[] = [];
  for (const k of Object.keys(a)) {
    const x = new Uint32Array(a[k].buffer, a[k].byteOffset, a[k].length);
    const y = new Uint32Array(b[k].buffer, b[k].byteOffset, b[k].length);
    if (x.length !== y.length || x.some((v, i) => v !== y[i])) diff.push(k);
  }
  return diff;
}

describe('ortMemory', () => {
  it('reaches the session options only when set', () => {
    expect(toOrtOptions(defaults)).not.toHaveProperty('enableMemPattern');
    expect(toOrtOptions(defaults)).not.toHaveProperty('enableCpuMemArena');
    expect(toOrtOptions({ ...defaults, ...ortMemorySession({ pattern: true, arena: true }) })).not.toHaveProperty('enableMemPattern');
    expect(toOrtOptions(off)).toMatchObject({ enableMemPattern: false, enableCpuMemArena: false, intraOpNumThreads: 1 });
    expect(toOrtOptions({ ...ortMemorySession({ pattern: true, arena: false }) })).toMatchObject({ enableMemPattern: true, enableCpuMemArena: false });
  });

  it.each(['off', 'block'] as const)('a GPT training step (checkpointing %s) with pattern and arena off gives the default bits', async (activationCheckpointing) => {
    const setup = { model: cfg, optim, batchSize: B, contextLength: T, activationCheckpointing };
    const start = (): ShardSnapshot => ({ step: 0, params: Object.fromEntries(initParams(gptParams(cfg), 7)), state: {} });
    const [a, b] = [await compileLmTrainStep(setup, defaults), await compileLmTrainStep(setup, off)];
    try {
      const ra = a.runner({ ...start(), state: zeroState(a.step) });
      const rb = b.runner({ ...start(), state: zeroState(b.step) });
      const ha = await runShard({ ...run, runner: ra });
      const hb = await runShard({ ...run, runner: rb });
      expect(hb.history).toEqual(ha.history);
      expect(ha.history.every((m) => Number.isFinite(m.loss))).toBe(true);
      expect(bitDiff(ra.getParams(), rb.getParams())).toEqual([]);
      expect(bitDiff(ra.getState(), rb.getState())).toEqual([]);
    } finally {
      await a.session.release();
      await b.session.release();
    }
  });

  it('a LoRA step (GPT base, checkpointing block) with pattern and arena off gives the default bits', async () => {
    const base = Object.fromEntries(initParams(gptParams(cfg), 11));
    const lora = parseLoraConfig({ family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8 });
    const geo = { batchSize: B, contextLength: T, activationCheckpointing: 'block' as const };
    const bases = [0, 1].map(() => new GptBase(cfg, new Map(Object.entries(base).map(([k, v]) => [k, v.slice()])), lora, geo));
    const [a, b] = [await bases[0].compile(optim, geo, defaults), await bases[1].compile(optim, geo, off)];
    const init = (): ShardSnapshot => ({ step: 0, params: Object.fromEntries(initAdapters(bases[0].plan)), state: zeroState(a.step) });
    const ra = a.runner(init());
    const rb = b.runner(init());
    try {
      const ha = await runShard({ ...run, runner: ra });
      const hb = await runShard({ ...run, runner: rb });
      expect(hb.history).toEqual(ha.history);
      expect(bitDiff(ra.getParams(), rb.getParams())).toEqual([]);
      expect(bitDiff(ra.getState(), rb.getState())).toEqual([]);
    } finally {
      await ra.release();
      await rb.release();
      for (const g of bases) await g.release();
    }
  });
});
