// Training smoke tests: the tiny BERT (masked LM and sequence classification) and the tiny T5
// (seq2seq copy task) train through buildTrainStep (forward + autodiff + AdamW in one ORT graph)
// and their loss falls. Plus the masks: padding and future tokens cannot leak.

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import * as ort from 'onnxruntime-node';
import { Graph, tensor } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { bertClassifierParams, bertClassifierTrainLoss, bertEncoder, bertMlmHeadParams, bertMlmTrainLoss, bertParams, type BertConfig } from '../../engine/models/bert';
import { initParams, mulberry32 } from '../../engine/models/blocks';
import { getPreset } from '../../engine/models/presets';
import { t5Logits, t5Params, t5ShiftRight, t5TrainLoss, type T5Config } from '../../engine/models/t5';
import { OptimConfigSchema } from '../../engine/optim';
import { buildTrainStep, type TrainableModel } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';

const bertCfg = getPreset('tiny-bert').config as BertConfig;
const t5Cfg = getPreset('tiny-t5').config as T5Config;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const i64 = (dims: number[], xs: number[]) => tensor('int64', dims, xs);
const MASK_ID = 3;

/** Trains `steps` AdamW steps on batches from `next` and returns the loss of every step. */
async function train(model: TrainableModel, next: (step: number) => Batch, steps: number, lr: number): Promise<number[]> {
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr, weight_decay: 0 } });
  const trainer = await Trainer.create(buildTrainStep(model, optim), { seed: 7 });
  const losses: number[] = [];
  try {
    for (let s = 0; s < steps; s++) losses.push((await trainer.run(next(s))).loss);
  } finally {
    await trainer.release();
  }
  return losses;
}

describe('tiny BERT trains', () => {
  const [B, T] = [8, 16];

  it('masked LM: recovers masked tokens from context, beating the unigram entropy within 100 steps', async () => {
    // Each row repeats one token drawn from 40: without context the best loss is ln 40 ≈ 3.69;
    // reading the unmasked neighbours drives it toward 0.
    const model = { params: [...bertParams(bertCfg), ...bertMlmHeadParams(bertCfg)].filter((s) => !s.name.startsWith('pooler.')), loss: bertMlmTrainLoss(bertCfg, B, T) };
    const next = (step: number): Batch => {
      const r = mulberry32(1000 + step);
      const ids = Array.from({ length: B }, () => 10 + Math.floor(r() * 40)).flatMap((tok) => Array<number>(T).fill(tok));
      const labels = ids.map(() => -100);
      const input = [...ids];
      for (let b = 0; b < B; b++) {
        for (const t of [Math.floor(r() * (T / 2)), T / 2 + Math.floor(r() * (T / 2))]) {
          labels[b * T + t] = ids[b * T + t];
          input[b * T + t] = MASK_ID;
        }
      }
      return { input_ids: i64([B, T], input), attention_mask: i64([B, T], input.map(() => 1)), token_type_ids: i64([B, T], input.map(() => 0)), labels: i64([B, T], labels) };
    };
    const losses = await train(model, next, 100, 3e-3);
    expect(losses[0]).toBeGreaterThan(5); // ≈ ln 256 at init
    expect(mean(losses.slice(-5))).toBeLessThan(0.6 * Math.log(40));
  });

  it('sequence classification: learns whether token 7 occurs anywhere in the row within 40 steps', async () => {
    // The pooled [CLS] position must attend over the whole row to find the token.
    const model = { params: [...bertParams(bertCfg), ...bertClassifierParams(bertCfg, 2)], loss: bertClassifierTrainLoss(bertCfg, B, T) };
    const next = (step: number): Batch => {
      const r = mulberry32(5000 + step);
      const ids = Array.from({ length: B * T }, () => 10 + Math.floor(r() * 40));
      const labels = Array.from({ length: B }, (_, b) => b % 2);
      for (let b = 1; b < B; b += 2) ids[b * T + Math.floor(r() * T)] = 7;
      return { input_ids: i64([B, T], ids), attention_mask: i64([B, T], ids.map(() => 1)), token_type_ids: i64([B, T], ids.map(() => 0)), labels: i64([B], labels) };
    };
    const losses = await train(model, next, 40, 3e-3);
    expect(mean(losses.slice(0, 5))).toBeGreaterThan(0.6); // ≈ ln 2 at init
    expect(mean(losses.slice(-5))).toBeLessThan(0.3);
  });
});

describe('tiny T5 trains', () => {
  it('copy task: the decoder reads the encoder, beating the source-blind loss within 120 steps; -100 is ignored', async () => {
    // Targets are the 4 source tokens (from 10) then EOS, then one ignored slot. A decoder that
    // ignores the source can at best reach (4·ln 10 + 0) / 5 ≈ 1.84 per counted token.
    const [B, S, Tt] = [8, 4, 6];
    const model = { params: t5Params(t5Cfg), loss: t5TrainLoss(t5Cfg, B, S, Tt) };
    const next = (step: number): Batch => {
      const r = mulberry32(9000 + step);
      const src: number[] = [];
      const labels: number[] = [];
      for (let b = 0; b < B; b++) {
        const row = Array.from({ length: S }, () => 2 + Math.floor(r() * 10));
        src.push(...row);
        labels.push(...row, 1, -100);
      }
      const dec = t5ShiftRight(t5Cfg, labels, B, Tt);
      return { input_ids: i64([B, S], src), attention_mask: i64([B, S], src.map(() => 1)), decoder_input_ids: i64([B, Tt], dec), labels: i64([B, Tt], labels) };
    };
    const losses = await train(model, next, 120, 3e-3);
    expect(losses[0]).toBeGreaterThan(5); // ≈ ln 256 and more: T5's N(0, 1) embedding starts confident
    expect(mean(losses.slice(-10))).toBeLessThan(0.9 * (4 * Math.log(10)) / 5);
  });
});

describe('masks', () => {
  async function runOnce(g: Graph, feeds: Record<string, number[][]>): Promise<Float32Array> {
    const session = await ort.InferenceSession.create(serializeModel(g).model);
    const f: Record<string, ort.Tensor> = {};
    for (const [k, rows] of Object.entries(feeds)) f[k] = new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (x) => BigInt(x)), [rows.length, rows[0].length]);
    const out = await session.run(f);
    return out[g.outputs[0].name].data as Float32Array;
  }
  const weightsLookup = (g: Graph, specs: { name: string; shape: number[] }[], w: Map<string, Float32Array>) => (n: string) =>
    g.values.has(n) ? g.value(n) : g.initializer(n, { dtype: 'float32', dims: specs.find((s) => s.name === n)!.shape, data: w.get(n)! });

  it('BERT: what sits in padded positions does not change the real tokens’ hidden states', async () => {
    const specs = bertParams(bertCfg);
    const w = initParams(specs, 3);
    const g = new Graph('bert_pad');
    const ids = g.input('input_ids', 'int64', [1, 6]);
    const mask = g.input('attention_mask', 'int64', [1, 6]);
    g.output(bertEncoder(bertCfg, { inputIds: ids, attentionMask: mask }, weightsLookup(g, specs, w)));
    const m = [[1, 1, 1, 1, 0, 0]];
    const a = await runOnce(g, { input_ids: [[5, 6, 7, 8, 0, 0]], attention_mask: m });
    const b = await runOnce(g, { input_ids: [[5, 6, 7, 8, 99, 42]], attention_mask: m });
    const H = bertCfg.hidden_size;
    for (let i = 0; i < 4 * H; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-6);
    // ...while an unmasked change does reach them.
    const c = await runOnce(g, { input_ids: [[5, 6, 7, 8, 99, 42]], attention_mask: [[1, 1, 1, 1, 1, 1]] });
    expect(Math.max(...Array.from({ length: 4 * H }, (_, i) => Math.abs(a[i] - c[i])))).toBeGreaterThan(1e-3);
  });

  it('T5: a later decoder token does not change earlier logits', async () => {
    const specs = t5Params(t5Cfg);
    const w = initParams(specs, 4);
    const g = new Graph('t5_causal');
    const inputs = { inputIds: g.input('input_ids', 'int64', [1, 5]), decoderInputIds: g.input('decoder_input_ids', 'int64', [1, 4]) };
    g.output(t5Logits(t5Cfg, inputs, weightsLookup(g, specs, w))); // (4, V)
    const a = await runOnce(g, { input_ids: [[4, 5, 6, 7, 8]], decoder_input_ids: [[0, 9, 10, 11]] });
    const b = await runOnce(g, { input_ids: [[4, 5, 6, 7, 8]], decoder_input_ids: [[0, 9, 10, 77]] });
    const V = t5Cfg.vocab_size;
    for (let i = 0; i < 3 * V; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-6);
    expect(Math.max(...Array.from({ length: V }, (_, i) => Math.abs(a[3 * V + i] - b[3 * V + i])))).toBeGreaterThan(1e-4);
  });
});
