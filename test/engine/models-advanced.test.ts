// The seed's advanced models (engine/models/classification-head.ts, image-prefix.ts, memory-slots.ts) train through buildTrainStep with
// falling loss, and each one's extra part does what it promises: the class head learns with the
// LM under per-loss weights, the multimodal model names the image it was shown, the memory
// slots are learned and read.

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import * as ort from 'onnxruntime-node';
import { Graph, tensor, type TensorData, type Value } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { DomainGptConfigSchema, domainGptParams, domainGptTrainLoss } from '../../engine/models/classification-head';
import { MultimodalGptConfigSchema, multimodalGptLogits, multimodalGptParams, multimodalGptTrainLoss } from '../../engine/models/image-prefix';
import { MemoryGptConfigSchema, memoryGptLogits, memoryGptParams, memoryGptTrainLoss } from '../../engine/models/memory-slots';
import { planLora } from '../../engine/lora/model';
import { mulberry32, type ParamSpec } from '../../engine/models/blocks';
import { OptimConfigSchema } from '../../engine/optim';
import { buildTrainStep, type TrainableModel } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const gpt = { vocab_size: 16, block_size: 16, n_layer: 2, n_head: 4, n_embd: 32 };
const [B, T] = [8, 12];

/** Runs `steps` AdamW steps; returns every step's scalar outputs and the trained weights. */
async function train(model: TrainableModel, next: (step: number) => Batch, steps: number) {
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
  const trainer = await Trainer.create(buildTrainStep(model, optim), { seed: 7, sessionConfig: { intraOpThreads: 1 } });
  try {
    const scalars: Record<string, number>[] = [];
    for (let s = 0; s < steps; s++) scalars.push((await trainer.runner.run(next(s))).scalars);
    return { scalars, weights: trainer.params() };
  } finally {
    await trainer.release();
  }
}

/** Rows a b a b …: the next token is the one two places back (needs attention; bigram loss ln 16). */
function periodicRows(step: number) {
  const r = mulberry32(9000 + step);
  const rows = Array.from({ length: B }, () => [Math.floor(r() * 16), Math.floor(r() * 16)]);
  const tok = (off: number) => Array.from({ length: B * T }, (_, i) => rows[Math.floor(i / T)][((i % T) + off) % 2]);
  return { rows, tokens: tensor('int64', [B, T], tok(0)), targets: tensor('int64', [B, T], tok(1)) };
}
const lmBatch = (step: number): Batch => {
  const { tokens, targets } = periodicRows(step);
  return { tokens, targets };
};

/** Runs a forward-only graph: `build` declares inputs and returns the output. */
async function forward(specs: ParamSpec[], weights: Map<string, Float32Array>, build: (g: Graph, p: (n: string) => Value) => Value, feeds: Record<string, TensorData>): Promise<Float32Array> {
  const g = new Graph('forward');
  const params = new Map(specs.map((s) => [s.name, g.input(s.name, 'float32', s.shape)]));
  g.output(build(g, (n) => params.get(n)!), 'y');
  const session = await ort.InferenceSession.create(serializeModel(g).model, { intraOpNumThreads: 1 });
  const all: Record<string, ort.Tensor> = {};
  for (const s of specs) all[s.name] = new ort.Tensor('float32', weights.get(s.name)!, s.shape);
  for (const [k, t] of Object.entries(feeds)) all[k] = new ort.Tensor(t.dtype === 'int64' ? 'int64' : 'float32', t.data as Float32Array, t.dims);
  const y = Float32Array.from((await session.run(all)).y.data as Float32Array);
  await session.release();
  return y;
}

describe('domain-specific model (LM + classification head, weighted losses)', () => {
  // Label = first token mod 3; the head reads the last position, so it must attend back to it.
  const batch = (step: number): Batch => {
    const { rows, tokens, targets } = periodicRows(step);
    return { tokens, targets, labels: tensor('int64', [B], rows.map(([a]) => a % 3)) };
  };
  const model = (weights: object) => {
    const cfg = DomainGptConfigSchema.parse({ gpt, n_classes: 3, ...weights });
    return { params: domainGptParams(cfg), loss: domainGptTrainLoss(cfg, B, T) };
  };

  it('learns both tasks jointly; the loss is lm_weight · LM + cls_weight · CE', async () => {
    const { scalars } = await train(model({ lm_weight: 1, cls_weight: 0.5 }), batch, 100);
    for (const s of scalars) expect(Math.abs(s.loss - (s.lm_loss + 0.5 * s.cls_loss))).toBeLessThan(1e-5);
    const first = scalars.slice(0, 3);
    const last = scalars.slice(-5);
    expect(mean(first.map((s) => s.cls_loss))).toBeGreaterThan(0.9 * Math.log(3));
    expect(mean(last.map((s) => s.cls_loss))).toBeLessThan(0.5 * Math.log(3));
    expect(mean(last.map((s) => s.lm_loss))).toBeLessThan(0.5 * Math.log(16));
  });

  it('with cls_weight 0 the head does not learn while the LM does', async () => {
    const { scalars } = await train(model({ cls_weight: 0 }), batch, 40);
    const last = scalars.slice(-5);
    expect(mean(last.map((s) => s.cls_loss))).toBeGreaterThan(0.9 * Math.log(3));
    expect(mean(last.map((s) => s.lm_loss))).toBeLessThan(0.6 * mean(scalars.slice(0, 3).map((s) => s.lm_loss)));
    expect(() => DomainGptConfigSchema.parse({ gpt, n_classes: 3, lm_weight: 0, cls_weight: 0 })).toThrow(/cls_weight[\s\S]*both 0/);
  });
});

describe('multimodal model (image features → projector → prefix)', () => {
  const cfg = MultimodalGptConfigSchema.parse({ gpt: { ...gpt, pos: 'rope', norm: 'rmsnorm' }, image_dim: 8, n_image_tokens: 2 });
  const [P, D, BOS] = [2, 8, 0];
  const protos = (() => {
    const r = mulberry32(1);
    return Array.from({ length: 4 }, () => Array.from({ length: P * D }, () => 2 * r() - 1));
  })();
  // Caption of an image of class c: token 4 + c repeated. Only the image tells the first one.
  const batch = (step: number, classes?: number[]): Batch => {
    const r = mulberry32(7000 + step);
    const cs = classes ?? Array.from({ length: B }, () => Math.floor(r() * 4));
    const feats = cs.flatMap((c) => protos[c].map((v) => v + 0.1 * (2 * r() - 1)));
    const tokens = cs.flatMap((c) => [BOS, ...Array<number>(T - 1).fill(4 + c)]);
    return { image_features: tensor('float32', [cs.length, P, D], feats), tokens: tensor('int64', [cs.length, T], tokens), targets: tensor('int64', [cs.length, T], cs.flatMap((c) => Array<number>(T).fill(4 + c))) };
  };

  it('trains, and then names the class of unseen images of each class from the first text position', async () => {
    const { scalars, weights } = await train({ params: multimodalGptParams(cfg), loss: multimodalGptTrainLoss(cfg, B, T) }, (s) => batch(s), 60);
    const losses = scalars.map((s) => s.loss);
    expect(mean(losses.slice(-5))).toBeLessThan(0.2 * mean(losses.slice(0, 3)));
    const fresh = batch(999, [0, 1, 2, 3]);
    const logits = await forward(
      multimodalGptParams(cfg),
      weights,
      (g, p) => multimodalGptLogits(cfg, g.input('image_features', 'float32', [4, P, D]), g.input('tokens', 'int64', [4, T]), p),
      { image_features: fresh.image_features, tokens: fresh.tokens },
    );
    const V = gpt.vocab_size;
    const predicted = [0, 1, 2, 3].map((b) => {
      const row = logits.subarray(b * T * V, b * T * V + V); // text position 0 (after BOS)
      return row.indexOf(Math.max(...row));
    });
    expect(predicted).toEqual([4, 5, 6, 7]);
  });

  it('rejects features of the wrong shape and a prefix that leaves no room for text', () => {
    const g = new Graph('bad');
    const p = () => g.input(`w${g.inputs.length}`, 'float32', [1]);
    expect(() => multimodalGptLogits(cfg, g.input('image_features', 'float32', [4, P, 5]), g.input('tokens', 'int64', [4, T]), p)).toThrow('must be float32 (4, 2, 8), got [4, 2, 5]');
    expect(() => MultimodalGptConfigSchema.parse({ gpt, image_dim: 8, n_image_tokens: 16 })).toThrow(/n_image_tokens[\s\S]*must leave room/);
  });
});

describe('memory-augmented model (learned slots, cross-attention in chosen layers)', () => {
  const cfg = MemoryGptConfigSchema.parse({ gpt, n_memory: 4, memory_layers: [1] });

  it('trains with falling loss, learns its memory slots, and its output reads them', async () => {
    const specs = memoryGptParams(cfg);
    expect(specs.map((s) => s.name)).toEqual(expect.arrayContaining(['memory.slots', 'h.1.ln_cross_attn.weight', 'h.1.crossattention.q_attn.weight', 'h.1.crossattention.c_attn.weight', 'h.1.crossattention.c_proj.weight']));
    expect(specs.some((s) => s.name.startsWith('h.0.crossattention'))).toBe(false);
    const start = await train({ params: specs, loss: memoryGptTrainLoss(cfg, B, T) }, lmBatch, 1);
    const { scalars, weights } = await train({ params: specs, loss: memoryGptTrainLoss(cfg, B, T) }, lmBatch, 60);
    const losses = scalars.map((s) => s.loss);
    expect(mean(losses.slice(-5))).toBeLessThan(0.5 * Math.log(16));
    // Same seed: `start` moved the slots one step; 60 steps move them much further.
    const drift = (w: Map<string, Float32Array>) => w.get('memory.slots')!.reduce((m, x, i) => m + Math.abs(x - start.weights.get('memory.slots')![i]), 0);
    expect(drift(weights)).toBeGreaterThan(0.1);
    const tokens = periodicRows(500).tokens;
    const run = (w: Map<string, Float32Array>) => forward(specs, w, (g, p) => memoryGptLogits(cfg, g.input('tokens', 'int64', [B, T]), p), { tokens });
    const withSlots = await run(weights);
    const zeroed = await run(new Map(weights).set('memory.slots', new Float32Array(4 * gpt.n_embd)));
    expect(Math.max(...withSlots.map((v, i) => Math.abs(v - zeroed[i])))).toBeGreaterThan(1e-3);
  });

  it('exposes its cross-attention linears to LoRA by their GPT-2 names', () => {
    const plan = planLora({ params: memoryGptParams(cfg), loss: memoryGptTrainLoss(cfg, B, T) }, { target_modules: ['q_attn', 'c_attn'], r: 2 });
    expect(plan.modules.map((m) => m.module)).toEqual(['h.0.attn.c_attn', 'h.1.attn.c_attn', 'h.1.crossattention.q_attn', 'h.1.crossattention.c_attn']);
  });

  it('names a memory layer that does not exist', () => {
    expect(() => MemoryGptConfigSchema.parse({ gpt, n_memory: 4, memory_layers: [2] })).toThrow(/memory_layers[\s\S]*layer 2 does not exist \(n_layer 2\)/);
  });
});
