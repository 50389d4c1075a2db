// LoRA vs full fine-tuning of the same GPT: step time, peak RSS, trainable fraction and the loss
// reached after the same steps on the same batches. Each mode runs in its own process, so peak RSS
// (getrusage maxrss) is that mode's alone.
//
//   npx tsx bench/lora.ts [--size small|medium] [--rank 8] [--targets c_attn] [--steps N] [--threads 2]
//
// Prints a table and writes bench/out/lora.json.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { serializeModel } from '../engine/graph/onnx';
import { initAdapters, isAdapterParam, loraModel, planLora, trainableReport } from '../engine/lora';
import { countParams, initParams } from '../engine/models/blocks';
import { GptConfigSchema, gptParams, gptTrainLoss, type GptConfig } from '../engine/models/gpt';
import { OptimConfigSchema } from '../engine/optim';
import { buildTrainStep } from '../engine/train/step';
import { Trainer } from '../engine/train/trainer';
import { sessionOptions } from './ort';
import { sampleBatches } from './step';

const SIZES: Record<string, { model: GptConfig; batch: number }> = {
  // nanoGPT's CPU config (README "I only have a macbook": 4L × 128, ctx 64, batch 12), byte vocab.
  small: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128 }), batch: 12 },
  medium: { model: GptConfigSchema.parse({ vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 }), batch: 8 },
};
const DATA_FILE = require.resolve('typescript/lib/lib.es5.d.ts');

interface Args {
  size: string;
  rank: number;
  targets: string;
  steps: number;
  warmup: number;
  threads: number;
}

interface ModeResult {
  mode: 'full' | 'lora';
  trainable: number;
  total: number;
  fraction: number;
  stepMedianS: number;
  peakRssMiB: number;
  firstLoss: number;
  lastLoss: number;
  graphBytes: number;
}

async function runMode(mode: 'full' | 'lora', a: Args): Promise<ModeResult> {
  const { model: cfg, batch: B } = SIZES[a.size];
  const base = { params: gptParams(cfg), loss: gptTrainLoss(cfg, B, cfg.block_size) };
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: mode === 'lora' ? 1e-3 : 3e-4, weight_decay: 0 }, grad_clip: 1 });
  const weights = initParams(base.params, 0);
  const targets = a.targets === 'all-linear' ? 'all-linear' : a.targets.split(',');
  const plan = mode === 'lora' ? planLora(base, { family: 'gpt', r: a.rank, lora_alpha: 2 * a.rank, target_modules: targets }) : null;
  const step = plan ? buildTrainStep(loraModel(base, plan), optim, { trainable: isAdapterParam }) : buildTrainStep(base, optim);
  if (plan) for (const [k, v] of initAdapters(plan)) weights.set(k, v);
  const model = serializeModel(step.graph).model;
  const session = await ort.InferenceSession.create(model, sessionOptions(a.threads));
  const trainer = await Trainer.create(step, { session, weights });
  const it = sampleBatches(fs.readFileSync(DATA_FILE), B, cfg.block_size, 1);
  const first = (await trainer.run(it.next().value)).loss;
  for (let i = 1; i < a.warmup; i++) await trainer.run(it.next().value);
  const times: number[] = [];
  let last = first;
  for (let i = 0; i < a.steps; i++) {
    const batch = it.next().value;
    const t0 = process.hrtime.bigint();
    last = (await trainer.run(batch)).loss;
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  await trainer.release();
  const baseCount = countParams(base.params);
  const report = plan ? trainableReport(plan, baseCount) : { trainable: baseCount, total: baseCount, fraction: 1 };
  times.sort((x, y) => x - y);
  return {
    mode,
    ...report,
    stepMedianS: times[Math.floor(times.length / 2)],
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    firstLoss: first,
    lastLoss: last,
    graphBytes: model.length,
  };
}

function parseArgs(argv: string[]): Args & { child?: 'full' | 'lora' } {
  const get = (flag: string, def: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : def;
  };
  const size = get('--size', 'small');
  if (!SIZES[size]) throw new Error(`bench lora: unknown --size ${size} (have ${Object.keys(SIZES).join(', ')})`);
  const child = get('--child', '');
  return {
    size,
    rank: Number(get('--rank', '8')),
    targets: get('--targets', 'c_attn'),
    steps: Number(get('--steps', size === 'small' ? '20' : '6')),
    warmup: Number(get('--warmup', '3')),
    threads: Number(get('--threads', '2')),
    child: child === 'full' || child === 'lora' ? child : undefined,
  };
}

/** Runs both modes in child processes and prints the comparison. */
export function benchLora(argv: string[]): void {
  const a = parseArgs(argv);
  const results: ModeResult[] = [];
  for (const mode of ['full', 'lora'] as const) {
    const r = spawnSync(process.execPath, [...process.execArgv, __filename, ...argv, '--child', mode], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`bench lora: ${mode} run failed:\n${r.stderr}`);
    results.push(JSON.parse(r.stdout.trim().split('\n').pop()!) as ModeResult);
  }
  const [full, lora] = results;
  const rows = results.map((r) => ({
    mode: r.mode,
    trainable: r.trainable,
    'trainable %': (100 * r.fraction).toFixed(2),
    'step ms': (1000 * r.stepMedianS).toFixed(1),
    'peak RSS MiB': r.peakRssMiB.toFixed(0),
    'graph KiB': (r.graphBytes / 1024).toFixed(0),
    'loss first→last': `${r.firstLoss.toFixed(3)}→${r.lastLoss.toFixed(3)}`,
  }));
  console.log(`LoRA r=${a.rank} on ${a.targets} vs full fine-tuning, ${a.size}, ${a.steps} timed steps, ${a.threads} threads`);
  console.table(rows);
  const ratios = { stepTime: lora.stepMedianS / full.stepMedianS, peakRss: lora.peakRssMiB / full.peakRssMiB };
  console.log(`LoRA/full: step time ${(100 * ratios.stepTime).toFixed(0)}%, peak RSS ${(100 * ratios.peakRss).toFixed(0)}%`);
  const out = path.join(__dirname, 'out');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'lora.json'), JSON.stringify({ args: a, results, ratios }, null, 2));
}

if (require.main === module) {
  const a = parseArgs(process.argv.slice(2));
  if (a.child) {
    runMode(a.child, a)
      .then((r) => console.log(JSON.stringify(r)))
      .catch((e: unknown) => {
        console.error(e);
        process.exit(1);
      });
  } else benchLora(process.argv.slice(2));
}
