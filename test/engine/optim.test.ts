// Optimizers, schedules and clipping as graph ops, checked against closed-form updates written
// out in plain TS (torch.optim arithmetic) over several steps on small tensors, in every update
// layout (per-tensor; flat; flat with one tensor over the size limit on its own chain).

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import * as ort from 'onnxruntime-node';
import { Graph } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { mulberry32 } from '../../engine/models/blocks';
import { appendOptimizer, decays, flatStateKey, OptimConfigSchema, type OptimConfigInput, type OptimLayout } from '../../engine/optim';

interface P {
  name: string;
  shape: number[];
}

/** Layouts under test; `hybrid` is flat with `w` (12 elements) above the flat size limit. */
type Layout = OptimLayout | 'hybrid';
const LAYOUTS: Layout[] = ['per-tensor', 'flat', 'hybrid'];

/**
 * Runs `steps` optimizer steps in ORT, feeding the given gradients, and returns every output per
 * step. Flat state is fed as the `@flat.<slot>` buffers and each flat output is cut back into
 * per-tensor `state_out:<key>` entries, so checks read the same in every layout.
 */
async function runOptimizer(cfgIn: OptimConfigInput, params: P[], init: Map<string, Float32Array>, grads: Map<string, Float32Array>[], layout: Layout = 'per-tensor') {
  const cfg = OptimConfigSchema.parse(cfgIn);
  const g = new Graph('optim_test');
  const step = g.input('step', 'float32', []);
  const entries = params.map((p) => ({
    name: p.name,
    param: g.input(`param:${p.name}`, 'float32', p.shape),
    grad: g.input(`grad:${p.name}`, 'float32', p.shape),
  }));
  const opts = layout === 'hybrid' ? { layout: 'flat' as const, flatMaxNumel: 8 } : { layout };
  const { state, flat = [] } = appendOptimizer(g, cfg, entries, step, opts);
  const session = await ort.InferenceSession.create(serializeModel(g).model);
  const feeds: Record<string, ort.Tensor> = {};
  for (const p of params) feeds[`param:${p.name}`] = new ort.Tensor('float32', init.get(p.name)!.slice(), p.shape);
  const inFlat = new Set(flat.map((m) => m.name));
  const total = flat.reduce((n, m) => n + m.size, 0);
  const slotOf = (key: string) => key.slice(key.lastIndexOf('.') + 1);
  const flatNames = [...new Set(state.filter((s) => inFlat.has(s.key.slice(0, s.key.lastIndexOf('.')))).map((s) => flatStateKey(slotOf(s.key))))];
  const stateInputs = [...state.filter((s) => !inFlat.has(s.key.slice(0, s.key.lastIndexOf('.')))), ...flatNames.map((key) => ({ key, shape: [total] }))];
  for (const s of stateInputs) feeds[`state:${s.key}`] = new ort.Tensor('float32', new Float32Array(s.shape.reduce((a, b) => a * b, 1)), s.shape);
  const history: Record<string, Float32Array>[] = [];
  for (let t = 0; t < grads.length; t++) {
    feeds.step = new ort.Tensor('float32', new Float32Array([t]), []);
    for (const p of params) feeds[`grad:${p.name}`] = new ort.Tensor('float32', grads[t].get(p.name)!, p.shape);
    const out = await session.run(feeds);
    const rec: Record<string, Float32Array> = {};
    for (const [k, v] of Object.entries(out)) rec[k] = v.data as Float32Array;
    for (const k of flatNames) for (const m of flat) rec[`state_out:${m.name}.${slotOf(k)}`] = rec[`state_out:${k}`].slice(m.offset, m.offset + m.size);
    history.push(rec);
    for (const p of params) feeds[`param:${p.name}`] = out[`param_out:${p.name}`];
    for (const s of stateInputs) feeds[`state:${s.key}`] = out[`state_out:${s.key}`];
  }
  return { history, state, stateInputs: stateInputs.map((s) => s.key) };
}

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);
}

const size = (p: P) => p.shape.reduce((a, b) => a * b, 1);
// Two vectors, so the grouped (concatenated) update path for 1-D parameters is exercised too.
const PARAMS: P[] = [
  { name: 'w', shape: [3, 4] },
  { name: 'b', shape: [4] },
  { name: 'c', shape: [5] },
];
const STEPS = 6;

function fixtures(gradScale = 1) {
  const init = new Map(PARAMS.map((p, i) => [p.name, randn(size(p), 100 + i)]));
  const grads = Array.from({ length: STEPS }, (_, t) => new Map(PARAMS.map((p, i) => [p.name, randn(size(p), 1000 * t + i, gradScale)])));
  return { init, grads };
}

function expectClose(actual: Float32Array, expected: number[] | Float64Array, rtol: number, atol: number, what: string) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    const tol = atol + rtol * Math.abs(expected[i]);
    if (!(Math.abs(actual[i] - expected[i]) <= tol)) throw new Error(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (tol ${tol})`);
  }
}

describe.each(LAYOUTS)('AdamW, %s layout', (layout) => {
  it('matches torch.optim.AdamW arithmetic over 6 steps, with bias correction and decay only on 2-D weights', async () => {
    const { init, grads } = fixtures();
    const [lr, b1, b2, eps, wd] = [0.05, 0.9, 0.95, 1e-8, 0.1];
    const { history } = await runOptimizer(
      { optimizer: { kind: 'adamw', lr, beta1: b1, beta2: b2, eps, weight_decay: wd } },
      PARAMS,
      init,
      grads,
      layout,
    );
    for (const p of PARAMS) {
      const decayed = p.shape.length >= 2;
      const x = Float64Array.from(init.get(p.name)!);
      const m = new Float64Array(x.length);
      const v = new Float64Array(x.length);
      for (let t = 1; t <= STEPS; t++) {
        const gr = grads[t - 1].get(p.name)!;
        for (let i = 0; i < x.length; i++) {
          if (decayed) x[i] *= 1 - lr * wd;
          m[i] = b1 * m[i] + (1 - b1) * gr[i];
          v[i] = b2 * v[i] + (1 - b2) * gr[i] * gr[i];
          const mHat = m[i] / (1 - b1 ** t);
          const vHat = v[i] / (1 - b2 ** t);
          x[i] -= (lr * mHat) / (Math.sqrt(vHat) + eps);
        }
        const out = history[t - 1];
        expectClose(out[`param_out:${p.name}`], x, 1e-5, 1e-6, `${p.name} step ${t}`);
        expectClose(out[`state_out:${p.name}.m`], m, 1e-5, 1e-7, `${p.name}.m step ${t}`);
        expectClose(out[`state_out:${p.name}.v`], v, 1e-5, 1e-7, `${p.name}.v step ${t}`);
      }
    }
    // The first step of Adam moves every coordinate by ≈ lr (m̂/√v̂ = ±1): bias correction is on.
    const w0 = init.get('b')!;
    const w1 = history[0]['param_out:b'];
    for (let i = 0; i < w0.length; i++) expect(Math.abs(w1[i] - w0[i])).toBeCloseTo(lr, 4);
  });
});

describe.each(LAYOUTS)('SGD, %s layout', (layout) => {
  for (const nesterov of [false, true]) {
    it(`matches torch.optim.SGD with momentum 0.9${nesterov ? ' and Nesterov' : ''} and L2 weight decay over 6 steps`, async () => {
      const { init, grads } = fixtures();
      const [lr, mu, wd] = [0.1, 0.9, 0.01];
      const { history, state, stateInputs } = await runOptimizer(
        { optimizer: { kind: 'sgd', lr, momentum: mu, nesterov, weight_decay: wd } },
        PARAMS,
        init,
        grads,
        layout,
      );
      expect(state.map((s) => s.key)).toEqual(['w.momentum', 'b.momentum', 'c.momentum']);
      expect(stateInputs).toEqual({ 'per-tensor': state.map((s) => s.key), flat: ['@flat.momentum'], hybrid: ['w.momentum', '@flat.momentum'] }[layout]);
      for (const p of PARAMS) {
        const decayed = p.shape.length >= 2;
        const x = Float64Array.from(init.get(p.name)!);
        const buf = new Float64Array(x.length);
        for (let t = 0; t < STEPS; t++) {
          const gr = grads[t].get(p.name)!;
          for (let i = 0; i < x.length; i++) {
            let d = gr[i] + (decayed ? wd * x[i] : 0);
            buf[i] = t === 0 ? d : mu * buf[i] + d; // torch starts the buffer at the first gradient
            d = nesterov ? d + mu * buf[i] : buf[i];
            x[i] -= lr * d;
          }
          expectClose(history[t][`param_out:${p.name}`], x, 1e-5, 1e-6, `${p.name} step ${t}`);
          expectClose(history[t][`state_out:${p.name}.momentum`], buf, 1e-5, 1e-6, `${p.name}.momentum step ${t}`);
        }
      }
    });
  }

  it('without momentum keeps no state and takes plain steps p − lr·g', async () => {
    const { init, grads } = fixtures();
    const { history, state } = await runOptimizer({ optimizer: { kind: 'sgd', lr: 0.5 } }, PARAMS, init, grads.slice(0, 1), layout);
    expect(state).toEqual([]);
    const g0 = grads[0].get('w')!;
    expectClose(history[0]['param_out:w'], Array.from(init.get('w')!, (x, i) => x - 0.5 * g0[i]), 1e-6, 1e-7, 'w');
  });
});

describe('learning-rate schedules', () => {
  // nanoGPT train.py get_lr, written with branches (the graph uses a branch-free form).
  function getLr(it: number, lr: number, warmup: number, decay: number, minLr: number): number {
    if (it < warmup) return (lr * (it + 1)) / (warmup + 1);
    if (it > decay) return minLr;
    const ratio = (it - warmup) / (decay - warmup);
    return minLr + 0.5 * (1 + Math.cos(Math.PI * ratio)) * (lr - minLr);
  }

  it('warmup + cosine follows nanoGPT get_lr on every step, then holds min_lr', async () => {
    const steps = 16;
    const grads = Array.from({ length: steps }, () => new Map([['b', new Float32Array(4)]]));
    const { history } = await runOptimizer(
      { optimizer: { kind: 'sgd', lr: 6e-4 }, schedule: { kind: 'warmup_cosine', warmup_steps: 3, decay_steps: 12, min_lr: 6e-5 } },
      [{ name: 'b', shape: [4] }],
      new Map([['b', new Float32Array(4)]]),
      grads,
    );
    const lrs = history.map((h) => h.lr[0]);
    expectClose(Float32Array.from(lrs), Array.from({ length: steps }, (_, t) => getLr(t, 6e-4, 3, 12, 6e-5)), 1e-5, 1e-10, 'lr');
    expect(lrs[0]).toBeCloseTo(1.5e-4, 9); // 6e-4 · 1/4
    expect(Math.max(...lrs)).toBeCloseTo(6e-4, 9);
    expect(lrs[15]).toBeCloseTo(6e-5, 9);
  });

  it('the scheduled LR is the one the update uses', async () => {
    const init = new Map([['b', Float32Array.from([1, 2, 3, 4])]]);
    const grads = Array.from({ length: 3 }, () => new Map([['b', Float32Array.from([1, 1, 1, 1])]]));
    const { history } = await runOptimizer(
      { optimizer: { kind: 'sgd', lr: 1 }, schedule: { kind: 'warmup_cosine', warmup_steps: 4, decay_steps: 8, min_lr: 0 } },
      [{ name: 'b', shape: [4] }],
      init,
      grads,
    );
    // Warmup LRs are 1/5, 2/5, 3/5: after three unit-gradient steps each entry fell by 6/5.
    expectClose(history[2]['param_out:b'], [1 - 1.2, 2 - 1.2, 3 - 1.2, 4 - 1.2], 1e-6, 1e-6, 'b');
  });

  it('rejects a decay that ends before warmup does, naming the field', () => {
    const r = OptimConfigSchema.safeParse({
      optimizer: { kind: 'adamw', lr: 1e-3 },
      schedule: { kind: 'warmup_cosine', warmup_steps: 10, decay_steps: 5, min_lr: 0 },
    });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error!.issues[0].path)).toContain('decay_steps');
  });
});

describe.each(LAYOUTS)('global-norm clipping, %s layout', (layout) => {
  it('reports the pre-clip norm and scales the update by max_norm / norm when above it', async () => {
    const { init, grads } = fixtures(10);
    const maxNorm = 0.5;
    const { history } = await runOptimizer({ optimizer: { kind: 'sgd', lr: 1 }, grad_clip: maxNorm }, PARAMS, init, grads.slice(0, 1), layout);
    const all = PARAMS.flatMap((p) => Array.from(grads[0].get(p.name)!));
    const norm = Math.sqrt(all.reduce((s, x) => s + x * x, 0));
    expect(norm).toBeGreaterThan(5);
    expect(history[0].grad_norm[0]).toBeCloseTo(norm, 4);
    const scale = maxNorm / (norm + 1e-6);
    let moved = 0;
    for (const p of PARAMS) {
      const x0 = init.get(p.name)!;
      const gr = grads[0].get(p.name)!;
      const x1 = history[0][`param_out:${p.name}`];
      expectClose(x1, Array.from(x0, (x, i) => x - scale * gr[i]), 1e-5, 1e-6, p.name);
      for (let i = 0; i < x0.length; i++) moved += (x1[i] - x0[i]) ** 2;
    }
    expect(Math.sqrt(moved)).toBeCloseTo(maxNorm, 4); // lr 1: the step is exactly the clipped gradient
  });

  it('leaves gradients under max_norm untouched, also inside AdamW', async () => {
    const { init, grads } = fixtures(0.01);
    const base = { optimizer: { kind: 'adamw' as const, lr: 0.01, weight_decay: 0 } };
    const clipped = await runOptimizer({ ...base, grad_clip: 100 }, PARAMS, init, grads.slice(0, 3), layout);
    const plain = await runOptimizer(base, PARAMS, init, grads.slice(0, 3), layout);
    expectClose(clipped.history[2]['param_out:w'], Array.from(plain.history[2]['param_out:w']), 1e-6, 1e-7, 'w');
  });
});

describe('weight-decay rule', () => {
  it('decays 2-D weights only by default, and honours exclude patterns', () => {
    const rule = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1 } }).decay;
    expect(decays(rule, 'h.0.mlp.c_fc.weight', [32, 128])).toBe(true);
    expect(decays(rule, 'h.0.mlp.c_fc.bias', [128])).toBe(false);
    expect(decays(rule, 'ln_f.weight', [32])).toBe(false);
    const noEmb = { ...rule, exclude: ['^(wte|wpe)$'] };
    expect(decays(noEmb, 'wte', [64, 32])).toBe(false);
    expect(decays(noEmb, 'h.0.attn.c_attn.weight', [32, 96])).toBe(true);
  });
});
