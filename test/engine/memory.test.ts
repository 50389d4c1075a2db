// Issue 15, part 2: the memory estimate of a training step, and the engine's refusal to compile a
// step that cannot fit the worker (before it allocates anything). The estimate's agreement with
// measured peak RSS is `npm run bench -- memory` (bench/RESULTS.md); here: its arithmetic.

import { ApplicationFailure } from '@temporalio/common';
import { asFailure } from '../../artifacts/errors';
import { EngineError } from '../../engine/errors';
import { countParams } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams, StoredGptConfigSchema, type GptConfig } from '../../engine/models/gpt';
import { estimateTrainStepBytes, gptParamCount } from '../../engine/models/memory';
import { configFromHf, getPreset } from '../../engine/models/presets';
import { OptimConfigSchema } from '../../engine/optim';
import { checkTrainMemory, compileLmTrainStep } from '../../engine/train/shard';
import { specLimits } from '../../spec/limits';
import { parseTrainingSpec } from '../../spec/training';

const tinyGpt = { vocab_size: 259, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32 };
const adamw = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } });
const GiB = 2 ** 30;

describe('estimateTrainStepBytes', () => {
  test('counts parameters in closed form exactly as gptParams lists them, for every option', () => {
    const variants = [
      {},
      { bias: false },
      { pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 1, tie_embeddings: false, bias: false },
      { mlp: 'swiglu', n_inner: 40 },
      { norm: 'rmsnorm' },
    ];
    for (const v of variants) {
      const cfg = GptConfigSchema.parse({ ...tinyGpt, ...v });
      expect(gptParamCount(cfg)).toBe(countParams(gptParams(cfg)));
    }
    const gpt2 = getPreset('gpt2-small');
    expect(gpt2.family === 'gpt' && gptParamCount(gpt2.config)).toBe(124_439_808);
  });

  test('parameter copies follow the optimizer: 13.5 for AdamW, 10 for SGD with momentum, 6.5 without', () => {
    const cfg = GptConfigSchema.parse(tinyGpt);
    expect(estimateTrainStepBytes(cfg, 8, 32, { kind: 'adamw' }).paramCopies).toBe(13.5);
    expect(estimateTrainStepBytes(cfg, 8, 32, { kind: 'sgd', momentum: 0.9 }).paramCopies).toBe(10);
    expect(estimateTrainStepBytes(cfg, 8, 32, { kind: 'sgd', momentum: 0 }).paramCopies).toBe(6.5);
  });

  test('grows with depth, batch and context; a 10 000-layer tiny model is tens of GiB', () => {
    const at = (n_layer: number, B: number, T: number) => estimateTrainStepBytes({ ...GptConfigSchema.parse(tinyGpt), n_layer }, B, T, { kind: 'adamw' }).bytes;
    expect(at(4, 8, 32)).toBeGreaterThan(at(2, 8, 32));
    expect(at(2, 16, 32)).toBeGreaterThan(at(2, 8, 32));
    expect(at(2, 8, 32)).toBeGreaterThan(at(2, 8, 16));
    expect(at(2, 8, 32)).toBeLessThan(0.3 * GiB); // the tiny example: about 0.2 GiB
    expect(at(10_000, 8, 32)).toBeGreaterThan(40 * GiB);
  });
});

describe('the estimate follows the attention option', () => {
  const ctx1024 = GptConfigSchema.parse({ vocab_size: 256, block_size: 1024, n_layer: 6, n_head: 12, n_embd: 384 });
  const medium = GptConfigSchema.parse({ vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 });
  const MiB = 2 ** 20;
  // Peak RSS (VmHWM) of real AdamW steps, bench/RESULTS.md: `npm run bench -- step --attention
  // explicit,fused` (fused attention section, 2026-12-03 11:18 and 11:48) and `npm run bench -- memory`
  // (the worker's compileLmTrainStep + StepRunner path, 2026-12-03 12:13 and 12:15).
  const measured: [string, GptConfig, number, number, number][] = [
    ['ctx1024 explicit, bench step run 1', ctx1024, 2, 1024, 3099],
    ['ctx1024 explicit, bench step run 2', ctx1024, 2, 1024, 3071],
    ['ctx1024 explicit, bench memory', ctx1024, 2, 1024, 3109],
    ['ctx1024 fused, bench step run 1', { ...ctx1024, attention: 'fused' }, 2, 1024, 2047],
    ['ctx1024 fused, bench step run 2', { ...ctx1024, attention: 'fused' }, 2, 1024, 2023],
    ['ctx1024 fused, bench memory', { ...ctx1024, attention: 'fused' }, 2, 1024, 2068],
    ['medium explicit, bench memory', medium, 8, 256, 1632],
    ['medium fused, bench step run 3', { ...medium, attention: 'fused' }, 8, 256, 1579],
    ['medium fused, bench memory', { ...medium, attention: 'fused' }, 8, 256, 1635],
    ['ctx1024 fused, bench memory again', { ...ctx1024, attention: 'fused' }, 2, 1024, 2081],
  ];
  // The estimate's own table (engine/models/memory.ts) shows 0.97–1.23 against measured peaks over
  // seven sizes. Observed here: fused 0.98–1.05 (1.88 at ctx1024 before the estimate followed the
  // option), explicit 1.12 at medium and 1.24–1.25 at ctx1024.
  test.each(measured)('%s: estimate / measured peak within 0.95–1.3', (_name, cfg, B, T, mib) => {
    const ratio = estimateTrainStepBytes(cfg, B, T, { kind: 'adamw' }).bytes / (mib * MiB);
    expect(ratio).toBeGreaterThanOrEqual(0.95);
    expect(ratio).toBeLessThanOrEqual(1.3);
  });

  test('fused counts one (B, n_head, T, T) tensor per layer instead of four', () => {
    const explicit = estimateTrainStepBytes(ctx1024, 2, 1024, { kind: 'adamw' });
    const fused = estimateTrainStepBytes({ ...ctx1024, attention: 'fused' }, 2, 1024, { kind: 'adamw' });
    const perLayerTT = 4 * 2 * 12 * 1024 * 1024; // one float32 (B, n_head, T, T)
    expect(explicit.bytes - fused.bytes).toBe(3 * 6 * perLayerTT);
    expect(fused.paramBytes).toBe(explicit.paramBytes);
  });

  test('a spec that fits only with fused attention is accepted with it and refused without', () => {
    const limit = 2.5 * GiB; // between the two estimates at ctx1024 (2.1 and 3.8 GiB)
    const setup = (model: GptConfig) => ({ model, optim: adamw, batchSize: 2, contextLength: 1024 });
    expect(() => checkTrainMemory(setup({ ...ctx1024, attention: 'fused' }), { memoryLimitBytes: limit })).not.toThrow();
    expect(() => checkTrainMemory(setup(ctx1024), { memoryLimitBytes: limit })).toThrow(/needs about 3\.8 GiB .* above this worker's memory limit of 2\.5 GiB/);
  });
});

describe('the estimate follows activation checkpointing and the ORT memory options', () => {
  const MiB = 2 ** 20;
  const sizes: Record<string, [GptConfig, number, number]> = {
    tiny: [GptConfigSchema.parse({ vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, n_embd: 64 }), 8, 64],
    medium: [GptConfigSchema.parse({ vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 }), 8, 256],
    activations: [GptConfigSchema.parse({ vocab_size: 256, block_size: 512, n_layer: 4, n_head: 4, n_embd: 128 }), 16, 512],
    params: [GptConfigSchema.parse({ vocab_size: 8192, block_size: 64, n_layer: 6, n_head: 8, n_embd: 512 }), 4, 64],
    llama: [GptConfigSchema.parse({ vocab_size: 2048, block_size: 128, n_layer: 4, n_head: 8, n_embd: 256, pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false, bias: false }), 8, 128],
  };
  // Peak RSS (VmHWM, MiB) of 4 AdamW steps through compileLmTrainStep + StepRunner, `npm run bench --
  // memory --ac <off|block> --ort-memory <default|off>`, 2026-12-03 14:41–14:48 UTC (bench/RESULTS.md).
  const measured: [string, 'off' | 'block', boolean, number][] = [
    ['tiny', 'off', false, 156], ['medium', 'off', false, 1084], ['activations', 'off', false, 927], ['params', 'off', false, 1338], ['llama', 'off', false, 449],
    ['tiny', 'block', true, 165], ['medium', 'block', true, 1073], ['activations', 'block', true, 1002], ['params', 'block', true, 1501], ['llama', 'block', true, 500],
    ['tiny', 'block', false, 151], ['medium', 'block', false, 775], ['activations', 'block', false, 571], ['params', 'block', false, 1288], ['llama', 'block', false, 433],
  ];
  // Observed 0.97–1.20 (the default setting's own rows: 1.04–1.13 in the same run).
  test.each(measured)('%s, checkpointing %s, ORT pattern + arena %s: estimate / measured peak within 0.95–1.3', (name, ac, ortDefault, mib) => {
    const [cfg, B, T] = sizes[name];
    const ratio = estimateTrainStepBytes(cfg, B, T, { kind: 'adamw' }, { activationCheckpointing: ac, ortMemory: { pattern: ortDefault, arena: ortDefault } }).bytes / (mib * MiB);
    expect(ratio).toBeGreaterThanOrEqual(0.95);
    expect(ratio).toBeLessThanOrEqual(1.3);
  });

  test('only both ORT options off halve the activations; either alone counts as the default', () => {
    const [cfg, B, T] = sizes.medium;
    const at = (pattern: boolean, arena: boolean) => estimateTrainStepBytes(cfg, B, T, { kind: 'adamw' }, { ortMemory: { pattern, arena } });
    expect(at(false, false).activationBytes).toBe(at(true, true).activationBytes / 2);
    expect(at(false, true).bytes).toBe(at(true, true).bytes);
    expect(at(true, false).bytes).toBe(at(true, true).bytes);
  });

  test('checkpointing k blocks keeps each segment input and about 2k layers, never more than without it', () => {
    const [cfg, B, T] = sizes.medium;
    const at = (ac: 'off' | 'block' | number) => estimateTrainStepBytes(cfg, B, T, { kind: 'adamw' }, { activationCheckpointing: ac }).activationBytes;
    expect(at('block')).toBeLessThan(at(2));
    expect(at(2)).toBeLessThan(at('off'));
    expect(at(6)).toBeGreaterThanOrEqual(at('off')); // one segment of every block: the segment input on top of all layers
  });

  test('a spec and a worker that set them are checked with them: refused without, accepted with', () => {
    const [cfg, B, T] = sizes.activations; // estimates 1.9 GiB by default, 0.7 GiB with block + both off
    const limit = 1.2 * GiB;
    const setup = { model: cfg, optim: adamw, batchSize: B, contextLength: T };
    expect(() => checkTrainMemory(setup, { memoryLimitBytes: limit })).toThrow(/needs about 1\.9 GiB/);
    expect(() => checkTrainMemory({ ...setup, activationCheckpointing: 'block' }, { memoryLimitBytes: limit }, { memPattern: false, cpuArena: false })).not.toThrow();
    const spec = (extra: object) => parseTrainingSpec({ model: { preset: 'tiny-gpt', config: { vocab_size: 256, block_size: 512, n_layer: 4, n_head: 4, n_embd: 128 } }, dataset: { name: 'b', corpus: { kind: 'brown', categories: ['humor'] } }, rounds: 1, innerSteps: 1, batchSize: B, contextLength: T, ...extra }, specLimits(1.2));
    expect(() => spec({})).toThrow(/needs about 1\.9 GiB per training step .* above the worker memory limit of 1\.2 GiB/);
    expect(() => spec({ activationCheckpointing: 'block', ortMemory: { pattern: false, arena: false } })).not.toThrow();
  });
});

describe('the engine refuses a training step that cannot fit before it allocates', () => {
  const setup = (model: object, batchSize = 8, contextLength = 32) => ({ model: model as never, optim: adamw, batchSize, contextLength });

  test('n_layer 10000 (the spec that froze the stack) is an invalid config', async () => {
    const err = await compileLmTrainStep(setup({ ...tinyGpt, n_layer: 10_000 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).kind).toBe('config');
    expect((err as Error).message).toMatch(/n_layer: Too big: expected number to be <=1024/);
  });

  test('a step above the worker limit is refused naming the estimate and the limit, and maps to a non-retryable InvalidConfig', async () => {
    const t0 = Date.now();
    const err = await compileLmTrainStep(setup({ ...tinyGpt, n_layer: 1000 }), {}, { memoryLimitBytes: 2 * GiB }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(1000); // nothing was built
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).kind).toBe('config');
    expect((err as Error).message).toBe(
      "a training step of this model needs about 4.5 GiB (n_layer 1000 × n_embd 32, batch 8 × context 32), above this worker's memory limit of 2.0 GiB",
    );
    const failure = asFailure(err, 'trainShard shard 0 round 0') as ApplicationFailure;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure.type).toBe('InvalidConfig');
    expect(failure.nonRetryable).toBe(true);
  });

  test('the limit is the smaller of the configured one and 80 % of the machine', () => {
    expect(() => checkTrainMemory(setup(tinyGpt), { memoryLimitBytes: 1024 })).toThrow(/above this worker's memory limit of 0\.0 GiB/);
    expect(() => checkTrainMemory(setup(tinyGpt), { memoryLimitBytes: 1e15 })).not.toThrow();
    expect(() => checkTrainMemory(setup({ ...tinyGpt, n_layer: 1024, n_embd: 8192, n_head: 64 }), { memoryLimitBytes: 1e15 })).toThrow(/above this worker's memory limit/);
  });
});

describe('configs other writers made keep loading', () => {
  test('a stored config (checkpoint.json, model manifest) drops keys it does not know', () => {
    expect(StoredGptConfigSchema.parse({ ...tinyGpt, attn_impl: 'eager', n_ctx: 32 })).toEqual({ ...tinyGpt, bias: true });
    expect(() => GptConfigSchema.parse({ ...tinyGpt, attn_impl: 'eager' })).toThrow(/Unrecognized key/);
  });

  test('a Hugging Face config.json with its many extra keys imports', () => {
    const hf = { architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', n_positions: 32, n_ctx: 32, vocab_size: 259, n_layer: 2, n_head: 2, n_embd: 32, n_inner: null, torch_dtype: 'float32', resid_pdrop: 0.1 };
    expect(configFromHf('gpt', hf).config).toEqual({ vocab_size: 259, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, n_inner: null, bias: true });
    expect(configFromHf('bert', { vocab_size: 10, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16, hidden_act: 'gelu', model_type: 'bert' }).family).toBe('bert');
    expect(configFromHf('t5', { vocab_size: 10, d_model: 8, d_kv: 4, d_ff: 16, num_layers: 1, num_heads: 2, is_encoder_decoder: true }).family).toBe('t5');
  });
});
