// Whole-model check: our 2-layer GPT's loss and every element of every parameter's gradient
// against PyTorch (float64 reference from the same float32 weights, grads.safetensors). Fixture
// and the script that made it: test/fixtures/gpt2layer/ (scripts/make_gpt_fixture.py).

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { gradients } from '../../engine/autodiff/gradients';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { Graph, tensor, type Value } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
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
  const ref = readSafetensors(fs.readFileSync(path.join(DIR, 'grads.safetensors')), 'grads.safetensors').tensors;
  let loss = NaN;
  const grads = new Map<string, Float32Array>();

  beforeAll(async () => {
    const g = new Graph('gpt_golden');
    const specs = gptParams(cfg);
    const params = new Map<string, Value>();
    for (const s of specs) params.set(s.name, g.input(s.name, 'float32', s.shape));
    const [B, T] = [golden.batch, golden.seq];
    const tokens = g.input('tokens', 'int64', [B, T]);
    const targets = g.input('targets', 'int64', [B, T]);
    const lossV = gptLoss(cfg, tokens, targets, (n) => params.get(n)!);
    const gv = gradients(g, lossV, [...params.values()], { unused: 'error' });
    g.output(lossV, 'loss');
    for (const s of specs) g.output(gv.get(s.name)!, `grad:${s.name}`);
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
    for (const s of specs) grads.set(s.name, out[`grad:${s.name}`].data as Float32Array);
  });

  it('has the same parameter names and shapes as the PyTorch model', () => {
    expect(gptParams(cfg).map((s) => s.name).sort()).toEqual([...weights.keys()].sort());
  });

  it('matches the float64 loss to 8e-7 relative', () => {
    expect(Math.abs(loss - golden.loss) / golden.loss).toBeLessThan(8e-7); // observed 8.0e-8 (AMD EPYC, AVX2)
  });

  it('matches every element of every parameter gradient (tied wte gets both embedding and head terms)', () => {
    // Per tensor: max |ours − torch| / max |torch|, so a permuted or mis-scaled gradient fails.
    const bad: string[] = [];
    for (const [name, t] of ref) {
      const want = t.data as Float32Array;
      const got = grads.get(name);
      if (!got || got.length !== want.length) {
        bad.push(`${name}: ${got ? got.length : 'no'} elements, torch has ${want.length}`);
        continue;
      }
      let scale = 0;
      for (const w of want) scale = Math.max(scale, Math.abs(w));
      let err = 0;
      let at = 0;
      for (let i = 0; i < want.length; i++) {
        const d = Math.abs(got[i] - want[i]);
        if (!(d <= err)) [err, at] = [d, i];
      }
      const rel = err / scale;
      // observed worst 8.3e-7 (h.1.ln_1.bias; AMD EPYC, AVX2)
      if (!(rel < 8e-6)) bad.push(`${name}[${at}]: ours ${got[at]}, torch ${want[at]} (${rel.toExponential(2)} of max |grad|)`);
    }
    expect(bad).toEqual([]);
    expect(grads.size).toBe(ref.size);
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
      expect(Math.abs(m.loss - golden.train.losses[i]) / golden.train.losses[i]).toBeLessThan(5e-7); // observed 5.6e-8 (AMD EPYC, AVX2)
      expect(Math.abs(m.gradNorm - golden.train.grad_norms[i]) / golden.train.grad_norms[i]).toBeLessThan(3e-6); // observed 3.2e-7
    });
    // Clipping was active (norms above 0.5), so a wrong clip factor would show in `moved`. Moved
    // norms, not elements: the key bias has an exactly-zero gradient (softmax ignores a constant
    // per query; torch's float64 gradient there is ~3e-18), so Adam turns our float32 rounding
    // noise there into steps torch does not take; that is what makes c_attn.bias the worst below.
    expect(Math.min(...golden.train.grad_norms)).toBeGreaterThan(0.5);
    const bad: string[] = [];
    // observed worst 1.25e-5 (h.1.attn.c_attn.bias; AMD EPYC, AVX2), every other tensor ≤ 8e-7
    for (const [name, want] of Object.entries(golden.train.moved)) {
      const p0 = init.get(name)!;
      const p1 = final.get(name)!;
      let sq = 0;
      for (let i = 0; i < p0.length; i++) sq += (p1[i] - p0[i]) ** 2;
      const rel = Math.abs(Math.sqrt(sq) - want) / want;
      if (!(rel < 1e-4)) bad.push(`${name}: moved ${Math.sqrt(sq)}, torch ${want} (rel ${rel.toExponential(2)})`);
    }
    expect(bad).toEqual([]);
  });
});
