// Mixed precision on a CPU: `npm run bench -- half [--steps N] [--probe-only]`.
//  1. Probe: which fp16/bf16 kernels onnxruntime-node's CPU EP has, op by op (one-node models with
//     every float input in the half type, Cast from float32 graph inputs). A model either loads as it is (a native half kernel),
//     loads with Casts ORT inserted around the node (its InsertCastTransformer computes the op in
//     fp32: no half kernel, the session still runs), or does not load (no kernel at all).
//  2. The GPT small step (4L×128, ctx 64, batch 12) in fp32, emulated fp16/bf16, and ORT's own fp16
//     graph on CPU: ms per step. NOT a speed figure for half precision: the emulation adds two
//     Casts per half op and the CPU computes in fp32 either way; it says what the CPU costs.
//  3. Loss curves, fp32 vs emulated fp16 / bf16, over N steps of the same batches (tiny GPT).
// Prints tables and writes bench/out/half.json.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { Graph, type DType, type Value } from '../engine/graph/ir';
import { loadModel } from '../engine/graph/onnx-load';
import { serializeModel } from '../engine/graph/onnx';
import '../engine/autodiff/rules';
import { initParams } from '../engine/models/blocks';
import { GptConfigSchema, gptParams, type GptConfig } from '../engine/models/gpt';
import { OptimConfigSchema } from '../engine/optim';
import type { MixedPrecision } from '../engine/train/precision';
import { compileLmTrainStep, runShard, zeroState } from '../engine/train/shard';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const probeOnly = args.includes('--probe-only');

type Build = (g: Graph, x: (shape: number[]) => Value) => Value[];
const unary = (op: string, attrs: Record<string, number | string> = {}): Build => (g, x) => g.op(op, [x([2, 8])], attrs);
const binary = (op: string): Build => (g, x) => g.op(op, [x([2, 8]), x([2, 8])]);
const PROBES: Record<string, Build> = {
  MatMul: (g, x) => g.op('MatMul', [x([2, 8]), x([8, 4])]),
  Add: binary('Add'),
  Sub: binary('Sub'),
  Mul: binary('Mul'),
  Div: binary('Div'),
  Sum: (g, x) => g.op('Sum', [x([2, 8]), x([2, 8]), x([2, 8])]),
  Neg: unary('Neg'),
  Gelu: unary('Gelu'),
  'Gelu(tanh)': unary('Gelu', { approximate: 'tanh' }),
  Tanh: unary('Tanh'),
  Erf: unary('Erf'),
  Relu: unary('Relu'),
  Sigmoid: unary('Sigmoid'),
  Softmax: unary('Softmax', { axis: -1 }),
  Sqrt: unary('Sqrt'),
  Reciprocal: unary('Reciprocal'),
  ReduceSum: (g, x) => g.op('ReduceSum', [x([2, 8]), g.vector([-1])], { keepdims: 1 }),
  ReduceMean: (g, x) => g.op('ReduceMean', [x([2, 8]), g.vector([-1])], { keepdims: 1 }),
  LayerNormalization: (g, x) => g.op('LayerNormalization', [x([2, 8]), x([8]), x([8])], { axis: -1, epsilon: 1e-5 }),
  Transpose: (g, x) => g.op('Transpose', [x([2, 8])], { perm: [1, 0] }),
  Reshape: (g, x) => g.op('Reshape', [x([2, 8]), g.vector([4, 4])]),
  Concat: (g, x) => g.op('Concat', [x([2, 8]), x([2, 8])], { axis: 0 }),
  Split: (g, x) => g.op('Split', [x([2, 8]), g.vector([4, 4])], { axis: 1 }, { outputs: 2 }),
  Slice: (g, x) => g.op('Slice', [x([2, 8]), g.vector([0]), g.vector([4]), g.vector([1])]),
  Gather: (g, x) => g.op('Gather', [x([8, 4]), g.vector([1, 3])], { axis: 0 }),
  Expand: (g, x) => g.op('Expand', [x([1, 8]), g.vector([2, 8])]),
  Where: (g, x) => {
    const a = x([2, 8]);
    return g.op('Where', [g.op('Greater', [a, x([2, 8])])[0], a, x([2, 8])]);
  },
  Greater: binary('Greater'),
  ScatterND: (g, x) => g.op('ScatterND', [x([8, 4]), g.const({ dtype: 'int64', dims: [2, 1], data: BigInt64Array.from([1n, 3n]) }), x([2, 4])], { reduction: 'add' }),
  MultiHeadAttention: (g, x) => g.op('MultiHeadAttention', [x([1, 4, 8]), x([1, 4, 8]), x([1, 4, 8])], { num_heads: 2, unidirectional: 1 }, { domain: 'com.microsoft' }),
};

type Verdict = 'native' | 'inserted Casts (fp32 compute)' | 'no kernel';

async function probe(op: string, build: Build, dtype: DType): Promise<{ verdict: Verdict; detail: string }> {
  const g = new Graph(`probe_${op}`);
  g.opsets.set('com.microsoft', 1);
  // float32 graph inputs and outputs around the op (onnxruntime-node cannot describe a bfloat16
  // graph input: "Unsupported data type: 16"), so only the op's own kernel decides.
  const to = dtype === 'float16' ? 10 : 16;
  let k = 0;
  const outs = build(g, (shape) => g.op('Cast', [g.input(`x${k++}`, 'float32', shape)], { to })[0]);
  outs.forEach((o, i) => g.output(o.dtype === dtype ? g.op('Cast', [o], { to: 1 })[0] : o, `y${i}`));
  const dir = join(tmpdir(), `truthgpt-half-probe-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${op}-${dtype}.onnx`);
  try {
    const s = await ort.InferenceSession.create(serializeModel(g).model, { graphOptimizationLevel: 'disabled', optimizedModelFilePath: file, executionProviders: ['cpu'] });
    await s.release();
    // The op as ORT will run it: a native half kernel reads half inputs; otherwise ORT's
    // InsertCastTransformer has rewired it to float32 inputs (and merged our Casts with its own).
    const loaded = loadModel(readFileSync(file));
    const node = loaded.nodes.find((n) => n.opType !== 'Cast' && n.domain === g.nodes.find((m) => m.opType !== 'Cast')!.domain && n.inputs.some((x) => x && ['float16', 'bfloat16', 'float32'].includes(loaded.value(x).dtype)));
    if (!node) return { verdict: 'native', detail: 'op replaced by ORT' };
    const halfIn = node.inputs.some((x) => x && loaded.value(x).dtype === dtype);
    return halfIn ? { verdict: 'native', detail: '' } : { verdict: 'inserted Casts (fp32 compute)', detail: `${node.opType} reads float32` };
  } catch (err) {
    return { verdict: 'no kernel', detail: String((err as Error).message).split('\n')[0].slice(0, 140) };
  } finally {
    rmSync(file, { force: true });
  }
}

async function timeStep(model: GptConfig, mp: MixedPrecision | undefined, steps: number): Promise<number> {
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 }, grad_clip: 1 });
  const c = await compileLmTrainStep({ model, optim, batchSize: 12, contextLength: 64, precision: mp }, { intraOpThreads: 2 });
  const ids = Uint16Array.from({ length: 50_000 }, (_, i) => (i * 7 + ((i >> 3) % 5) * 11) % model.vocab_size);
  const runner = c.runner({ step: 0, params: Object.fromEntries(initParams(gptParams(model), 1)), state: zeroState(c.step) });
  await runShard({ ids, seed: 1, shard: 0, batchSize: 12, contextLength: 64, endStep: 2, runner }); // warm-up
  const t0 = performance.now();
  await runShard({ ids, seed: 1, shard: 0, batchSize: 12, contextLength: 64, endStep: 2 + steps, runner });
  const ms = (performance.now() - t0) / steps;
  await c.session.release();
  return ms;
}

async function lossCurve(mp: MixedPrecision | undefined, steps: number): Promise<number[]> {
  const model = GptConfigSchema.parse({ vocab_size: 96, block_size: 64, n_layer: 2, n_head: 4, n_embd: 64 });
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 });
  const c = await compileLmTrainStep({ model, optim, batchSize: 8, contextLength: 64, precision: mp }, { intraOpThreads: 1 });
  // A learnable synthetic stream: a few repeating phrases with noise, so the loss falls far.
  const ids = Uint16Array.from({ length: 200_000 }, (_, i) => ((i % 37) * 5 + ((i / 37) | 0) % 3 + (((i * 2654435761) >>> 28) === 0 ? 7 : 0)) % 96);
  const runner = c.runner({ step: 0, params: Object.fromEntries(initParams(gptParams(model), 3)), state: zeroState(c.step) });
  const h = await runShard({ ids, seed: 5, shard: 0, batchSize: 8, contextLength: 64, endStep: steps, runner });
  await c.session.release();
  return h.history.map((m) => m.loss);
}

async function main() {
  const out: Record<string, unknown> = { date: new Date().toISOString(), cpu: cpus()[0].model, ort: ort.env.versions?.common ?? 'unknown', loadBefore: loadavg() };
  const table: Record<string, Record<string, string>> = {};
  for (const [op, build] of Object.entries(PROBES)) {
    table[op] = {};
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const r = await probe(op, build, dtype);
      table[op][dtype] = r.verdict + (r.verdict === 'no kernel' ? `: ${r.detail}` : '');
    }
  }
  console.log('CPU EP half kernels (onnxruntime-node, one-node models, optimizations disabled):');
  console.log('| op | float16 | bfloat16 |\n|---|---|---|');
  for (const [op, r] of Object.entries(table)) console.log(`| ${op} | ${r.float16} | ${r.bfloat16} |`);
  out.probe = table;
  if (!probeOnly) {
    const steps = opt('steps', 10);
    const small = GptConfigSchema.parse({ vocab_size: 65, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128 });
    const times: Record<string, number> = {};
    for (const [name, mp] of [
      ['fp32', undefined],
      ['fp16 emulated', { precision: 'fp16', mode: 'emulate' }],
      ['bf16 emulated', { precision: 'bf16', mode: 'emulate' }],
      ['fp16 half graph (ORT CPU, inserted Casts)', { precision: 'fp16', mode: 'half' }],
    ] as const) {
      times[name] = await timeStep(small, mp as MixedPrecision | undefined, steps);
      console.log(`small step, ${name}: ${times[name].toFixed(1)} ms (load ${loadavg()[0].toFixed(2)})`);
    }
    out.stepMs = times;
    const n = opt('curve-steps', 300);
    const curves: Record<string, number[]> = {};
    for (const [name, mp] of [
      ['fp32', undefined],
      ['fp16 emulated', { precision: 'fp16', mode: 'emulate', growthInterval: 2000 }],
      ['bf16 emulated', { precision: 'bf16', mode: 'emulate' }],
    ] as const) curves[name] = await lossCurve(mp as MixedPrecision | undefined, n);
    out.curves = curves;
    const at = [0, 49, 99, 199, n - 1].filter((i) => i < n);
    console.log(`loss curves (tiny GPT 2L×64, batch 8×64, AdamW 3e-3, same batches): steps ${at.map((i) => i + 1).join(', ')}`);
    for (const [name, c] of Object.entries(curves)) {
      const d = c.map((l, i) => Math.abs(l - curves.fp32[i]));
      console.log(`  ${name}: ${at.map((i) => c[i].toFixed(4)).join(' ')}  max |Δ vs fp32| ${Math.max(...d).toExponential(2)}, last-50 mean ${(c.slice(-50).reduce((a, b) => a + b, 0) / Math.min(50, c.length)).toFixed(4)}`);
    }
  }
  out.loadAfter = loadavg();
  console.log(`load average before ${(out.loadBefore as number[]).map((l) => l.toFixed(2)).join(' ')}, after ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  mkdirSync(join(__dirname, 'out'), { recursive: true });
  writeFileSync(join(__dirname, 'out', 'half.json'), JSON.stringify(out, null, 1));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
