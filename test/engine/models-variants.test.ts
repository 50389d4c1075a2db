// GPT options by config (engine/models/gpt.ts): the default config is still bit-identical
// GPT-2, RoPE matches a plain-TS rotation, GQA equals standard attention with repeated key/value
// weights, the Llama layout reproduces Hugging Face LlamaForCausalLM, the untied head is its own
// weight, dropout is seeded, and every variant trains with falling loss.

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { Graph, tensor, type Value } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { initParams, mulberry32 } from '../../engine/models/blocks';
import { exportGpt } from '../../engine/models/export';
import { configFromHf } from '../../engine/models/presets';
import { applyRope, GptConfigSchema, gptLogits, gptParams, gptTrainLoss, ropeConsts, type GptConfig } from '../../engine/models/gpt';
import { llamaToGpt, type NamedTensor } from '../../engine/models/llama-to-gpt';
import { isAdapterParam } from '../../engine/lora/config';
import { initAdapters, loraModel, planLora } from '../../engine/lora/model';
import { OptimConfigSchema } from '../../engine/optim';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';
import { defaultGoldenLogits } from '../fixtures/variants/default-logits';

const FIX = path.join(__dirname, '../fixtures');
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

type Build = (cfg: GptConfig, idx: Value, p: (n: string) => Value) => Value;

/** Logits (B·T, V) of `build` with the given weights, on one intra-op thread. */
async function logitsOf(cfg: GptConfig, weights: Map<string, Float32Array>, tokens: number[], B: number, T: number, build: Build = gptLogits): Promise<Float32Array> {
  const g = new Graph('logits');
  const params = new Map<string, Value>();
  for (const s of gptParams(cfg)) params.set(s.name, g.input(s.name, 'float32', s.shape));
  g.output(build(cfg, g.input('tokens', 'int64', [B, T]), (n) => params.get(n)!), 'logits');
  const session = await ort.InferenceSession.create(serializeModel(g).model, { intraOpNumThreads: 1 });
  const feeds: Record<string, ort.Tensor> = { tokens: new ort.Tensor('int64', tensor('int64', [B, T], tokens).data as BigInt64Array, [B, T]) };
  for (const s of gptParams(cfg)) {
    const w = weights.get(s.name);
    if (!w) throw new Error(`test weights lack "${s.name}"`);
    feeds[s.name] = new ort.Tensor('float32', w, s.shape);
  }
  const out = await session.run(feeds);
  await session.release();
  return Float32Array.from(out.logits.data as Float32Array);
}

function goldenFixture() {
  const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'gpt2layer/golden.json'), 'utf8')) as { config: unknown; batch: number; seq: number; tokens: number[][] };
  const weights = readSafetensors(fs.readFileSync(path.join(FIX, 'gpt2layer/weights.safetensors')), 'weights.safetensors').tensors;
  return { golden, cfg: GptConfigSchema.parse(golden.config), weights: new Map([...weights].map(([k, t]) => [k, t.data as Float32Array])) };
}

describe('default config', () => {
  it('gives bit-identical logits to the GPT before the variant options (recorded fixture)', async () => {
    const recorded = JSON.parse(fs.readFileSync(path.join(FIX, 'variants/default-logits.json'), 'utf8')) as { float32_base64: string; count: number };
    const want = Buffer.from(recorded.float32_base64, 'base64');
    const got = await defaultGoldenLogits();
    expect(got.length).toBe(recorded.count);
    expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(want)).toBe(true);
  });

  it('parses an existing config to exactly the same object (no new keys), and explicit defaults keep GPT-2', () => {
    const { golden, cfg } = goldenFixture();
    expect(cfg).toEqual({ ...(golden.config as object) });
    const explicit = GptConfigSchema.parse({ ...cfg, pos: 'learned', norm: 'layernorm', mlp: 'gelu', n_kv_head: 4, dropout: 0, tie_embeddings: true });
    expect(gptParams(explicit)).toEqual(gptParams(cfg));
  });

  it('reads an HF GPT2Config (n_inner: null) as plain GPT-2, and honours a set n_inner', () => {
    const hf = JSON.parse(fs.readFileSync(path.join(FIX, 'hf/gpt2/config.json'), 'utf8')) as Record<string, unknown>;
    expect(hf.n_inner).toBeNull();
    const cfg = configFromHf('gpt', hf).config as GptConfig;
    const plain = GptConfigSchema.parse({ vocab_size: cfg.vocab_size, block_size: cfg.block_size, n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, bias: cfg.bias });
    expect(gptParams(cfg)).toEqual(gptParams(plain));
    const wide = configFromHf('gpt', { ...hf, n_inner: 3 * cfg.n_embd }).config as GptConfig;
    expect(gptParams(wide).find((s) => s.name === 'h.0.mlp.c_fc.weight')!.shape).toEqual([cfg.n_embd, 3 * cfg.n_embd]);
  });

  it('names the field when n_kv_head does not divide n_head or RoPE gets an odd head size', () => {
    expect(() => GptConfigSchema.parse({ vocab_size: 8, block_size: 8, n_layer: 1, n_head: 4, n_embd: 16, n_kv_head: 3 })).toThrow(/n_kv_head[\s\S]*must divide n_head \(4 % 3 != 0\)/);
    expect(() => GptConfigSchema.parse({ vocab_size: 8, block_size: 8, n_layer: 1, n_head: 4, n_embd: 12, pos: 'rope' })).toThrow(/pos[\s\S]*even head size/);
  });
});

describe('RoPE', () => {
  it('rotates each (i, i + hs/2) pair of q by position · θ^(-2i/hs), as a plain-TS reference does', async () => {
    const [B, H, T, hs, theta] = [2, 3, 7, 8, 10000];
    const g = new Graph('rope');
    const x = g.input('x', 'float32', [B, H, T, hs]);
    g.output(applyRope(x, ropeConsts(g, T, hs, theta)), 'y');
    const r = mulberry32(3);
    const data = Float32Array.from({ length: B * H * T * hs }, () => 2 * r() - 1);
    const session = await ort.InferenceSession.create(serializeModel(g).model);
    const y = (await session.run({ x: new ort.Tensor('float32', data, [B, H, T, hs]) })).y.data as Float32Array;
    await session.release();
    const ref = new Float32Array(data.length);
    for (let row = 0; row < B * H; row++) {
      for (let t = 0; t < T; t++) {
        const o = (row * T + t) * hs;
        for (let i = 0; i < hs / 2; i++) {
          const a = t / Math.pow(theta, (2 * i) / hs);
          const [u, w] = [data[o + i], data[o + i + hs / 2]];
          ref[o + i] = u * Math.cos(a) - w * Math.sin(a);
          ref[o + i + hs / 2] = w * Math.cos(a) + u * Math.sin(a);
        }
      }
    }
    expect(maxAbsDiff(y, ref)).toBeLessThan(1e-6);
    // A rotation keeps each pair's length, and position 0 is left alone.
    expect(maxAbsDiff(y.subarray(0, hs), data.subarray(0, hs))).toBeLessThan(1e-7);
  });
});

describe('grouped-query attention', () => {
  it('with n_kv_head = n_head equals standard attention given the same weights', async () => {
    const { golden, cfg, weights } = goldenFixture();
    const tokens = golden.tokens.flat();
    const standard = await logitsOf(cfg, weights, tokens, golden.batch, golden.seq);
    const grouped = await logitsOf(cfg, weights, tokens, golden.batch, golden.seq, (c, idx, p) => gptLogits({ ...c, n_kv_head: c.n_head }, idx, p));
    expect(maxAbsDiff(grouped, standard)).toBeLessThan(1e-6);
  });

  it('with 2 kv heads for 4 query heads equals standard attention whose k/v heads repeat each group', async () => {
    const { golden, cfg } = goldenFixture();
    const gqa = GptConfigSchema.parse({ ...cfg, n_kv_head: 2 });
    const w = initParams(gptParams(gqa), 11);
    const C = cfg.n_embd;
    const hs = C / cfg.n_head;
    // Standard c_attn (C, 3C): q as is; k and v heads 0,1 read kv head 0 and heads 2,3 kv head 1.
    const full = new Map(w);
    for (let l = 0; l < cfg.n_layer; l++) {
      for (const part of ['weight', 'bias']) {
        const name = `h.${l}.attn.c_attn.${part}`;
        const src = w.get(name)!;
        const rows = part === 'weight' ? C : 1;
        const [srcCols, dstCols] = [C + 2 * 2 * hs, 3 * C];
        const dst = new Float32Array(rows * dstCols);
        for (let r = 0; r < rows; r++) {
          for (let c = 0; c < C; c++) dst[r * dstCols + c] = src[r * srcCols + c];
          for (const [which, base] of [[1, C], [2, C + 2 * hs]] as const) {
            for (let head = 0; head < cfg.n_head; head++) {
              const kv = Math.floor(head / 2);
              for (let j = 0; j < hs; j++) dst[r * dstCols + which * C + head * hs + j] = src[r * srcCols + base + kv * hs + j];
            }
          }
        }
        full.set(name, dst);
      }
    }
    const tokens = golden.tokens.flat();
    const a = await logitsOf(gqa, w, tokens, golden.batch, golden.seq);
    const b = await logitsOf(cfg, full, tokens, golden.batch, golden.seq);
    expect(gptParams(gqa).find((s) => s.name === 'h.0.attn.c_attn.weight')!.shape).toEqual([C, C + 4 * hs]);
    expect(maxAbsDiff(a, b)).toBeLessThan(2e-6);
  });
});

describe('Llama layout (RoPE + RMSNorm + SwiGLU + GQA + untied head)', () => {
  it('reproduces Hugging Face LlamaForCausalLM logits to 1e-4 from its safetensors', async () => {
    const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'llama/golden.json'), 'utf8')) as { config: unknown; batch: number; seq: number; tokens: number[][]; logits: number[] };
    const cfg = GptConfigSchema.parse(golden.config);
    const hf = readSafetensors(fs.readFileSync(path.join(FIX, 'llama/model.safetensors')), 'model.safetensors').tensors as unknown as Map<string, NamedTensor>;
    const weights = llamaToGpt(cfg, hf);
    expect([...weights.keys()].sort()).toEqual(gptParams(cfg).map((s) => s.name).sort());
    const got = await logitsOf(cfg, weights, golden.tokens.flat(), golden.batch, golden.seq);
    expect(maxAbsDiff(got, golden.logits)).toBeLessThan(1e-4);
    hf.delete('model.layers.1.mlp.up_proj.weight');
    expect(() => llamaToGpt(cfg, hf, 'x.safetensors')).toThrow('x.safetensors: tensor "model.layers.1.mlp.up_proj.weight" is missing');
  });
});

describe('untied head', () => {
  const cfg = GptConfigSchema.parse({ vocab_size: 32, block_size: 8, n_layer: 1, n_head: 2, n_embd: 16, tie_embeddings: false });

  it('has its own lm_head.weight (V, C); set equal to wte it gives the tied model’s logits', async () => {
    const spec = gptParams(cfg).find((s) => s.name === 'lm_head.weight');
    expect(spec?.shape).toEqual([32, 16]);
    const w = initParams(gptParams(cfg), 5);
    expect(maxAbsDiff(w.get('lm_head.weight')!, w.get('wte')!)).toBeGreaterThan(0.01);
    const tokens = Array.from({ length: 16 }, (_, i) => (i * 7) % 32);
    const tied = GptConfigSchema.parse({ ...cfg, tie_embeddings: true });
    const untiedOwn = await logitsOf(cfg, w, tokens, 2, 8);
    const tiedLogits = await logitsOf(tied, w, tokens, 2, 8);
    expect(maxAbsDiff(untiedOwn, tiedLogits)).toBeGreaterThan(1e-3);
    const same = new Map(w).set('lm_head.weight', w.get('wte')!);
    expect(maxAbsDiff(await logitsOf(cfg, same, tokens, 2, 8), tiedLogits)).toBeLessThan(1e-6);
  });

  it('exports with its own head: the inference graph gives the training builder’s logits', async () => {
    const w = initParams(gptParams(cfg), 1);
    const tokens = Array.from({ length: 16 }, (_, i) => (i * 5) % 32);
    const session = await ort.InferenceSession.create(serializeModel(exportGpt(cfg, w)).model, { intraOpNumThreads: 1 });
    const out = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens, BigInt), [2, 8]) });
    await session.release();
    expect(maxAbsDiff(out.logits.data as Float32Array, await logitsOf(cfg, w, tokens, 2, 8))).toBeLessThan(1e-5);
  });
});

/**
 * Rows repeat two random tokens, a b a b …: the next token is the one two places back, so a
 * bigram model stays at ln V and only attention to position t-2 brings the loss down.
 */
function periodicBatch(V: number, B: number, T: number, step: number): Batch {
  const r = mulberry32(9000 + step);
  const rows = Array.from({ length: B }, () => [Math.floor(r() * V), Math.floor(r() * V)]);
  const tok = (off: number) => Array.from({ length: B * T }, (_, i) => rows[Math.floor(i / T)][((i % T) + off) % 2]);
  return { tokens: tensor('int64', [B, T], tok(0)), targets: tensor('int64', [B, T], tok(1)) };
}

async function trainLosses(cfg: GptConfig, steps: number, B = 8, T = 16, seed = 7, weights?: Map<string, Float32Array>): Promise<number[]> {
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
  const trainer = await Trainer.create(buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, optim), { seed, weights, sessionConfig: { intraOpThreads: 1 } });
  try {
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) losses.push((await trainer.run(periodicBatch(cfg.vocab_size, B, T, s))).loss);
    return losses;
  } finally {
    await trainer.release();
  }
}

describe('dropout', () => {
  const base = { vocab_size: 16, block_size: 16, n_layer: 1, n_head: 2, n_embd: 16 };

  it('is deterministic for a seed, differs across seeds, and is off in inference logits', async () => {
    const w = initParams(gptParams(GptConfigSchema.parse(base)), 3);
    const run = (extra: object) => trainLosses(GptConfigSchema.parse({ ...base, ...extra }), 3, 4, 16, 3, w);
    const a = await run({ dropout: 0.2, dropout_seed: 1 });
    const again = await run({ dropout: 0.2, dropout_seed: 1 });
    const other = await run({ dropout: 0.2, dropout_seed: 2 });
    const none = await run({});
    expect(again).toEqual(a);
    expect(other[0]).not.toBe(a[0]);
    expect(none[0]).not.toBe(a[0]);
    const tokens = Array.from({ length: 32 }, (_, i) => i % 16);
    const withDrop = await logitsOf(GptConfigSchema.parse({ ...base, dropout: 0.2 }), w, tokens, 2, 16);
    expect(maxAbsDiff(withDrop, await logitsOf(GptConfigSchema.parse(base), w, tokens, 2, 16))).toBe(0);
  });
});

describe('every variant trains with falling loss (60 AdamW steps on a b a b … rows, V = 16)', () => {
  const base = { vocab_size: 16, block_size: 16, n_layer: 2, n_head: 4, n_embd: 32 };
  const cases: [string, object][] = [
    ['rope', { pos: 'rope' }],
    ['rmsnorm', { norm: 'rmsnorm' }],
    ['swiglu', { mlp: 'swiglu' }],
    ['gqa (1 kv head)', { n_kv_head: 1 }],
    ['dropout 0.1', { dropout: 0.1 }],
    ['untied head', { tie_embeddings: false }],
    ['llama layout', { pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false, bias: false }],
  ];
  it.each(cases)('%s', async (_name, extra) => {
    const losses = await trainLosses(GptConfigSchema.parse({ ...base, ...extra }), 60);
    expect(losses[0]).toBeGreaterThan(0.9 * Math.log(16));
    // Below half the bigram-only loss (ln 16): the model reads position t-2.
    expect(mean(losses.slice(-5))).toBeLessThan(0.5 * Math.log(16));
  });
});

describe('LoRA on a variant', () => {
  it('selects the Llama-layout linears by their GPT-2 names (head excluded) and the adapters train', async () => {
    const cfg = GptConfigSchema.parse({ vocab_size: 16, block_size: 16, n_layer: 2, n_head: 4, n_embd: 32, pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false, bias: false });
    const base = { params: gptParams(cfg), loss: gptTrainLoss(cfg, 8, 16) };
    const plan = planLora(base, { target_modules: 'all-linear', r: 4, lora_alpha: 8 });
    expect(plan.modules.map((m) => m.module)).toEqual(['h.0.attn.c_attn', 'h.0.attn.c_proj', 'h.0.mlp.c_fc', 'h.0.mlp.c_proj', 'h.1.attn.c_attn', 'h.1.attn.c_proj', 'h.1.mlp.c_fc', 'h.1.mlp.c_proj']);
    expect(plan.modules[0].outFeatures).toBe(32 + 2 * 2 * 8); // q + k + v of 2 kv heads
    const model = loraModel(base, plan);
    const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
    // A random base's frozen head and final norm bound the logits to about ±0.6, so start LoRA
    // from a briefly trained base (as fine-tuning does) and let the adapters go on from there.
    const pre = await Trainer.create(buildTrainStep(base, optim), { seed: 7, sessionConfig: { intraOpThreads: 1 } });
    for (let s = 0; s < 20; s++) await pre.run(periodicBatch(16, 8, 16, 1000 + s));
    const weights = new Map([...pre.params(), ...initAdapters(plan)]);
    await pre.release();
    const trainer = await Trainer.create(buildTrainStep(model, optim, { trainable: isAdapterParam }), { weights, sessionConfig: { intraOpThreads: 1 } });
    const losses: number[] = [];
    try {
      for (let s = 0; s < 40; s++) losses.push((await trainer.run(periodicBatch(16, 8, 16, s))).loss);
    } finally {
      await trainer.release();
    }
    expect(mean(losses.slice(-5))).toBeLessThan(0.8 * mean(losses.slice(0, 3)));
  });
});
