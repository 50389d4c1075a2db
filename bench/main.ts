// Benchmark entry: `npm run bench -- <name> [options]`. Benchmarks print a table and write JSON
// to bench/out/; they are never timed tests.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Command } from 'commander';
import { parseLayouts } from './layouts';
import { measureMatmulPeak } from './matmul_peak';
import { benchKSteps } from './ksteps';
import { benchOptim } from './optim';
import { benchStep, rssChild } from './step';

// Benchmarks that are standalone scripts with their own options: `npm run bench -- quant all`.
const SCRIPTS: Record<string, string> = {
  diloco: 'W-worker DiLoCo rounds on the real stack: where the time outside training goes, bytes per round, orchestration share',
  'diloco-io': 'a DiLoCo round\'s I/O at gpt2-small size without the compute: shard reads/writes, aggregateRound time, bytes and peak RSS (before/after checkouts)',
  'diloco-cache': 'a GPU worker\'s tensor cache over DiLoCo rounds at gpt2-small size, W shards on one worker: bytes read a round (a replay with the real cache class)',
  'diloco-quality': 'DiLoCo W=1/2/4 at equal tokens in the engine: val loss per outer step (outer lr, H, compression)',
  lora: 'LoRA vs full fine-tuning: step time, peak RSS, trainable fraction, loss',
  quant: 'int8 / int4 vs fp32: kernels, end to end, decode with KV cache (kernels|e2e|decode|all)',
  dataset: 'prepareDataset on a GiB-scale corpus: throughput and peak RSS',
  memory: 'one GPT training step: peak RSS against the memory estimate specs are checked with; activation checkpointing off vs block (medium, gpt2-small)',
  't5-step': 'T5 training step, full and LoRA all-linear, vs PyTorch eager on HF T5ForConditionalGeneration',
  generate: 'generation past block_size (window restarts) with and without the KV cache; T5 encoder once + cached decoder',
  'hf-import': 'importing a Hugging Face folder: peak RSS against the model\'s float32 bytes',
  's3-servers': 's3rver vs versitygw as the local S3 server: start time, memory, store throughput',
  'ort-stall': 'how long onnxruntime-node session create and run keep the event loop (and so heartbeats) from turning, ~100M-parameter GPT',
  half: 'mixed precision on a CPU: which fp16/bf16 kernels the CPU EP has (probe), the emulated step\'s cost (not a speed figure), loss curves fp32 vs emulated fp16/bf16',
  'worker-lost': 'a SIGKILLed GPU worker: kill to retry start with and without the supervisor failing its attempts; cancel to CANCELED',
};
const script = process.argv[2];
if (script && script in SCRIPTS) {
  const tsx = require.resolve('tsx/cli');
  const r = spawnSync(process.execPath, [tsx, join(__dirname, `${script}.ts`), ...process.argv.slice(3)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const program = new Command('bench').description('TruthGPT benchmarks');
for (const [name, description] of Object.entries(SCRIPTS)) program.command(name).description(`${description} (see bench/${name}.ts --help)`);

program
  .command('step')
  .description('GPT training step: tokens/s, GFLOP/s, % of ORT MatMul peak, vs PyTorch eager')
  .option('--size <size>', 'small (nanoGPT CPU config: 4L×128, ctx 64, batch 12) | medium (6L×384, ctx 256)', 'small')
  .option('--threads <n>', 'intra-op threads for ORT and PyTorch', '2')
  .option('--steps <n>', 'timed steps (default per size)')
  .option('--batch <n>', 'batch size (default per size)')
  .option('--no-torch', 'skip the PyTorch eager comparison')
  .option('--profile', 'ORT profiling: time per op type')
  .option('--repeat <n>', 'rounds of (ours, MatMul peak, PyTorch); the best of each is reported', '1')
  .option('--layouts <list>', 'optimizer layouts timed side by side, comma-separated (per-tensor, flat, flat:<max elements>, flat:all)', 'per-tensor,flat')
  .option('--attention <list>', 'attention implementations timed side by side, comma-separated (explicit, fused); with two, each one\'s peak RSS in a process of its own', 'explicit')
  .option('--query-block <list>', 'query rows per block of fused attention\'s backward; several (comma-separated) are timed side by side, the first one\'s peak RSS measured')
  .option('--rss-child <attention>', 'internal: measure one attention implementation\'s peak RSS in this process')
  .action(async (o: { size: string; threads: string; steps?: string; batch?: string; torch: boolean; profile?: boolean; repeat: string; layouts: string; attention: string; queryBlock?: string; rssChild?: string }) => {
    const impl = (a: string, flag: string) => {
      if (a !== 'explicit' && a !== 'fused') throw new Error(`${flag}: unknown attention implementation "${a}" (explicit, fused)`);
      return a;
    };
    const attentions = o.attention.split(',').map((a) => impl(a, '--attention'));
    const common = { size: o.size, threads: Number(o.threads), steps: o.steps ? Number(o.steps) : undefined, batch: o.batch ? Number(o.batch) : undefined, queryBlock: o.queryBlock ? Number(o.queryBlock.split(',')[0]) : undefined };
    if (o.rssChild) return rssChild({ ...common, torch: false, profile: false, repeat: 1 }, impl(o.rssChild, '--rss-child'));
    await benchStep({
      size: o.size,
      threads: Number(o.threads),
      steps: o.steps ? Number(o.steps) : undefined,
      batch: o.batch ? Number(o.batch) : undefined,
      torch: o.torch,
      profile: !!o.profile,
      repeat: Math.max(1, Number(o.repeat)),
      layouts: parseLayouts(o.layouts),
      attentions,
      queryBlock: common.queryBlock,
      queryBlocks: o.queryBlock ? o.queryBlock.split(',').map(Number) : undefined,
    });
  });

program
  .command('optim')
  .description('the optimizer phase alone (AdamW + clip over the step bench GPT shapes), per-tensor vs flat layout')
  .option('--size <size>', 'small | medium (the step bench sizes)', 'small')
  .option('--threads <n>', 'intra-op threads', '2')
  .option('--reps <n>', 'timed runs per layout', '100')
  .option('--layouts <list>', 'comma-separated (per-tensor, flat, flat:<max elements>, flat:all)', 'per-tensor,flat')
  .option('--params <which>', 'full (every GPT weight) | lora (rank-8 all-linear adapters)', 'full')
  .action(async (o: { size: string; threads: string; reps: string; layouts: string; params: string }) => {
    if (o.params !== 'full' && o.params !== 'lora') throw new Error(`--params: unknown "${o.params}" (full, lora)`);
    await benchOptim({ size: o.size, threads: Number(o.threads), reps: Number(o.reps), layouts: parseLayouts(o.layouts), params: o.params });
  });

program
  .command('ksteps')
  .description('K optimizer steps per session.run (one ONNX Loop) vs one run per step: ms per step, per-run overhead')
  .option('--size <size>', 'small | medium (the step bench sizes)', 'small')
  .option('--threads <n>', 'intra-op threads', '2')
  .option('--ks <list>', 'steps per run to compare, comma-separated; the first is the baseline', '1,16')
  .option('--rounds <n>', 'timed rounds (each K runs the same steps back to back)', '5')
  .option('--steps <n>', 'steps per round, a multiple of every K', '32')
  .action(async (o: { size: string; threads: string; ks: string; rounds: string; steps: string }) => {
    await benchKSteps({ size: o.size, threads: Number(o.threads), ks: o.ks.split(',').map(Number), rounds: Math.max(1, Number(o.rounds)), steps: Number(o.steps) });
  });

program
  .command('matmul-peak')
  .description('ORT MatMul GFLOP/s on a chain of 1024³ MatMuls')
  .option('--threads <n>', 'intra-op threads', '2')
  .action(async (o: { threads: string }) => {
    console.log(await measureMatmulPeak(Number(o.threads)));
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
