// The T5 training step (engine/train/seq2seq.ts), full weights and LoRA on every linear layer, against
// PyTorch eager on Hugging Face's T5ForConditionalGeneration (bench/torch_t5_step.py: same config,
// AdamW, batch shape, threads; LoRA through peft). Random ids; the figure is the median step time.
//
//   npx tsx bench/t5-step.ts [--size small|tiny] [--rank 8] [--steps N] [--threads 2] [--python python3]
//
// Prints a table and writes bench/out/t5-step.json.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { mulberry32 } from '../engine/data/random';
import { seq2seqBatch } from '../engine/data/t5-span';
import { serializeModel } from '../engine/graph/onnx';
import { initAdapters } from '../engine/lora';
import { countParams, initParams } from '../engine/models/blocks';
import { T5ConfigSchema, t5Params, type T5ConfigInput } from '../engine/models/t5';
import { OptimConfigSchema } from '../engine/optim';
import { buildT5TrainStep } from '../engine/train/seq2seq';
import { Trainer } from '../engine/train/trainer';
import { sessionOptions } from './ort';

const SIZES: Record<string, { model: T5ConfigInput; batch: number; src: number; tgt: number }> = {
  // The test fixture's geometry (test/fixtures/t5-tiny).
  tiny: { model: { vocab_size: 157, d_model: 32, d_kv: 8, d_ff: 64, num_layers: 2, num_heads: 4, relative_attention_num_buckets: 8, relative_attention_max_distance: 16 }, batch: 8, src: 16, tgt: 8 },
  // t5-small's shape at half width and a 4096 vocabulary: 4 + 4 layers × 256 wide, 4 heads of 64.
  small: { model: { vocab_size: 4096, d_model: 256, d_kv: 64, d_ff: 1024, num_layers: 4, num_heads: 4 }, batch: 8, src: 64, tgt: 16 },
};

interface Args {
  size: string;
  rank: number;
  steps: number;
  warmup: number;
  threads: number;
  python: string;
}

interface Row {
  engine: string;
  mode: 'full' | 'lora';
  trainable: number;
  stepMedianS: number;
  firstLoss: number;
  lastLoss: number;
}

function parseArgs(argv: string[]): Args {
  const get = (flag: string, def: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : def;
  };
  const size = get('--size', 'small');
  if (!SIZES[size]) throw new Error(`bench t5-step: unknown --size ${size} (have ${Object.keys(SIZES).join(', ')})`);
  return { size, rank: Number(get('--rank', '8')), steps: Number(get('--steps', '10')), warmup: Number(get('--warmup', '3')), threads: Number(get('--threads', '2')), python: get('--python', 'python3') };
}

async function ours(mode: 'full' | 'lora', a: Args): Promise<Row> {
  const { model, batch: B, src, tgt } = SIZES[a.size];
  const cfg = T5ConfigSchema.parse(model);
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3, weight_decay: 0 } });
  const step = buildT5TrainStep({ model: cfg, optim, batchSize: B, srcLen: src, tgtLen: tgt, lora: mode === 'lora' ? { r: a.rank, lora_alpha: 2 * a.rank, target_modules: 'all-linear' } : undefined });
  const weights = initParams(t5Params(cfg), 0);
  if (step.lora) for (const [k, v] of initAdapters(step.lora)) weights.set(k, v);
  const session = await ort.InferenceSession.create(serializeModel(step.graph).model, sessionOptions(a.threads));
  const trainer = await Trainer.create(step, { session, weights });
  const rand = mulberry32(1);
  const id = () => 2 + Math.floor(rand() * (cfg.vocab_size - 2));
  const batch = () => seq2seqBatch(Array.from({ length: B }, () => ({ inputs: Array.from({ length: src }, id), targets: Array.from({ length: tgt }, id) })), cfg, src, tgt);
  const times: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < a.warmup + a.steps; i++) {
    const b = batch();
    const t0 = process.hrtime.bigint();
    losses.push((await trainer.run(b)).loss);
    if (i >= a.warmup) times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  await trainer.release();
  times.sort((x, y) => x - y);
  return { engine: 'ours (ORT)', mode, trainable: countParams(step.trainable), stepMedianS: times[Math.floor(times.length / 2)], firstLoss: losses[0], lastLoss: losses.at(-1)! };
}

function torch(mode: 'full' | 'lora', a: Args): Row | { engine: string; mode: string; skipped: string } {
  const { model, batch, src, tgt } = SIZES[a.size];
  const cfg = T5ConfigSchema.parse(model);
  const hf = { ...model, num_decoder_layers: cfg.num_layers, feed_forward_proj: cfg.feed_forward_proj, decoder_start_token_id: 0, pad_token_id: 0, eos_token_id: 1 };
  const argv = [path.join(__dirname, 'torch_t5_step.py'), '--config', JSON.stringify(hf), '--batch', batch, '--src', src, '--tgt', tgt, '--threads', a.threads, '--steps', a.steps, '--warmup', a.warmup, '--lora', mode === 'lora' ? a.rank : 0].map(String);
  const r = spawnSync(a.python, argv, { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(a.threads) } });
  if (r.error || r.status !== 0) return { engine: 'PyTorch eager', mode, skipped: r.error ? r.error.message : r.stderr.trim().split('\n').slice(-2).join(' | ') };
  const j = JSON.parse(r.stdout.trim().split('\n').pop()!) as { trainable: number; step_s_median: number; first_loss: number; last_loss: number; torch: string };
  return { engine: `PyTorch ${j.torch} eager`, mode, trainable: j.trainable, stepMedianS: j.step_s_median, firstLoss: j.first_loss, lastLoss: j.last_loss };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const { model, batch, src, tgt } = SIZES[a.size];
  const rows: (Row | { engine: string; mode: string; skipped: string })[] = [];
  for (const mode of ['full', 'lora'] as const) {
    const r = await ours(mode, a);
    rows.push(r, torch(mode, a));
  }
  const params = countParams(t5Params(T5ConfigSchema.parse(model)));
  console.log(`T5 training step, ${a.size} (${params} params), batch ${batch} × src ${src} / tgt ${tgt}, LoRA r=${a.rank} all-linear, ${a.steps} timed steps, ${a.threads} threads`);
  console.table(rows.map((r) => ('skipped' in r ? { engine: r.engine, mode: r.mode, 'step ms': `skipped: ${r.skipped}` } : { engine: r.engine, mode: r.mode, trainable: r.trainable, 'step ms': (1000 * r.stepMedianS).toFixed(1), 'loss first→last': `${r.firstLoss.toFixed(3)}→${r.lastLoss.toFixed(3)}` })));
  const out = path.join(__dirname, 'out');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 't5-step.json'), JSON.stringify({ args: a, size: SIZES[a.size], params, rows }, null, 2));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
