// LoRA vs full fine-tuning of the same GPT: step time, peak RSS, trainable fraction and the loss
// reached after the same steps on the same batches, for LoRA on the float base and on an int8 or
// int4 base (`lora.baseQuantization`). Each mode runs in its own process, so peak RSS (getrusage
// maxrss) is that mode's alone. A quantized mode quantizes the seeded float base, then drops the
// float linear weights before the session is built, as the fine-tune worker does.
//
//   npx tsx bench/lora.ts [--size small|medium|gpt2] [--rank 8] [--targets c_attn] [--steps N]
//                         [--threads 2] [--modes full,lora,lora-int8,lora-int4] [--block-size 32|128]
//                         [--checkpointing off|block] [--mem-pattern on|off] [--arena on|off]
//                         [--prepacking on|off] [--paired]
//
// --arena off: ORT's CPU memory arena off (enableCpuMemArena); --prepacking off: ORT's
// `session.disable_prepacking` (prepacked weights are a second copy of constant weights).
// --paired adds a step-time run with every mode in one process, alternating steps (load-fair).
//
// Prints a table and the LoRA/full ratios, and writes bench/out/lora-<size>.json.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { serializeModel } from '../engine/graph/onnx';
import { initAdapters, isAdapterParam, loraModel, planLora, quantizedBytes, quantizeLoraBase, trainableReport } from '../engine/lora';
import { countParams, initParams } from '../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainLoss, type GptConfig } from '../engine/models/gpt';
import { OptimConfigSchema } from '../engine/optim';
import { buildTrainStep } from '../engine/train/step';
import { Trainer, type Batch } from '../engine/train/trainer';
import { sessionOptions } from './ort';
import { sampleBatches } from './step';

const SIZES: Record<string, { model: GptConfig; batch: number }> = {
  // nanoGPT's CPU config (README "I only have a macbook": 4L × 128, ctx 64, batch 12), byte vocab.
  small: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128 }), batch: 12 },
  medium: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 }), batch: 8 },
  // GPT-2 small's shape (124 M parameters), full context, batch 1.
  gpt2: { model: GptConfigSchema.parse({ vocab_size: 50257, block_size: 1024, n_layer: 12, n_head: 12, n_embd: 768 }), batch: 1 },
};
const MODES = ['full', 'lora', 'lora-int8', 'lora-int4'] as const;
const LABEL: Record<string, string> = { lora: 'LoRA/full', 'lora-int8': 'LoRA int8 base/full', 'lora-int4': 'LoRA int4 base/full' };
type Mode = (typeof MODES)[number];
const DATA_FILE = require.resolve('typescript/lib/lib.es5.d.ts');

interface Args {
  size: string;
  rank: number;
  targets: string;
  steps: number;
  warmup: number;
  threads: number;
  modes: Mode[];
  checkpointing: 'off' | 'block';
  /** ORT's memory pattern (planned activation block): on by default; off keeps one step's activations once, not twice. */
  memPattern: boolean;
  arena: boolean;
  prepacking: boolean;
  /** int4 tile edge. */
  blockSize: 32 | 128;
}

interface ModeResult {
  mode: Mode;
  trainable: number;
  total: number;
  fraction: number;
  stepMedianS: number;
  stepMinS: number;
  peakRssMiB: number;
  firstLoss: number;
  lastLoss: number;
  graphBytes: number;
  quantizedBytes: number;
}

interface Prepared {
  trainer: Trainer;
  batches: Iterator<Batch>;
  report: { trainable: number; total: number; fraction: number };
  graphBytes: number;
  quantizedBytes: number;
}

/** Builds `mode`'s step and session on seeded weights; the float weights the step does not read are dropped. */
async function prepare(mode: Mode, a: Args): Promise<Prepared> {
  const { model: cfg, batch: B } = SIZES[a.size];
  const base = { params: gptParams(cfg), loss: gptTrainLoss(cfg, B, cfg.block_size) };
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: mode === 'full' ? 3e-4 : 1e-3, weight_decay: 0 }, grad_clip: 1 });
  const weights = initParams(base.params, 0);
  const targets = a.targets === 'all-linear' ? 'all-linear' : a.targets.split(',');
  const baseQuantization = mode === 'lora-int8' ? 'int8' : mode === 'lora-int4' ? 'int4' : 'none';
  const blockSize = baseQuantization === 'int4' ? { baseBlockSize: a.blockSize } : {};
  const plan = mode === 'full' ? null : planLora(base, { family: 'gpt', r: a.rank, lora_alpha: 2 * a.rank, target_modules: targets, baseQuantization, ...blockSize });
  // A quantized base is quantized once; its float linear weights are dropped before the session exists.
  const quantized = plan ? quantizeLoraBase(base, plan, weights) : null;
  if (quantized) for (const k of quantized.linears.keys()) weights.delete(k);
  (globalThis as { gc?: () => void }).gc?.(); // children run with --expose-gc: the dropped arrays are freed now, not at V8's leisure
  const opts = { activationCheckpointing: a.checkpointing };
  const step = plan ? buildTrainStep(loraModel(base, plan, quantized ?? undefined), optim, { trainable: isAdapterParam, ...opts }) : buildTrainStep(base, optim, opts);
  if (plan) for (const [k, v] of initAdapters(plan)) weights.set(k, v);
  // What the step does not read is not kept either.
  const fed = new Set([...step.trainable, ...step.frozen].map((s) => s.name));
  for (const k of [...weights.keys()]) if (!fed.has(k)) weights.delete(k);
  let model: Uint8Array | null = serializeModel(step.graph).model;
  const graphBytes = model.length;
  const extra = a.prepacking ? {} : { extra: { session: { disable_prepacking: '1' } } };
  const session = await ort.InferenceSession.create(model, sessionOptions(a.threads, { enableMemPattern: a.memPattern, enableCpuMemArena: a.arena, ...extra }));
  model = null;
  const trainer = await Trainer.create(step, { session, weights });
  const baseCount = countParams(base.params);
  const report = plan ? trainableReport(plan, baseCount) : { trainable: baseCount, total: baseCount, fraction: 1 };
  return { trainer, batches: sampleBatches(fs.readFileSync(DATA_FILE), B, cfg.block_size, 1), report, graphBytes, quantizedBytes: quantized ? quantizedBytes(quantized) : 0 };
}

async function timedStep(p: Prepared): Promise<{ s: number; loss: number }> {
  const batch = p.batches.next().value as Batch;
  const t0 = process.hrtime.bigint();
  const loss = (await p.trainer.run(batch)).loss;
  return { s: Number(process.hrtime.bigint() - t0) / 1e9, loss };
}

async function runMode(mode: Mode, a: Args): Promise<ModeResult> {
  const p = await prepare(mode, a);
  const first = (await p.trainer.run(p.batches.next().value as Batch)).loss;
  for (let i = 1; i < a.warmup; i++) await p.trainer.run(p.batches.next().value as Batch);
  const times: number[] = [];
  let last = first;
  for (let i = 0; i < a.steps; i++) {
    const t = await timedStep(p);
    times.push(t.s);
    last = t.loss;
  }
  await p.trainer.release();
  times.sort((x, y) => x - y);
  return {
    mode,
    ...p.report,
    stepMedianS: times[Math.floor(times.length / 2)],
    stepMinS: times[0],
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    firstLoss: first,
    lastLoss: last,
    graphBytes: p.graphBytes,
    quantizedBytes: p.quantizedBytes,
  };
}

/**
 * Step time on a loaded machine: every mode's session in one process, one step of each per round
 * (the order rotating), so load drifts hit all modes alike. Returns each mode's step times and the
 * median over rounds of its time / full's time in the same round.
 */
async function runPaired(a: Args): Promise<{ times: Record<string, number[]>; ratio: Record<string, number> }> {
  const ready: [Mode, Prepared][] = [];
  for (const m of a.modes) ready.push([m, await prepare(m, a)]);
  for (const [, p] of ready) for (let i = 0; i < a.warmup; i++) await p.trainer.run(p.batches.next().value as Batch);
  const times: Record<string, number[]> = Object.fromEntries(a.modes.map((m) => [m, []]));
  for (let r = 0; r < a.steps; r++) {
    for (let k = 0; k < ready.length; k++) {
      const [m, p] = ready[(r + k) % ready.length];
      times[m].push((await timedStep(p)).s);
    }
  }
  for (const [, p] of ready) await p.trainer.release();
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const ratio = Object.fromEntries(a.modes.filter((m) => m !== 'full').map((m) => [m, median(times[m].map((t, r) => t / times.full[r]))]));
  return { times, ratio };
}

function parseArgs(argv: string[]): Args & { child?: Mode | 'paired'; paired: boolean } {
  const get = (flag: string, def: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : def;
  };
  const size = get('--size', 'small');
  if (!SIZES[size]) throw new Error(`bench lora: unknown --size ${size} (have ${Object.keys(SIZES).join(', ')})`);
  const child = get('--child', '');
  const modes = get('--modes', MODES.join(',')).split(',') as Mode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`bench lora: unknown mode ${m} in --modes (have ${MODES.join(', ')})`);
  const checkpointing = get('--checkpointing', size === 'gpt2' ? 'block' : 'off');
  if (checkpointing !== 'off' && checkpointing !== 'block') throw new Error(`bench lora: --checkpointing must be off or block, got ${checkpointing}`);
  const onOff = (flag: string) => {
    const v = get(flag, 'on');
    if (v !== 'on' && v !== 'off') throw new Error(`bench lora: ${flag} must be on or off, got ${v}`);
    return v === 'on';
  };
  const blockSize = Number(get('--block-size', '32'));
  if (blockSize !== 32 && blockSize !== 128) throw new Error(`bench lora: --block-size must be 32 or 128, got ${blockSize}`);
  return {
    size,
    memPattern: onOff('--mem-pattern'),
    arena: onOff('--arena'),
    prepacking: onOff('--prepacking'),
    blockSize,
    rank: Number(get('--rank', '8')),
    targets: get('--targets', 'c_attn'),
    steps: Number(get('--steps', size === 'small' ? '20' : size === 'gpt2' ? '2' : '6')),
    warmup: Number(get('--warmup', size === 'gpt2' ? '1' : '3')),
    threads: Number(get('--threads', '2')),
    modes,
    checkpointing,
    paired: argv.includes('--paired'),
    child: child === 'paired' || (MODES as readonly string[]).includes(child) ? (child as Mode | 'paired') : undefined,
  };
}

/** Runs both modes in child processes and prints the comparison. */
export function benchLora(argv: string[]): void {
  const a = parseArgs(argv);
  const results: ModeResult[] = [];
  for (const mode of a.modes) {
    const r = spawnSync(process.execPath, [...process.execArgv, '--expose-gc', __filename, ...argv, '--child', mode], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`bench lora: ${mode} run failed:\n${r.stderr}`);
    results.push(JSON.parse(r.stdout.trim().split('\n').pop()!) as ModeResult);
  }
  const full = results.find((r) => r.mode === 'full'); // without it: absolute figures only
  const rows = results.map((r) => ({
    mode: r.mode,
    trainable: r.trainable,
    'trainable %': (100 * r.fraction).toFixed(2),
    'step ms (median)': (1000 * r.stepMedianS).toFixed(1),
    'step ms (min)': (1000 * r.stepMinS).toFixed(1),
    'peak RSS MiB': r.peakRssMiB.toFixed(0),
    'graph KiB': (r.graphBytes / 1024).toFixed(0),
    'quantized base KiB': (r.quantizedBytes / 1024).toFixed(0),
    'loss first→last': `${r.firstLoss.toFixed(3)}→${r.lastLoss.toFixed(3)}`,
  }));
  const onOff = (b: boolean) => (b ? 'on' : 'off');
  console.log(`LoRA r=${a.rank} on ${a.targets} vs full fine-tuning, ${a.size}, ${a.steps} timed steps, ${a.threads} threads, activation checkpointing ${a.checkpointing}, ORT memory pattern ${onOff(a.memPattern)}, arena ${onOff(a.arena)}, prepacking ${onOff(a.prepacking)}, int4 tiles ${a.blockSize}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.table(rows);
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const ratios: Record<string, { stepTime: number; stepTimeMin: number; peakRss: number }> = {};
  for (const r of results) {
    if (r.mode === 'full' || !full) continue;
    const label = LABEL[r.mode];
    ratios[r.mode] = { stepTime: r.stepMedianS / full.stepMedianS, stepTimeMin: r.stepMinS / full.stepMinS, peakRss: r.peakRssMiB / full.peakRssMiB };
    console.log(`${label} step time: ${pct(ratios[r.mode].stepTime)} (median; ${pct(ratios[r.mode].stepTimeMin)} on the fastest step)`);
    console.log(`${label} peak RSS: ${pct(ratios[r.mode].peakRss)}`);
  }
  let paired: Awaited<ReturnType<typeof runPaired>> | null = null;
  if (a.paired && full) {
    const r = spawnSync(process.execPath, [...process.execArgv, __filename, ...argv, '--child', 'paired'], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`bench lora: paired run failed:\n${r.stderr}`);
    paired = JSON.parse(r.stdout.trim().split('\n').pop()!) as Awaited<ReturnType<typeof runPaired>>;
    for (const [m, x] of Object.entries(paired.ratio)) {
      console.log(`${LABEL[m]} step time, paired in one process: ${pct(x)} (median of ${a.steps} rounds; ms ${paired.times[m].map((t) => (1000 * t).toFixed(0)).join(' ')} vs full ${paired.times.full.map((t) => (1000 * t).toFixed(0)).join(' ')})`);
    }
  }
  const out = path.join(__dirname, 'out');
  fs.mkdirSync(out, { recursive: true });
  const tag = `${a.checkpointing}-mp${onOff(a.memPattern)}${a.arena ? '' : '-noarena'}${a.prepacking ? '' : '-noprepack'}`;
  fs.writeFileSync(path.join(out, `lora-${a.size}-${tag}.json`), JSON.stringify({ args: a, results, ratios, paired, loadavg: os.loadavg() }, null, 2));
}

if (require.main === module) {
  const a = parseArgs(process.argv.slice(2));
  if (a.child) {
    (a.child === 'paired' ? runPaired(a) : runMode(a.child, a))
      .then((r) => console.log(JSON.stringify(r)))
      .catch((e: unknown) => {
        console.error(e);
        process.exit(1);
      });
  } else benchLora(process.argv.slice(2));
}
