// `npm run bench -- optim [--size small|medium]`: the optimizer phase alone. The graph is only
// appendOptimizer (AdamW + clipping + warmup-cosine, as in `bench step`) over the GPT's parameter
// shapes, with fixed random gradients fed as inputs, so its time is the update's wall time,
// kernel launches included, without the forward and backward around it. Params and state
// ping-pong between two pre-allocated buffer sets, as the StepRunner does. Both layouts run in
// one process, in alternating blocks, so load hits them alike; the ratio column pairs the
// blocks' medians.
// `--params lora` updates the rank-8 all-linear LoRA adapters of that GPT instead (many small
// 2-D tensors: where the per-tensor layout's kernel count hurts most).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import '../engine/autodiff/rules';
import { Graph } from '../engine/graph/ir';
import { serializeModel } from '../engine/graph/onnx';
import { initParams, mulberry32 } from '../engine/models/blocks';
import { planLora } from '../engine/lora';
import type { ParamSpec } from '../engine/models/blocks';
import { gptParams, gptTrainLoss } from '../engine/models/gpt';
import { appendOptimizer, OptimConfigSchema } from '../engine/optim';
import type { LayoutVariant } from './layouts';
import { sessionOptions } from './ort';
import { BENCH_OPTIM, pairedRatio, SIZES } from './step';

export interface OptimBenchArgs {
  size: string;
  threads: number;
  reps: number;
  layouts: LayoutVariant[];
  /** `full`: every GPT weight; `lora`: rank-8 adapters on every linear layer. */
  params: 'full' | 'lora';
}

function paramSpecs(size: string, which: 'full' | 'lora'): ParamSpec[] {
  const cfg = SIZES[size].model;
  if (which === 'full') return gptParams(cfg);
  const base = { params: gptParams(cfg), loss: gptTrainLoss(cfg, 1, cfg.block_size) };
  return planLora(base, { family: 'gpt', r: 8, lora_alpha: 16, target_modules: 'all-linear' }).adapterParams;
}

interface Contender {
  layout: string;
  session: ort.InferenceSession;
  nodes: number;
  feeds: [Record<string, ort.Tensor>, Record<string, ort.Tensor>];
  fetches: [Record<string, ort.Tensor>, Record<string, ort.Tensor>];
  times: number[];
}

async function contender(variant: LayoutVariant, specs: ParamSpec[], threads: number): Promise<Contender> {
  const g = new Graph('optim');
  const step = g.input('step', 'float32', []);
  const entries = specs.map((s) => ({ name: s.name, param: g.input(`param:${s.name}`, 'float32', s.shape), grad: g.input(`grad:${s.name}`, 'float32', s.shape) }));
  appendOptimizer(g, OptimConfigSchema.parse(BENCH_OPTIM), entries, step, variant.opts);
  const session = await ort.InferenceSession.create(serializeModel(g).model, sessionOptions(threads));
  const weights = initParams(specs, 0);
  const r = mulberry32(1);
  const feeds: Contender['feeds'] = [{}, {}];
  const fetches: Contender['fetches'] = [{}, {}];
  const dims = new Map(session.inputMetadata.map((m) => [m.name, m.isTensor ? (m.shape as number[]) : []]));
  for (const name of session.inputNames) {
    const d = dims.get(name)!;
    const n = d.reduce((a, b) => a * b, 1);
    const fill = (x: Float32Array) => (name.startsWith('param:') ? x.set(weights.get(name.slice(6))!) : name.startsWith('grad:') ? x.forEach((_, i) => (x[i] = (r() - 0.5) * 0.01)) : undefined);
    const bufs = [new Float32Array(n), new Float32Array(n)];
    bufs.forEach(fill);
    const out = name.startsWith('param:') ? `param_out:${name.slice(6)}` : name.startsWith('state:') ? `state_out:${name.slice(6)}` : null;
    for (const p of [0, 1]) {
      feeds[p][name] = name === 'step' ? new ort.Tensor('float32', Float32Array.of(20), []) : new ort.Tensor('float32', bufs[out ? p : 0], d);
      if (out) fetches[p][out] = new ort.Tensor('float32', bufs[1 - p], d);
    }
  }
  return { layout: variant.name, session, nodes: g.nodes.length, feeds, fetches, times: [] };
}

export async function benchOptim(args: OptimBenchArgs): Promise<void> {
  if (!SIZES[args.size]) throw new Error(`bench optim: unknown --size ${args.size} (have ${Object.keys(SIZES).join(', ')})`);
  const specs = paramSpecs(args.size, args.params);
  const cs: Contender[] = [];
  for (const layout of args.layouts) cs.push(await contender(layout, specs, args.threads));
  // Blocks of BLOCK runs per layout, alternating which layout goes first; the first run of each
  // block is untimed, because the first run after switching sessions pays for cold caches and
  // thread pools (tens of percent here), which one training session alone never does.
  const BLOCK = 10;
  const blocks = Math.max(1, Math.ceil(args.reps / BLOCK));
  const blockMs = cs.map(() => [] as number[]);
  for (let b = 0; b < blocks; b++) {
    for (const k of b % 2 ? [...cs.keys()].reverse() : [...cs.keys()]) {
      const c = cs[k];
      const times: number[] = [];
      for (let i = 0; i <= BLOCK; i++) {
        const t0 = process.hrtime.bigint();
        await c.session.run(c.feeds[i % 2], c.fetches[i % 2]);
        if (i > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      c.times.push(...times);
      blockMs[k].push(times.sort((x, y) => x - y)[times.length >> 1]);
    }
  }
  for (const c of cs) await c.session.release();
  const params = specs.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
  const q = (xs: number[], f: number) => [...xs].sort((a, b) => a - b)[Math.floor(f * (xs.length - 1))];
  console.log(`\noptimizer phase alone: ${args.size}${args.params === 'lora' ? ' LoRA adapters' : ''} (${specs.length} tensors, ${(params / 1e6).toFixed(3)} M params), ${args.threads} threads, ${blocks * BLOCK} runs in blocks of ${BLOCK}, load avg ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`${'layout'.padEnd(16)} ${'nodes'.padStart(6)} ${'min ms'.padStart(8)} ${'p25 ms'.padStart(8)} ${'median ms'.padStart(10)}   block-paired ratio vs ${cs[0].layout}: median (quartiles)`);
  for (const c of cs) {
    const r = pairedRatio(blockMs[cs.indexOf(c)], blockMs[0]);
    const ratio = c === cs[0] ? '' : `   ${r.median.toFixed(3)} (${r.p25.toFixed(3)}–${r.p75.toFixed(3)})`;
    console.log(`${c.layout.padEnd(16)} ${String(c.nodes).padStart(6)} ${q(c.times, 0).toFixed(2).padStart(8)} ${q(c.times, 0.25).toFixed(2).padStart(8)} ${q(c.times, 0.5).toFixed(2).padStart(10)}${ratio}`);
  }
  const outDir = path.join(__dirname, 'out');
  fs.mkdirSync(outDir, { recursive: true });
  const outFile = path.join(outDir, `optim-${args.size}-${args.params}-${Date.now()}.json`);
  fs.writeFileSync(outFile, JSON.stringify({ date: new Date().toISOString(), loadavg: os.loadavg(), ...args, params, layouts: cs.map((c) => ({ layout: c.layout, nodes: c.nodes, timesMs: c.times })) }, null, 1));
  console.log(`wrote ${path.relative(process.cwd(), outFile)}`);
}
