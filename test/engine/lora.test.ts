// LoRA on our own models: target selection as PEFT does it, step 0 equal to the base model,
// training only the adapters (frozen base, small graph and optimizer state), merge for export
// agreeing with unmerged inference, rsLoRA scaling.

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { Graph, tensor } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { bertEncoder, bertMlmHeadParams, bertMlmTrainLoss, bertParams } from '../../engine/models/bert';
import { countParams, initParams, mulberry32, type ParamLookup, type ParamSpec } from '../../engine/models/blocks';
import { GptConfigSchema, gptLogits, gptParams, gptTrainLoss, type GptConfig } from '../../engine/models/gpt';
import { configFromHf, getPreset, importHfWeights } from '../../engine/models/presets';
import { t5Params, t5TrainLoss, type T5Config } from '../../engine/models/t5';
import type { BertConfig } from '../../engine/models/bert';
import { OptimConfigSchema } from '../../engine/optim';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  buildWithLora,
  checkAdapterAgainstPlan,
  initAdapters,
  isAdapterParam,
  loadAdapter,
  loraModel,
  loraScale,
  mergeWeights,
  planLora,
  saveAdapter,
  trainableReport,
  type LoraPlan,
} from '../../engine/lora';
import { readSafetensors } from '../../engine/checkpoint/safetensors';

const cfg = GptConfigSchema.parse({ vocab_size: 64, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32 });
const [B, T] = [4, 16];
const base = { params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) };
/** A random base whose tied embedding/head is wide enough (std 0.3, not 0.02) to express sharp predictions, like a trained one. */
const baseWeights = initParams(base.params, 1);
baseWeights.set('wte', baseWeights.get('wte')!.map((x) => x * 15));

/** Logits (B·T, V) of the GPT with `weights`, adapters attached when `plan` is given. */
async function logits(weights: Map<string, Float32Array>, tokens: number[], plan?: LoraPlan): Promise<Float32Array> {
  const g = new Graph('infer');
  const specs = new Map<string, ParamSpec>([...base.params, ...(plan?.adapterParams ?? [])].map((s) => [s.name, s]));
  const p: ParamLookup = (name) => g.values.get(name) ?? g.initializer(name, { dtype: 'float32', dims: specs.get(name)!.shape, data: weights.get(name)! });
  const idx = g.input('tokens', 'int64', [B, T]);
  const build = (pp: ParamLookup) => gptLogits(cfg, idx, pp);
  g.output(plan ? buildWithLora(g, p, plan, build) : build(p), 'logits');
  const s = await ort.InferenceSession.create(serializeModel(g).model);
  try {
    const out = await s.run({ tokens: new ort.Tensor('int64', BigInt64Array.from(tokens, BigInt), [B, T]) });
    return out.logits.data as Float32Array;
  } finally {
    await s.release();
  }
}

const randomTokens = (seed: number) => {
  const r = mulberry32(seed);
  return Array.from({ length: B * T }, () => Math.floor(r() * cfg.vocab_size));
};
const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

/** Adapters with a non-zero B, as after some training. */
function perturbedAdapters(plan: LoraPlan, seed: number): Map<string, Float32Array> {
  const a = initAdapters(plan);
  const r = mulberry32(seed);
  for (const [name, t] of a) if (name.endsWith('lora_B.weight')) for (let i = 0; i < t.length; i++) t[i] = (r() - 0.5) * 0.2;
  return a;
}

describe('target selection (PEFT defaults and patterns)', () => {
  it('GPT defaults to c_attn in every block; all-linear takes every Linear but not the tied head', () => {
    expect(planLora(base, { family: 'gpt' }).modules.map((m) => m.module)).toEqual(['h.0.attn.c_attn', 'h.1.attn.c_attn']);
    const all = planLora(base, { family: 'gpt', target_modules: 'all-linear' }).modules.map((m) => m.module);
    expect(all).toEqual(['h.0.attn.c_attn', 'h.0.attn.c_proj', 'h.0.mlp.c_fc', 'h.0.mlp.c_proj', 'h.1.attn.c_attn', 'h.1.attn.c_proj', 'h.1.mlp.c_fc', 'h.1.mlp.c_proj']);
    const qv = planLora(base, { target_modules: 'h\\.1\\.(attn|mlp)\\.c_proj' }).modules.map((m) => m.module);
    expect(qv).toEqual(['h.1.attn.c_proj', 'h.1.mlp.c_proj']);
  });

  it('BERT defaults to query and value; T5 to q and v in encoder, decoder and cross attention', () => {
    const bc = getPreset('tiny-bert').config as BertConfig;
    const bert = { params: [...bertParams(bc), ...bertMlmHeadParams(bc)].filter((s) => !s.name.startsWith('pooler.')), loss: bertMlmTrainLoss(bc, 2, 8) };
    const bm = planLora(bert, { family: 'bert' }).modules;
    expect(bm.map((m) => m.module)).toEqual([0, 1].flatMap((i) => ['query', 'value'].map((w) => `encoder.layer.${i}.attention.self.${w}`)));
    expect(bm[0]).toMatchObject({ inFeatures: 64, outFeatures: 64, weightInOut: false }); // torch (out, in) layout, Gemm transB
    // BertForMaskedLM's decoder is tied to word_embeddings: never an all-linear target.
    expect(planLora(bert, { target_modules: 'all-linear' }).modules.some((m) => m.module.includes('embeddings'))).toBe(false);
    const tc = getPreset('tiny-t5').config as T5Config;
    const t5 = planLora({ params: t5Params(tc), loss: t5TrainLoss(tc, 2, 8, 8) }, { family: 't5' }).modules.map((m) => m.module);
    expect(t5).toContain('encoder.block.0.layer.0.SelfAttention.q');
    expect(t5).toContain('decoder.block.1.layer.1.EncDecAttention.v');
    expect(t5.every((m) => /\.(q|v)$/.test(m))).toBe(true);
    expect(t5).toHaveLength(2 * 2 + 2 * 4); // encoder: 2 layers × (q, v); decoder: 2 layers × (self q, v + cross q, v)
  });

  it('a pattern that matches nothing names the field and lists the linear layers', () => {
    expect(() => planLora(base, { target_modules: ['query'] })).toThrow(/lora\.target_modules: \["query"\] matches no linear layer; linear layers are: h\.0\.attn\.c_attn/);
    expect(() => planLora(base, {})).toThrow(/lora\.target_modules: required when lora\.family is not set/);
    expect(() => planLora(base, { family: 'gpt', r: 0 })).toThrow(/lora\.r: /);
  });
});

describe('adapters on our GPT', () => {
  it('step 0 gives exactly the base model (A Kaiming-uniform, B zeros)', async () => {
    const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8 });
    const adapters = initAdapters(plan);
    const a = adapters.get('h.0.attn.c_attn.lora_A.weight')!;
    const bound = 1 / Math.sqrt(cfg.n_embd);
    expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(0.9 * bound); // really uniform over the range
    expect(adapters.get('h.0.attn.c_attn.lora_B.weight')!.every((x) => x === 0)).toBe(true);
    const tokens = randomTokens(3);
    const plain = await logits(baseWeights, tokens);
    const withLora = await logits(new Map([...baseWeights, ...adapters]), tokens, plan);
    expect(maxAbsDiff(plain, withLora)).toBe(0);
  });

  it('merged and unmerged inference agree to 1e-5, and the adapter really changes the output', async () => {
    for (const use_rslora of [false, true]) {
      const plan = planLora(base, { family: 'gpt', target_modules: ['c_attn', 'c_fc'], r: 4, lora_alpha: 16, use_rslora });
      expect(plan.scale).toBeCloseTo(use_rslora ? 16 / 2 : 16 / 4, 12);
      const adapters = perturbedAdapters(plan, 11);
      const tokens = randomTokens(5);
      const unmerged = await logits(new Map([...baseWeights, ...adapters]), tokens, plan);
      const merged = await logits(mergeWeights(baseWeights, plan, adapters), tokens);
      const plain = await logits(baseWeights, tokens);
      expect(maxAbsDiff(unmerged, merged)).toBeLessThan(1e-5);
      expect(maxAbsDiff(unmerged, plain)).toBeGreaterThan(1e-2);
    }
  });

  it('rsLoRA scales the merged update by alpha/√r instead of alpha/r', () => {
    const r = 16;
    const std = planLora(base, { family: 'gpt', r, lora_alpha: 16 });
    const rs = planLora(base, { family: 'gpt', r, lora_alpha: 16, use_rslora: true });
    expect(loraScale(rs.config) / loraScale(std.config)).toBeCloseTo(Math.sqrt(r), 10);
    const adapters = perturbedAdapters(std, 2);
    const w = 'h.0.attn.c_attn.weight';
    const d = (plan: LoraPlan) => {
      const m = mergeWeights(baseWeights, plan, adapters).get(w)!;
      return m.map((x, i) => x - baseWeights.get(w)![i]);
    };
    const dStd = d(std);
    const dRs = d(rs);
    const k = dStd.findIndex((x) => Math.abs(x) > 1e-3);
    expect(dRs[k] / dStd[k]).toBeCloseTo(Math.sqrt(r), 3);
  });
});

describe('training only the adapters', () => {
  /** Next-token task: each row counts up from a random start, so the target is (token + 1) mod V. */
  const batch = (step: number): Batch => {
    const r = mulberry32(100 + step);
    const toks: number[] = [];
    const tgts: number[] = [];
    for (let b = 0; b < B; b++) {
      const start = Math.floor(r() * cfg.vocab_size);
      for (let t = 0; t < T; t++) {
        toks.push((start + t) % cfg.vocab_size);
        tgts.push((start + t + 1) % cfg.vocab_size);
      }
    }
    return { tokens: tensor('int64', [B, T], toks), targets: tensor('int64', [B, T], tgts) };
  };

  it('loss falls, the base weights never change, and the step graph only trains r·(in+out) per module', async () => {
    const plan = planLora(base, { family: 'gpt', target_modules: 'all-linear', r: 4, lora_alpha: 8, lora_dropout: 0.05, seed: 3 });
    const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
    const step = buildTrainStep(loraModel(base, plan), optim, { trainable: isAdapterParam });
    const report = trainableReport(plan, countParams(base.params));
    // 8 linear modules of a 2-layer 32-wide GPT: 2 × (4·(32+96) + 4·(32+32) + 4·(32+128) + 4·(128+32)) = 4096.
    expect(report.trainable).toBe(4096);
    expect(report.fraction).toBeCloseTo(4096 / (countParams(base.params) + 4096), 12);
    expect(step.trainable.map((s) => s.name).every(isAdapterParam)).toBe(true);
    expect(step.frozen).toHaveLength(base.params.length);
    expect(step.state.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0)).toBe(2 * 4096); // AdamW m and v, adapters only
    const graphInputs = step.graph.inputs.map((v) => v.name);
    expect(graphInputs.filter((n) => n.startsWith('param:'))).toHaveLength(16);
    expect(graphInputs).toContain('frozen:h.0.attn.c_attn.weight');

    const weights = new Map([...baseWeights, ...initAdapters(plan)]);
    const trainer = await Trainer.create(step, { weights });
    try {
      const losses: number[] = [];
      for (let s = 0; s < 40; s++) losses.push((await trainer.run(batch(s))).loss);
      const first = losses[0];
      const last = losses.slice(-5).reduce((a, b) => a + b, 0) / 5;
      expect(first).toBeGreaterThan(6); // the wide random head is confidently wrong (measured ≈ 9)
      expect(last).toBeLessThan(0.5 * first); // measured ≈ 3.1 after 40 steps
      // The frozen base is still exactly what went in: the runner never received new base weights.
      const trained = trainer.params();
      expect([...trained.keys()].every(isAdapterParam)).toBe(true);
      expect(trained.get('h.0.attn.c_attn.lora_B.weight')!.some((x) => x !== 0)).toBe(true);
      // The trained adapter merged into the base gives the trained model's predictions.
      const tokens = Array.from((batch(999).tokens.data as BigInt64Array), Number);
      const unmerged = await logits(new Map([...baseWeights, ...trained]), tokens, plan);
      const merged = await logits(mergeWeights(baseWeights, plan, trained), tokens);
      expect(maxAbsDiff(unmerged, merged)).toBeLessThan(1e-5);
    } finally {
      await trainer.release();
    }
  });
});

describe('BERT (torch (out, in) weights, Gemm transB)', () => {
  it('merged and unmerged encoder outputs agree to 1e-5', async () => {
    const bc = getPreset('tiny-bert').config as BertConfig;
    const specs = bertParams(bc).filter((s) => !s.name.startsWith('pooler.'));
    const model = { params: [...specs, ...bertMlmHeadParams(bc)], loss: bertMlmTrainLoss(bc, 2, 8) };
    const plan = planLora(model, { target_modules: 'encoder\\..*', r: 4, lora_alpha: 8 }); // every Linear of the encoder layers
    expect(plan.modules).toHaveLength(2 * 6);
    expect(plan.modules.every((m) => !m.weightInOut)).toBe(true);
    const weights = initParams(specs, 4);
    const adapters = perturbedAdapters(plan, 9);
    const encode = async (w: Map<string, Float32Array>, withPlan?: LoraPlan) => {
      const g = new Graph('bert_infer');
      const all = new Map([...specs, ...plan.adapterParams].map((s) => [s.name, s]));
      const p: ParamLookup = (name) => g.values.get(name) ?? g.initializer(name, { dtype: 'float32', dims: all.get(name)!.shape, data: w.get(name)! });
      const inputIds = g.input('input_ids', 'int64', [2, 8]);
      const build = (pp: ParamLookup) => bertEncoder(bc, { inputIds }, pp);
      g.output(withPlan ? buildWithLora(g, p, withPlan, build) : build(p), 'hidden');
      const s = await ort.InferenceSession.create(serializeModel(g).model);
      try {
        const ids = Array.from({ length: 16 }, (_, i) => (i * 7) % bc.vocab_size);
        return (await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [2, 8]) })).hidden.data as Float32Array;
      } finally {
        await s.release();
      }
    };
    const unmerged = await encode(new Map([...weights, ...adapters]), plan);
    const merged = await encode(mergeWeights(weights, plan, adapters));
    expect(maxAbsDiff(unmerged, merged)).toBeLessThan(1e-5);
    expect(maxAbsDiff(unmerged, await encode(weights))).toBeGreaterThan(1e-2);
  });
});

describe('PEFT adapter files', () => {
  const plan = planLora(base, { family: 'gpt', r: 4, lora_alpha: 16, lora_dropout: 0.05 });
  const adapters = perturbedAdapters(plan, 21);

  it("writes PEFT's tensor names, layouts and adapter_config.json keys (GPT-2: transformer. prefix, fan_in_fan_out)", () => {
    const files = saveAdapter(plan, adapters, { baseModelNameOrPath: 'gpt2' });
    const st = readSafetensors(files.get(ADAPTER_WEIGHTS_FILE)!, ADAPTER_WEIGHTS_FILE);
    expect([...st.tensors.keys()].sort()).toEqual(
      [0, 1].flatMap((i) => ['lora_A', 'lora_B'].map((w) => `base_model.model.transformer.h.${i}.attn.c_attn.${w}.weight`)).sort(),
    );
    expect(st.tensors.get('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight')!.dims).toEqual([4, 32]); // (r, in)
    expect(st.tensors.get('base_model.model.transformer.h.0.attn.c_attn.lora_B.weight')!.dims).toEqual([96, 4]); // (out, r)
    const cfgJson = JSON.parse(files.get(ADAPTER_CONFIG_FILE)!.toString('utf8'));
    expect(cfgJson).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      base_model_name_or_path: 'gpt2',
      r: 4,
      lora_alpha: 16,
      lora_dropout: 0.05,
      target_modules: ['c_attn'],
      use_rslora: false,
      bias: 'none',
      fan_in_fan_out: true,
    });
  });

  it('loads back to the same tensors and plan; a wrong shape or missing file is named', () => {
    const files = saveAdapter(plan, adapters);
    const back = loadAdapter(files, { family: 'gpt', where: 'run-7/adapter' });
    expect(back.config).toMatchObject({ r: 4, lora_alpha: 16, lora_dropout: 0.05, target_modules: ['c_attn'] });
    const again = planLora(base, back.config);
    expect(again.modules).toEqual(plan.modules);
    checkAdapterAgainstPlan(back, again);
    for (const [name, t] of adapters) expect(back.tensors.get(name)).toEqual(t);

    const wider = planLora(base, { family: 'gpt', r: 8 });
    expect(() => checkAdapterAgainstPlan(back, wider, 'run-7/adapter')).toThrow(/run-7\/adapter: tensor h\.0\.attn\.c_attn\.lora_A\.weight is \[4, 32\], the model needs \[8, 32\]/);
    expect(() => loadAdapter(new Map([[ADAPTER_CONFIG_FILE, files.get(ADAPTER_CONFIG_FILE)!]]), { where: 'run-7/adapter' })).toThrow(
      'run-7/adapter: adapter_model.safetensors is missing',
    );
    const badCfg = Buffer.from(JSON.stringify({ peft_type: 'LORA', r: -1, lora_alpha: 8 }));
    expect(() => loadAdapter(new Map([...files, [ADAPTER_CONFIG_FILE, badCfg]]), { where: 'run-7/adapter' })).toThrow(/run-7\/adapter\/adapter_config\.json\.r: /);
  });
});

describe("PEFT's own GPT-2 adapter on our GPT builder", () => {
  it('reproduces PEFT logits (Conv1D fan_in_fan_out, transformer. prefix, rsLoRA) to 1e-4', async () => {
    const hfDir = path.join(__dirname, '..', 'fixtures', 'hf', 'gpt2');
    const fix = path.join(__dirname, '..', 'fixtures', 'lora');
    const preset = configFromHf('gpt', JSON.parse(fs.readFileSync(path.join(hfDir, 'config.json'), 'utf8')));
    const gcfg = preset.config as GptConfig;
    const file = path.join(hfDir, 'model.safetensors');
    const weights = importHfWeights(preset, readSafetensors(fs.readFileSync(file), file).tensors, file).weights;
    const files = new Map([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].map((f) => [f, fs.readFileSync(path.join(fix, 'peft-gpt2-adapter', f))]));
    const adapter = loadAdapter(files, { family: 'gpt', where: 'peft-gpt2-adapter' });
    expect(adapter.raw.fan_in_fan_out).toBe(true);
    const golden = JSON.parse(fs.readFileSync(path.join(fix, 'golden-gpt2.json'), 'utf8')) as { input_ids: number[]; shape: [number, number]; lora_logits: number[] };
    const [b, t] = golden.shape;
    const model = { params: gptParams(gcfg), loss: gptTrainLoss(gcfg, b, t) };
    const plan = planLora(model, adapter.config);
    expect(plan.scale).toBeCloseTo(8 / 2, 12); // rsLoRA: alpha/√r
    checkAdapterAgainstPlan(adapter, plan, 'peft-gpt2-adapter');

    const g = new Graph('gpt2_peft');
    const all = new Map([...model.params, ...plan.adapterParams].map((s) => [s.name, s]));
    const w = new Map([...weights, ...adapter.tensors]);
    const p: ParamLookup = (name) => g.values.get(name) ?? g.initializer(name, { dtype: 'float32', dims: all.get(name)!.shape, data: w.get(name)! });
    const idx = g.input('tokens', 'int64', [b, t]);
    g.output(buildWithLora(g, p, plan, (pp) => gptLogits(gcfg, idx, pp)), 'logits');
    const s = await ort.InferenceSession.create(serializeModel(g).model);
    try {
      const out = (await s.run({ tokens: new ort.Tensor('int64', BigInt64Array.from(golden.input_ids, BigInt), [b, t]) })).logits.data as Float32Array;
      expect(maxAbsDiff(out, Float32Array.from(golden.lora_logits))).toBeLessThan(1e-4);
    } finally {
      await s.release();
    }
  });
});
