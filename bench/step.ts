// `npm run bench -- step [--size small|medium]`: tokens/s and GFLOP/s of our one-session-per-step
// GPT training graph (forward + backward + AdamW + clipping in one ORT run), the machine's ORT
// MatMul peak on the same threads, and PyTorch eager on the same model, batch and threads.
// Both optimizer layouts (per-tensor, flat: engine/optim/flat.ts) run side by side in one process,
// in alternating blocks per round on the same batches, so machine load hits both alike; so do the
// attention implementations of `--attention explicit,fused` (GPT `attention`), whose peak RSS is
// then measured too, each in a process of its own (`--rss-child`), which reports its VmHWM.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { tensor } from '../engine/graph/ir';
import { serializeModel } from '../engine/graph/onnx';
import { countParams, initParams, mulberry32 } from '../engine/models/blocks';
import { flashAttention } from '../engine/autodiff/rules/attention';
import { Graph } from '../engine/graph/ir';
import { causalMask } from '../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainFlopsPerToken, gptTrainLoss, type GptConfig } from '../engine/models/gpt';
import { DEFAULT_LAYOUT, OptimConfigSchema, type OptimConfigInput } from '../engine/optim';
import { buildTrainStep, type TrainStep } from '../engine/train/step';
import { Trainer, type Batch } from '../engine/train/trainer';
import { parseLayouts, type LayoutVariant } from './layouts';
import { measureMatmulPeak, type PeakResult } from './matmul_peak';
import { sessionOptions } from './ort';
import { summarizeProfile } from './profile';

interface Size {
  model: GptConfig;
  batch: number;
  steps: number;
  warmup: number;
}

// small: nanoGPT's CPU config (README "I only have a macbook"); medium: shakespeare_char's model
// (6L × 384, context 256) at a batch that keeps a step a few seconds on two cores.
export const SIZES: Record<string, Size> = {
  small: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128 }), batch: 12, steps: 20, warmup: 3 },
  medium: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 }), batch: 8, steps: 6, warmup: 2 },
  // Context 1024 with gpt2-small's 12 heads on medium's width: the (B, nh, T, T) probabilities
  // (96 MiB a layer) outweigh every other activation.
  ctx1024: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 1024, n_layer: 6, n_head: 12, n_embd: 384 }), batch: 2, steps: 3, warmup: 1 },
};

export type AttentionImpl = 'explicit' | 'fused';

const WARMUP_STEPS = 10;

// nanoGPT shakespeare_char's optimizer; the warmup matters: without it this model spikes to
// loss 10 around step 7 (PyTorch does the same from the same weights and batches).
export const BENCH_OPTIM: OptimConfigInput = {
  optimizer: { kind: 'adamw', lr: 1e-3, beta2: 0.99, weight_decay: 0.1 },
  schedule: { kind: 'warmup_cosine', warmup_steps: WARMUP_STEPS, decay_steps: 5000, min_lr: 1e-4 },
  grad_clip: 1,
};

/** Stable byte text shipped with the toolchain, so both engines see the same data. */
const DATA_FILE = require.resolve('typescript/lib/lib.es5.d.ts');

export interface StepBenchArgs {
  size: string;
  threads: number;
  steps?: number;
  batch?: number;
  torch: boolean;
  profile: boolean;
  /** Rounds of (ours, MatMul peak, PyTorch ×2); the best of each is reported. */
  repeat: number;
  /** Optimizer layouts to time side by side (default: per-tensor and flat). */
  layouts?: LayoutVariant[];
  /** Attention implementations to time side by side (default: explicit); with more than one, each one's peak RSS too. */
  attentions?: AttentionImpl[];
  /** Query rows per block of fused attention's backward (default flashAttention.queryBlock). */
  queryBlock?: number;
  /** Fused attention timed at each of these query blocks side by side (default: queryBlock alone). */
  queryBlocks?: number[];
}

interface Contender {
  layout: string;
  step: TrainStep;
  trainer: Trainer;
  profileDir: string;
  buildS: number;
  losses: number[];
  times: number[];
  /** Median step time of each round. */
  roundS: number[];
}

export async function benchStep(args: StepBenchArgs): Promise<void> {
  const size = SIZES[args.size];
  if (!size) throw new Error(`bench step: unknown --size ${args.size} (have ${Object.keys(SIZES).join(', ')})`);
  const cfg = size.model;
  const B = args.batch ?? size.batch;
  const T = cfg.block_size;
  const steps = args.steps ?? size.steps;
  const optim = OptimConfigSchema.parse(BENCH_OPTIM);

  const specs = gptParams(cfg);
  const weights = initParams(specs, 0);
  const contenders: Contender[] = [];
  const attentions = args.attentions ?? ['explicit'];
  if (args.queryBlock) flashAttention.queryBlock = args.queryBlock;
  const blocks = args.queryBlocks ?? [flashAttention.queryBlock];
  const variants = attentions.flatMap((attention) =>
    (attention === 'fused' ? blocks : [0]).flatMap((queryBlock) => (args.layouts ?? parseLayouts('per-tensor,flat')).map((l) => ({ ...l, attention, queryBlock }))),
  );
  for (const { name, opts, attention, queryBlock } of variants) {
    const layout = variants.length > (args.layouts?.length ?? 2) ? `${name}, ${attention} attention${blocks.length > 1 && queryBlock ? ` q${queryBlock}` : ''}` : name;
    if (queryBlock) flashAttention.queryBlock = queryBlock; // read when the backward is built, just below
    const tBuild = Date.now();
    const step = buildTrainStep({ params: specs, loss: gptTrainLoss({ ...cfg, attention }, B, T) }, optim, { optimizer: opts });
    const buildS = (Date.now() - tBuild) / 1000;
    const profileDir = args.profile ? fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-prof-')) : '';
    const session = await ort.InferenceSession.create(
      serializeModel(step.graph).model,
      sessionOptions(args.threads, args.profile ? { enableProfiling: true, profileFilePrefix: path.join(profileDir, 'step') } : {}),
    );
    const trainer = await Trainer.create(step, { weights, session });
    contenders.push({ layout, step, trainer, profileDir, buildS, losses: [], times: [], roundS: [] });
  }
  const data = fs.readFileSync(DATA_FILE);
  const batches = sampleBatches(data, B, T, 1);

  for (let i = 0; i < size.warmup; i++) {
    const batch = batches.next().value;
    for (const c of contenders) c.losses.push((await c.trainer.run(batch)).loss);
  }
  // On a shared machine load comes in bursts: each round times every contender back to back,
  // and the table reports each one's best round (all rounds are in the JSON). Within a round each
  // layout runs its steps as one block, on the same batches, after one untimed step: the first
  // step after switching sessions pays ~30 ms on small (measured with step-by-step alternation:
  // caches and thread pools go cold), which one session alone never pays. Block order alternates.
  const rounds: { oursS: Record<string, number>; peak: PeakResult; torch: TorchResult; torchSdpa: TorchResult; loadavg: number[] }[] = [];
  for (let r = 0; r < args.repeat; r++) {
    const roundBatches = Array.from({ length: steps + 1 }, () => batches.next().value); // sampled outside the timed region
    const order = r % 2 ? [...contenders].reverse() : contenders;
    for (const c of order) {
      const blockTimes: number[] = [];
      for (const [i, batch] of roundBatches.entries()) {
        const t0 = process.hrtime.bigint();
        const m = await c.trainer.run(batch);
        if (i > 0) blockTimes.push(Number(process.hrtime.bigint() - t0) / 1e9);
        c.losses.push(m.loss);
      }
      c.times.push(...blockTimes);
      c.roundS.push(median(blockTimes));
    }
    // Both PyTorch attention paths: the explicit (T, T) one our graph also uses, and fused SDPA
    // (what nanoGPT picks on torch ≥ 2). The speed-up is reported against the faster of the two.
    const skipped = { skipped: 'disabled with --no-torch' };
    rounds.push({
      oursS: Object.fromEntries(contenders.map((c) => [c.layout, c.roundS[r]])),
      peak: await measureMatmulPeak(args.threads),
      torch: args.torch ? runTorch(cfg, B, args.threads, steps, size.warmup, false) : skipped,
      torchSdpa: args.torch ? runTorch(cfg, B, args.threads, steps, size.warmup, true) : skipped,
      loadavg: os.loadavg(),
    });
  }
  const profiles: Record<string, ReturnType<typeof summarizeProfile>> = {};
  for (const c of contenders) {
    await c.trainer.release(); // flushes the profile file
    const file = args.profile ? fs.readdirSync(c.profileDir).find((f) => f.endsWith('.json')) : undefined;
    if (!file) continue;
    const { step } = c;
    const phase = new Map<string, string>();
    step.graph.nodes.forEach((n, i) => phase.set(n.name, i < step.phases.forward ? 'forward' : i < step.phases.backward ? 'backward' : 'optimizer'));
    profiles[c.layout] = summarizeProfile(path.join(c.profileDir, file), (n) => phase.get(n));
  }

  const tokens = B * T;
  const flopsPerToken = gptTrainFlopsPerToken(cfg, T);
  const layouts = Object.fromEntries(
    contenders.map((c) => {
      const stepS = Math.min(...c.roundS);
      return [c.layout, { tokensPerS: tokens / stepS, stepS, gflops: (flopsPerToken * tokens) / stepS / 1e9, medianS: median(c.times), firstLoss: c.losses[0], lastLoss: c.losses[c.losses.length - 1], losses: c.losses, stepTimesS: c.times, nodes: c.step.graph.nodes.length, optimizerNodes: c.step.graph.nodes.length - c.step.phases.backward, buildS: c.buildS }];
    }),
  );
  const ours = layouts[DEFAULT_LAYOUT] ?? Object.values(layouts)[0];
  // The layouts' blocks of one round ran back to back, so they saw about the same machine load:
  // the ratios of round medians against the first layout are the load-robust comparison.
  const paired = Object.fromEntries(contenders.slice(1).map((c) => [c.layout, pairedRatio(c.roundS, contenders[0].roundS)]));
  const peak = rounds.map((r) => r.peak).reduce((a, b) => (b.gflops > a.gflops ? b : a));
  const bestTorch = (pick: (r: (typeof rounds)[number]) => TorchResult): TorchResult => {
    const ok = rounds.map(pick).filter((t): t is Exclude<TorchResult, { skipped: string }> => 'tokens_per_s' in t);
    return ok.length ? ok.reduce((a, b) => (b.tokens_per_s > a.tokens_per_s ? b : a)) : pick(rounds[0]);
  };
  const torch = bestTorch((r) => r.torch);
  const torchSdpa = bestTorch((r) => r.torchSdpa);
  // Peak RSS per attention implementation, each alone in a process, after the timed rounds.
  const rss = attentions.length > 1 ? attentions.map((attention) => ({ attention, ...runRssChild(args, attention), loadavg: os.loadavg() })) : [];
  const attentionDiff = attentions.includes('fused') ? await fusedForwardDiff(cfg, B) : undefined;
  flashAttention.queryBlock = blocks[0];

  const result = {
    date: new Date().toISOString(),
    machine: machine(),
    loadavg: os.loadavg(),
    size: args.size,
    model: cfg,
    batch: B,
    threads: args.threads,
    params: countParams(specs),
    flops: { perToken: flopsPerToken, formula: '6·N_matmul + 12·n_layer·T·C per token (N_matmul = 12·L·C² + V·C, tied head)' },
    defaultLayout: DEFAULT_LAYOUT,
    ours,
    layouts,
    pairedVs: { baseline: contenders[0].layout, ratios: paired },
    peak,
    torch,
    torchSdpa,
    rounds,
    profiles,
    queryBlock: blocks.join(', '),
    rss,
    attentionDiff,
  };
  printTable(result);
  const outDir = path.join(__dirname, 'out');
  fs.mkdirSync(outDir, { recursive: true });
  const outFile = path.join(outDir, `step-${args.size}-${Date.now()}.json`);
  fs.writeFileSync(outFile, JSON.stringify(result, null, 1));
  console.log(`\nwrote ${path.relative(process.cwd(), outFile)}`);
}

/** Endless random (B, T) windows of `data` bytes with next-byte targets, seeded. */
export function* sampleBatches(data: Buffer, B: number, T: number, seed: number): Generator<Batch, never> {
  const r = mulberry32(seed);
  for (;;) {
    const tokens = new Array<number>(B * T);
    const targets = new Array<number>(B * T);
    for (let b = 0; b < B; b++) {
      const o = Math.floor(r() * (data.length - T - 1));
      for (let t = 0; t < T; t++) {
        tokens[b * T + t] = data[o + t];
        targets[b * T + t] = data[o + t + 1];
      }
    }
    yield { tokens: tensor('int64', [B, T], tokens), targets: tensor('int64', [B, T], targets) };
  }
}

type TorchResult = { tokens_per_s: number; step_s_median: number; torch: string; first_loss: number; last_loss: number } | { skipped: string };

function runTorch(cfg: GptConfig, B: number, threads: number, steps: number, warmup: number, sdpa: boolean): TorchResult {
  const script = path.join(__dirname, 'torch_step.py');
  const argv = [script, '--layers', cfg.n_layer, '--heads', cfg.n_head, '--embd', cfg.n_embd, '--ctx', cfg.block_size, '--batch', B, '--vocab', cfg.vocab_size, '--threads', threads, '--steps', steps, '--warmup', warmup, '--data', DATA_FILE, ...(sdpa ? ['--sdpa'] : [])].map(String);
  const r = spawnSync('python3', argv, { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  if (r.error) return { skipped: `python3 not runnable (${r.error.message}); install Python 3 and \`pip install torch\` to compare` };
  if (r.status !== 0) {
    const why = /No module named 'torch'/.test(r.stderr) ? 'PyTorch is not installed (`pip install torch`)' : r.stderr.trim().split('\n').slice(-3).join(' | ');
    return { skipped: why };
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** What an `--rss-child` process reports: its peak RSS (VmHWM) and its step times. */
interface RssResult {
  hwmBytes: number;
  baseBytes: number;
  stepS: number[];
  losses: number[];
}

const procKib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;

/** Child process: one step graph of `attention` (default layout), warmup + timed steps, then VmHWM. */
export async function rssChild(args: StepBenchArgs, attention: AttentionImpl): Promise<void> {
  const size = SIZES[args.size];
  const cfg = { ...size.model, attention };
  const B = args.batch ?? size.batch;
  if (args.queryBlock) flashAttention.queryBlock = args.queryBlock;
  const baseBytes = procKib('VmRSS');
  const specs = gptParams(cfg);
  const step = buildTrainStep({ params: specs, loss: gptTrainLoss(cfg, B, cfg.block_size) }, OptimConfigSchema.parse(BENCH_OPTIM));
  const trainer = await Trainer.create(step, { weights: initParams(specs, 0), session: await ort.InferenceSession.create(serializeModel(step.graph).model, sessionOptions(args.threads)) });
  const batches = sampleBatches(fs.readFileSync(DATA_FILE), B, cfg.block_size, 1);
  const stepS: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < size.warmup + (args.steps ?? size.steps); i++) {
    const t0 = process.hrtime.bigint();
    losses.push((await trainer.run(batches.next().value)).loss);
    stepS.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  await trainer.release();
  console.log(JSON.stringify({ hwmBytes: procKib('VmHWM'), baseBytes, stepS, losses } satisfies RssResult));
}

function runRssChild(args: StepBenchArgs, attention: AttentionImpl): RssResult {
  const argv = [...process.execArgv, path.join(__dirname, 'main.ts'), 'step', '--size', args.size, '--threads', String(args.threads), '--rss-child', attention];
  if (args.steps) argv.push('--steps', String(args.steps));
  if (args.batch) argv.push('--batch', String(args.batch));
  if (args.queryBlock) argv.push('--query-block', String(args.queryBlock));
  const r = spawnSync(process.execPath, argv, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`bench step --rss-child ${attention}: ${r.stderr || `exit ${r.status} ${r.signal ?? ''}`}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as RssResult;
}

/**
 * Largest |fused − explicit| of one attention forward at this size's (B, T, C, nh), on q, k, v
 * uniform in [-2, 2): com.microsoft MultiHeadAttention (unidirectional) against the explicit
 * MatMul/Softmax graph that `attention: 'explicit'` builds.
 */
async function fusedForwardDiff(cfg: GptConfig, B: number): Promise<{ maxAbs: number; maxRef: number }> {
  const [T, C, nh] = [cfg.block_size, cfg.n_embd, cfg.n_head];
  const hs = C / nh;
  const g = new Graph('attn-diff');
  const [q, k, v] = ['q', 'k', 'v'].map((n) => g.input(n, 'float32', [B, T, C]));
  const heads = (t: typeof q, perm: number[]) => g.op('Transpose', [g.op('Reshape', [t, g.vector([B, T, nh, hs])])[0]], { perm })[0];
  const s = g.op('MatMul', [g.op('Mul', [heads(q, [0, 2, 1, 3]), g.scalar(1 / Math.sqrt(hs))])[0], heads(k, [0, 2, 3, 1])])[0]; // (B, nh, T, T)
  const p = g.op('Softmax', [g.op('Add', [s, causalMask(g, T)])[0]], { axis: -1 })[0];
  const y = g.op('MatMul', [p, heads(v, [0, 2, 1, 3])])[0]; // (B, nh, T, hs)
  g.output(g.op('Reshape', [g.op('Transpose', [y], { perm: [0, 2, 1, 3] })[0], g.vector([B, T, C])])[0], 'explicit');
  g.output(g.op('MultiHeadAttention', [q, k, v], { num_heads: nh, unidirectional: 1 }, { domain: 'com.microsoft' })[0], 'fused');
  const r = mulberry32(9);
  const feed = () => new ort.Tensor('float32', Float32Array.from({ length: B * T * C }, () => 4 * r() - 2), [B, T, C]);
  const session = await ort.InferenceSession.create(serializeModel(g).model, sessionOptions(2, { graphOptimizationLevel: 'disabled' })); // no fusion: the explicit graph runs op by op
  const out = await session.run({ q: feed(), k: feed(), v: feed() });
  await session.release();
  const [e, f] = [out.explicit.data as Float32Array, out.fused.data as Float32Array];
  let [maxAbs, maxRef] = [0, 0];
  for (let i = 0; i < e.length; i++) [maxAbs, maxRef] = [Math.max(maxAbs, Math.abs(e[i] - f[i])), Math.max(maxRef, Math.abs(e[i]))];
  return { maxAbs, maxRef };
}

function machine() {
  const cpus = os.cpus();
  let model = cpus[0]?.model ?? 'unknown';
  try {
    const m = /Model name:\s*(.+)/.exec(spawnSync('lscpu', { encoding: 'utf8' }).stdout ?? '');
    if (m) model = m[1].trim();
  } catch {
    // lscpu is optional; os.cpus() already gave a model name
  }
  return { cpu: model, logicalCores: cpus.length, node: process.version, platform: `${os.platform()} ${os.release()}` };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Quartiles of a[i] / b[i] over measurements taken back to back. */
export function pairedRatio(a: number[], b: number[]): { p25: number; median: number; p75: number } {
  const r = a.map((x, i) => x / b[i]).sort((x, y) => x - y);
  const q = (f: number) => r[Math.floor(f * (r.length - 1))];
  return { p25: q(0.25), median: q(0.5), p75: q(0.75) };
}

function printTable(r0: { rounds: unknown[] } & Omit<Parameters<typeof printRows>[0], 'rounds'>) {
  printRows({ ...r0, rounds: r0.rounds.length });
}

type LayoutResult = { tokensPerS: number; stepS: number; gflops: number; medianS: number; firstLoss: number; lastLoss: number; nodes: number; optimizerNodes: number };

function printRows(r: {
  rounds: number;
  size: string;
  batch: number;
  threads: number;
  params: number;
  loadavg: number[];
  defaultLayout: string;
  ours: LayoutResult;
  layouts: Record<string, LayoutResult>;
  peak: { gflops: number };
  torch: TorchResult;
  torchSdpa: TorchResult;
  profiles: Record<string, ReturnType<typeof summarizeProfile>>;
  pairedVs: { baseline: string; ratios: Record<string, { p25: number; median: number; p75: number }> };
  queryBlock: string;
  rss: ({ attention: string; loadavg: number[] } & RssResult)[];
  attentionDiff?: { maxAbs: number; maxRef: number };
}) {
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(`\nstep bench: ${r.size}, batch ${r.batch}, ${r.threads} threads, ${(r.params / 1e6).toFixed(2)} M params, best of ${r.rounds} round(s), load avg ${r.loadavg.map((x) => x.toFixed(2)).join(' ')}`);
  const rows: string[][] = [['', 'tokens/s', 'step ms', 'median ms', 'GFLOP/s', '% MatMul peak', 'optimizer nodes']];
  for (const [layout, o] of Object.entries(r.layouts)) {
    const label = `TruthGPT, ${layout} optimizer${layout === r.defaultLayout ? ' (default)' : ''}`;
    rows.push([label, f(o.tokensPerS, 0), f(o.stepS * 1000), f(o.medianS * 1000), f(o.gflops), f((100 * o.gflops) / r.peak.gflops), String(o.optimizerNodes)]);
  }
  for (const [t, label] of [[r.torch, 'explicit attn'], [r.torchSdpa, 'SDPA']] as const) {
    if (!('tokens_per_s' in t)) continue;
    const tg = (r.ours.gflops * t.tokens_per_s) / r.ours.tokensPerS;
    rows.push([`PyTorch ${t.torch} eager, ${label}`, f(t.tokens_per_s, 0), f(t.step_s_median * 1000), '', f(tg), f((100 * tg) / r.peak.gflops), '']);
  }
  rows.push(['ORT MatMul peak (1024³ chain)', '', '', '', f(r.peak.gflops), '100.0', '']);
  const w = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) console.log(row.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  '));
  const best = [r.torch, r.torchSdpa].flatMap((t) => ('tokens_per_s' in t ? [t.tokens_per_s] : []));
  if (best.length) console.log(`speed-up vs the faster PyTorch eager: ${f(r.ours.tokensPerS / Math.max(...best), 2)}×`);
  else if ('skipped' in r.torch) console.log(`PyTorch comparison skipped: ${r.torch.skipped}`);
  for (const [layout, q] of Object.entries(r.pairedVs.ratios)) {
    console.log(`${layout} / ${r.pairedVs.baseline} step time, paired round by round: median ${f(q.median, 3)} (quartiles ${f(q.p25, 3)}–${f(q.p75, 3)})`);
  }
  for (const [layout, o] of Object.entries(r.layouts)) console.log(`${layout}: loss ${f(o.firstLoss, 3)} → ${f(o.lastLoss, 3)} (sanity: it trains)`);
  for (const m of r.rss) {
    const timed = m.stepS.slice(1);
    console.log(`${m.attention} attention alone in a process: peak RSS (VmHWM) ${f(m.hwmBytes / 2 ** 20, 0)} MiB (${f(m.baseBytes / 2 ** 20, 0)} MiB before building the step), median step ${f(median(timed) * 1000)} ms over ${timed.length} steps after the first, load avg ${m.loadavg.map((x) => x.toFixed(2)).join(' ')}`);
  }
  if (r.attentionDiff) console.log(`fused attention forward vs explicit (q, k, v uniform in [-2, 2)): max |Δ| ${r.attentionDiff.maxAbs.toExponential(2)} (max |explicit| ${f(r.attentionDiff.maxRef, 2)}); backward query block ${r.queryBlock}`);
  for (const [layout, p] of Object.entries(r.profiles)) {
    const ph = Object.entries(p.byPhase).map(([k, v]) => `${k} ${f(v.ms / p.runs)} ms (${f(v.share * 100)} %, fastest run per node ${f(v.minMs)} ms)`).join(', ');
    console.log(`\n${layout}: where the time goes (ORT profile, kernel time ${f(p.totalMs / p.runs)} ms/run): ${ph}`);
    console.log('by op type:');
    for (const o of p.byOp.slice(0, 12)) console.log(`  ${o.op.padEnd(28)} ${f(o.share * 100).padStart(5)} %  ${f(o.ms / p.runs).padStart(8)} ms/step  ×${o.count / p.runs}`);
  }
}
