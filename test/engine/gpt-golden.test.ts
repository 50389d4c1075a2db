// Whole-model check: our 2-layer GPT's loss and every parameter's gradient norm against PyTorch
// (float64 reference from the same float32 weights). Fixture and the script that made it:
// test/fixtures/gpt2layer/ (scripts/make_gpt_fixture.py).

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { gradients } from '../../engine/autodiff/gradients';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { Graph, tensor, type Value } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { mul, reduceSum, sqrt } from '../../engine/graph/ops';
import { GptConfigSchema, gptLoss, gptParams, gptTrainLoss } from '../../engine/models/gpt';
import { OptimConfigSchema } from '../../engine/optim';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer } from '../../engine/train/trainer';

const DIR = path.join(__dirname, '../fixtures/gpt2layer');

interface Golden {
  config: unknown;
  batch: number;
  seq: number;
  tokens: number[][];
  targets: number[][];
  loss: number;
  grad_norms: Record<string, number>;
  train: {
    optim: unknown;
    tokens: number[][][];
    targets: number[][][];
    losses: number[];
    grad_norms: number[];
    moved: Record<string, number>;
  };
}

describe('2-layer GPT vs PyTorch golden fixture', () => {
  const golden = JSON.parse(fs.readFileSync(path.join(DIR, 'golden.json'), 'utf8')) as Golden;
  const cfg = GptConfigSchema.parse(golden.config);
  const weights = readSafetensors(fs.readFileSync(path.join(DIR, 'weights.safetensors')), 'weights.safetensors').tensors;
  let loss = NaN;
  const norms = new Map<string, number>();

  beforeAll(async () => {
    const g = new Graph('gpt_golden');
    const specs = gptParams(cfg);
    const params = new Map<string, Value>();
    for (const s of specs) params.set(s.name, g.input(s.name, 'float32', s.shape));
    const [B, T] = [golden.batch, golden.seq];
    const tokens = g.input('tokens', 'int64', [B, T]);
    const targets = g.input('targets', 'int64', [B, T]);
    const lossV = gptLoss(cfg, tokens, targets, (n) => params.get(n)!);
    const grads = gradients(g, lossV, [...params.values()], { unused: 'error' });
    g.output(lossV, 'loss');
    for (const s of specs) {
      const gr = grads.get(s.name)!;
      const axes = s.shape.map((_, i) => i);
      g.output(sqrt(reduceSum(mul(gr, gr), axes, false)), `norm:${s.name}`);
    }
    const session = await ort.InferenceSession.create(serializeModel(g).model);
    const feeds: Record<string, ort.Tensor> = {};
    for (const s of specs) {
      const w = weights.get(s.name);
      if (!w) throw new Error(`fixture weights.safetensors has no tensor "${s.name}"`);
      expect(w.dims).toEqual(s.shape);
      feeds[s.name] = new ort.Tensor('float32', w.data as Float32Array, w.dims);
    }
    const t = tensor('int64', [B, T], golden.tokens.flat());
    const y = tensor('int64', [B, T], golden.targets.flat());
    feeds.tokens = new ort.Tensor('int64', t.data as BigInt64Array, [B, T]);
    feeds.targets = new ort.Tensor('int64', y.data as BigInt64Array, [B, T]);
    const out = await session.run(feeds);
    loss = (out.loss.data as Float32Array)[0];
    for (const s of specs) norms.set(s.name, (out[`norm:${s.name}`].data as Float32Array)[0]);
  });

  it('has the same parameter names and shapes as the PyTorch model', () => {
    expect(gptParams(cfg).map((s) => s.name).sort()).toEqual([...weights.keys()].sort());
  });

  it('matches the loss to 1e-5 relative', () => {
    expect(Math.abs(loss - golden.loss) / golden.loss).toBeLessThan(1e-5);
  });

  it('matches every parameter gradient norm to 1e-4 relative (tied wte gets both embedding and head terms)', () => {
    const bad: string[] = [];
    for (const [name, want] of Object.entries(golden.grad_norms)) {
      const got = norms.get(name);
      const rel = got === undefined ? Infinity : Math.abs(got - want) / want;
      if (!(rel < 1e-4)) bad.push(`${name}: got ${got}, want ${want} (rel ${rel.toExponential(2)})`);
    }
    expect(bad).toEqual([]);
    expect(norms.size).toBe(Object.keys(golden.grad_norms).length);
  });
});

describe('2-layer GPT training steps vs PyTorch (AdamW, warmup+cosine, clipping)', () => {
  it('matches torch per-step loss and grad norm, and how far every parameter moved, over 4 steps', async () => {
    const golden = JSON.parse(fs.readFileSync(path.join(DIR, 'golden.json'), 'utf8')) as Golden;
    const cfg = GptConfigSchema.parse(golden.config);
    const weights = readSafetensors(fs.readFileSync(path.join(DIR, 'weights.safetensors')), 'weights.safetensors').tensors;
    const init = new Map([...weights].map(([k, t]) => [k, t.data as Float32Array]));
    const [B, T] = [golden.batch, golden.seq];
    const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, OptimConfigSchema.parse(golden.train.optim));
    const trainer = await Trainer.create(step, { weights: init });
    const batches = golden.train.tokens.map((tok, i) => ({
      tokens: tensor('int64', [B, T], tok.flat()),
      targets: tensor('int64', [B, T], golden.train.targets[i].flat()),
    }));
    const hist = await trainer.train(batches, batches.length);
    const final = trainer.params();
    await trainer.release();
    hist.forEach((m, i) => {
      expect(Math.abs(m.loss - golden.train.losses[i]) / golden.train.losses[i]).toBeLessThan(1e-5);
      expect(Math.abs(m.gradNorm - golden.train.grad_norms[i]) / golden.train.grad_norms[i]).toBeLessThan(1e-4);
    });
    // Clipping was active (norms above 0.5), so a wrong clip factor would show in `moved`.
    expect(Math.min(...golden.train.grad_norms)).toBeGreaterThan(0.5);
    const bad: string[] = [];
    for (const [name, want] of Object.entries(golden.train.moved)) {
      const p0 = init.get(name)!;
      const p1 = final.get(name)!;
      let sq = 0;
      for (let i = 0; i < p0.length; i++) sq += (p1[i] - p0[i]) ** 2;
      const rel = Math.abs(Math.sqrt(sq) - want) / want;
      if (!(rel < 1e-3)) bad.push(`${name}: moved ${Math.sqrt(sq)}, torch ${want} (rel ${rel.toExponential(2)})`);
    }
    expect(bad).toEqual([]);
  });
});
