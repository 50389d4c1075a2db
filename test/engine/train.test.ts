// End-to-end training: forward + autodiff + optimizer in one graph, run step after step in ORT.
// A tiny MLP and a tiny GPT must learn (loss well under its starting value) in a few seconds.

import '../../engine/runtime/host-realm';
import { Graph, tensor, type Value } from '../../engine/graph/ir';
import { add, matmul, relu } from '../../engine/graph/ops';
import { mulberry32, type ParamSpec } from '../../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainLoss } from '../../engine/models/gpt';
import { OptimConfigSchema } from '../../engine/optim';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('tiny MLP', () => {
  // 4-class problem: the label is the argmax of a fixed random linear map of the 8 inputs.
  const [D, H, K, B] = [8, 32, 4, 64];
  const params: ParamSpec[] = [
    { name: 'fc1.weight', shape: [D, H], init: { kind: 'normal', std: 0.3 } },
    { name: 'fc1.bias', shape: [H], init: { kind: 'zeros' } },
    { name: 'fc2.weight', shape: [H, K], init: { kind: 'normal', std: 0.3 } },
    { name: 'fc2.bias', shape: [K], init: { kind: 'zeros' } },
  ];
  const loss = (g: Graph, p: (n: string) => Value) => {
    const x = g.input('x', 'float32', [B, D]);
    const y = g.input('y', 'int64', [B]);
    const h = relu(add(matmul(x, p('fc1.weight')), p('fc1.bias'))); // (B, D) @ (D, H) → (B, H)
    const logits = add(matmul(h, p('fc2.weight')), p('fc2.bias')); // (B, H) @ (H, K) → (B, K)
    return g.op('SoftmaxCrossEntropyLoss', [logits, y], { reduction: 'mean' }, { outputs: 1 })[0];
  };
  function* batches(seed: number): Generator<Batch> {
    const r = mulberry32(seed);
    const proj = Array.from({ length: D * K }, () => r() * 2 - 1);
    for (;;) {
      const x = Array.from({ length: B * D }, () => r() * 2 - 1);
      const y = Array.from({ length: B }, (_, b) => {
        const scores = Array.from({ length: K }, (_, k) => x.slice(b * D, b * D + D).reduce((s, xi, i) => s + xi * proj[i * K + k], 0));
        return scores.indexOf(Math.max(...scores));
      });
      yield { x: tensor('float32', [B, D], x), y: tensor('int64', [B], y) };
    }
  }

  it('learns a 4-class problem with AdamW: loss falls below 30% of its start in 150 steps', async () => {
    const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
    const step = buildTrainStep({ params, loss }, optim);
    expect(step.state.map((s) => s.key)).toContain('fc1.weight.m');
    const trainer = await Trainer.create(step, { seed: 1, sessionConfig: { intraOpThreads: 1 } });
    const hist = await trainer.train(batches(3), 150);
    await trainer.release();
    expect(hist).toHaveLength(150);
    const first = mean(hist.slice(0, 5).map((m) => m.loss));
    const last = mean(hist.slice(-5).map((m) => m.loss));
    expect(first).toBeGreaterThan(1);
    expect(last).toBeLessThan(0.3 * first);
    for (const m of hist) expect(m.lr).toBeCloseTo(1e-2, 8); // constant schedule
    expect(hist.every((m) => m.gradNorm > 0)).toBe(true);
  });

  it('SGD with Nesterov momentum also learns it while training only the unfrozen head', async () => {
    const optim = OptimConfigSchema.parse({ optimizer: { kind: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true } });
    const step = buildTrainStep({ params, loss }, optim, { trainable: (n) => n.startsWith('fc2') });
    expect(step.frozen.map((s) => s.name)).toEqual(['fc1.weight', 'fc1.bias']);
    expect(step.graph.inputs.map((v) => v.name)).toContain('frozen:fc1.weight');
    const trainer = await Trainer.create(step, { seed: 1, sessionConfig: { intraOpThreads: 1 } });
    const before = trainer.params();
    const hist = await trainer.train(batches(3), 150);
    const after = trainer.params();
    await trainer.release();
    expect([...after.keys()]).toEqual(['fc2.weight', 'fc2.bias']);
    expect(after.get('fc2.weight')).not.toEqual(before.get('fc2.weight'));
    expect(mean(hist.slice(-5).map((m) => m.loss))).toBeLessThan(0.5 * mean(hist.slice(0, 5).map((m) => m.loss)));
  });

  it('names a parameter the model reads but the list lacks', () => {
    const optim = OptimConfigSchema.parse({ optimizer: { kind: 'sgd', lr: 0.1 } });
    expect(() => buildTrainStep({ params: params.slice(1), loss }, optim)).toThrow(/"fc1.weight".*not in its parameter list/);
  });
});

describe('tiny GPT', () => {
  // Sequences x_t = (s + k·t) mod V with random start s and stride k ∈ {1, 2, 3}: after two tokens
  // the rest is determined, so a model that attends to its context can drive the loss far down.
  const cfg = GptConfigSchema.parse({ vocab_size: 64, block_size: 16, n_layer: 2, n_head: 4, n_embd: 32 });
  const [B, T] = [16, 16];
  function* batches(seed: number): Generator<Batch> {
    const r = mulberry32(seed);
    for (;;) {
      const tokens: number[] = [];
      const targets: number[] = [];
      for (let b = 0; b < B; b++) {
        const s = Math.floor(r() * 64);
        const k = 1 + Math.floor(r() * 3);
        for (let t = 0; t < T; t++) {
          tokens.push((s + k * t) % 64);
          targets.push((s + k * (t + 1)) % 64);
        }
      }
      yield { tokens: tensor('int64', [B, T], tokens), targets: tensor('int64', [B, T], targets) };
    }
  }

  it('2 layers × 32 wide learns stride sequences: loss falls below 40% of log(V) in 200 AdamW steps', async () => {
    const optim = OptimConfigSchema.parse({
      optimizer: { kind: 'adamw', lr: 1e-2, beta2: 0.99, weight_decay: 0.1 },
      schedule: { kind: 'warmup_cosine', warmup_steps: 20, decay_steps: 200, min_lr: 1e-3 },
      grad_clip: 1,
    });
    const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, optim);
    expect(step.batchInputs).toEqual(['tokens', 'targets']);
    const trainer = await Trainer.create(step, { seed: 42, sessionConfig: { intraOpThreads: 1 } });
    const hist = await trainer.train(batches(9), 200);
    // Every step ran on the one session, in order (speed is bench/'s business, not a test's).
    expect(hist.map((m) => m.step)).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(trainer.nextStep).toBe(200);
    await trainer.release();
    const first = hist[0].loss;
    const last = mean(hist.slice(-10).map((m) => m.loss));
    expect(Math.abs(first - Math.log(64))).toBeLessThan(0.3); // GPT-2 init starts near uniform
    expect(last).toBeLessThan(0.4 * first);
    expect(hist[0].lr).toBeCloseTo(1e-2 / 21, 6);
  });
});
