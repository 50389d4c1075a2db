// The T5 training step (engine/train/seq2seq.ts) on the tiny fixture (test/fixtures/t5-tiny, made
// by make_t5_tiny.py, and hf-io/t5_gated): our autodiff's gradient of every weight against Hugging
// Face's own loss differentiated by torch in float64 for one padded batch; loss falls on a tiny overfit task, with
// all weights and with LoRA adapters only (the base stays frozen, and step 0 is the base's loss).

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { gradients } from '../../engine/autodiff/gradients';
import { seq2seqBatch } from '../../engine/data/t5-span';
import { Graph } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { readHfFolder } from '../../engine/hf';
import { initAdapters } from '../../engine/lora';
import { t5Params, t5ShiftRight, t5TrainLoss, type T5Config } from '../../engine/models/t5';
import { OptimConfigSchema } from '../../engine/optim';
import { zeroState } from '../../engine/train/shard';
import { buildT5TrainStep, compileT5TrainStep } from '../../engine/train/seq2seq';

const FIX = path.join(__dirname, '..', 'fixtures', 't5-tiny');
const threads = { intraOpThreads: 1 };
const hf = readHfFolder(path.join(FIX, 'model'));
const cfg = hf.config as T5Config;
interface GradGolden {
  input_ids: number[][];
  attention_mask: number[][];
  labels: number[][];
  decoder_input_ids: number[][];
  loss: number;
}
const i64 = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0].length]);

describe('T5 gradients against Hugging Face in float64', () => {
  // Observed (float32 against float64): v1.0 |Δloss| 2.1e-7, max |Δgrad| / max|grad| per tensor 9.0e-7;
  // v1.1 gated |Δloss| 1.2e-7, gradients 1.4e-6.
  test.each([
    ['v1.0 (ReLU, tied head)', path.join(FIX, 'model'), 'grad_golden', 2e-6, 1e-5],
    ['v1.1 (gated GELU, untied head)', path.join(FIX, '..', 'hf-io', 't5_gated'), 'grad_golden_gated', 2e-6, 1e-5],
  ])('%s: every weight’s gradient of a padded batch’s loss matches torch autograd on HF’s T5ForConditionalGeneration', async (_, dir, name, lossTol, gradTol) => {
    const m = readHfFolder(dir);
    const c = m.config as T5Config;
    const gold = JSON.parse(fs.readFileSync(path.join(FIX, `${name}.json`), 'utf8')) as GradGolden;
    const goldGrads = readSafetensors(fs.readFileSync(path.join(FIX, `${name}.safetensors`)), `${name}.safetensors`).tensors;
    const [B, S, T] = [2, 8, 5];
    expect(t5ShiftRight(c, gold.labels.flat(), B, T)).toEqual(gold.decoder_input_ids.flat()); // HF's _shift_right
    const g = new Graph('t5_grad');
    const specs = t5Params(c);
    const values = new Map(specs.map((s) => [s.name, g.input(s.name, 'float32', s.shape)]));
    const loss = t5TrainLoss(c, B, S, T)(g, (n) => values.get(n)!);
    g.output(loss, 'loss');
    const grads = gradients(g, loss, [...values.values()]);
    for (const s of specs) g.output(grads.get(values.get(s.name)!.name)!, `grad:${s.name}`);
    const session = await ort.InferenceSession.create(serializeModel(g).model, { intraOpNumThreads: 1 });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: i64(gold.input_ids),
      attention_mask: i64(gold.attention_mask),
      decoder_input_ids: i64(gold.decoder_input_ids),
      labels: i64(gold.labels),
    };
    for (const s of specs) feeds[s.name] = new ort.Tensor('float32', m.weights.get(s.name)!, s.shape);
    const out = await session.run(feeds);
    await session.release();
    const lossErr = Math.abs((out.loss.data as Float32Array)[0] - gold.loss);
    const ours = new Map(specs.map((s) => [s.name, Float32Array.from(out[`grad:${s.name}`].data as Float32Array)]));
    if (!c.tie_word_embeddings && !goldGrads.has('lm_head.weight')) {
      // transformers 5 ties a v1.1 head to shared (engine/hf/t5.ts): its shared.grad is our shared's plus our lm_head's.
      const sh = ours.get('shared.weight')!;
      ours.get('lm_head.weight')!.forEach((v, i) => (sh[i] += v));
      ours.delete('lm_head.weight');
    }
    expect([...ours.keys()].sort()).toEqual([...goldGrads.keys()].sort());
    let worst = 0;
    for (const [n, got] of ours) {
      const want = goldGrads.get(n)!.data as Float32Array;
      expect(got.length).toBe(want.length);
      let scale = 0;
      for (const w of want) scale = Math.max(scale, Math.abs(w));
      expect(scale).toBeGreaterThan(0); // every weight gets a gradient
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / scale);
    }
    expect(lossErr).toBeLessThan(lossTol);
    expect(worst).toBeLessThan(gradTol);
  });
});

describe('T5 training steps', () => {
  // A fixed batch of four source → target pairs (ids of the fixture's vocabulary), one padded.
  const pairs = [
    { inputs: [12, 40, 13, 1], targets: [41, 1] },
    { inputs: [12, 42, 13, 1], targets: [43, 1] },
    { inputs: [12, 44, 13, 1], targets: [45, 1] },
    { inputs: [12, 46, 1], targets: [47, 48, 1] },
  ];
  const batch = seq2seqBatch(pairs, cfg, 4, 3);
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
  const setup = { model: cfg, optim, batchSize: 4, srcLen: 4, tgtLen: 3 };

  test('all weights: the loss of a repeated batch falls below a tenth of its start within 40 steps', async () => {
    const c = await compileT5TrainStep(setup, threads);
    const params = Object.fromEntries(c.step.trainable.map((p) => [p.name, Float32Array.from(hf.weights.get(p.name)!)]));
    expect(c.step.frozen).toHaveLength(0);
    const runner = c.runner({ step: 0, params, state: zeroState(c.step) });
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) losses.push((await runner.run(batch)).loss);
    await runner.release();
    expect(losses[0]).toBeGreaterThan(4); // ≈ ln 157 = 5.06 at the random fixture
    expect(losses.at(-1)!).toBeLessThan(0.1 * losses[0]); // observed 5.50 → 0.037
  });

  test('LoRA on all linear layers: only adapters train, step 0 is the base’s loss, and the loss falls', async () => {
    const step = buildT5TrainStep({ ...setup, lora: { r: 4, lora_alpha: 8, target_modules: 'all-linear' } });
    const leaves = new Set(step.lora!.modules.map((m) => m.module.split('.').pop()));
    expect([...leaves].sort()).toEqual(['k', 'o', 'q', 'v', 'wi', 'wo']);
    expect(step.lora!.modules).toHaveLength(2 * (4 + 2) + 2 * (8 + 2)); // encoder: q k v o wi wo; decoder: + cross q k v o
    expect(step.trainable.every((p) => /\.lora_[AB]\.weight$/.test(p.name))).toBe(true);
    expect(step.frozen.map((p) => p.name).sort()).toEqual(t5Params(cfg).map((p) => p.name).sort());

    const c = await compileT5TrainStep({ ...setup, lora: step.lora! }, threads, hf.weights);
    const runner = c.runner({ step: 0, params: Object.fromEntries(initAdapters(step.lora!)), state: zeroState(c.step) });
    const losses: number[] = [];
    for (let s = 0; s < 40; s++) losses.push((await runner.run(batch)).loss);
    await runner.release();

    const full = await compileT5TrainStep(setup, threads); // its first loss is computed before the update
    const r0 = full.runner({ step: 0, params: Object.fromEntries(full.step.trainable.map((p) => [p.name, Float32Array.from(hf.weights.get(p.name)!)])), state: zeroState(full.step) });
    const baseLoss = (await r0.run(batch)).loss;
    await r0.release();
    expect(Math.abs(losses[0] - baseLoss)).toBeLessThan(1e-5); // B = 0 at init: observed 0
    expect(losses.at(-1)!).toBeLessThan(0.3 * losses[0]); // observed 5.50 → 0.49
  });

  test('bad geometry and a missing frozen weight are config/input errors naming them', async () => {
    expect(() => buildT5TrainStep({ ...setup, tgtLen: 0 })).toThrow('seq2seq training: tgtLen must be a positive integer, got 0');
    expect(() => buildT5TrainStep({ ...setup, model: { ...cfg, d_model: -1 } })).toThrow(/model config: d_model/);
    await expect(compileT5TrainStep({ ...setup, lora: { r: 2 } }, threads, new Map())).rejects.toThrow(/the frozen base weights lack shared.weight/);
  });
});
