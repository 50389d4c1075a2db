// `npm run bench -- memory [--sizes a,b]`: peak memory of one real GPT training step against
// engine/models/memory.ts's estimate. Each size runs in its own process (compile the step with
// compileLmTrainStep, load seeded weights, run two steps), which reports VmHWM from
// /proc/self/status, so a peak is that size's alone.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as os from 'node:os';
import { Command } from 'commander';
import { tensor } from '../engine/graph/ir';
import { initParams, mulberry32 } from '../engine/models/blocks';
import { GptConfigSchema, gptParams, type GptConfig } from '../engine/models/gpt';
import { estimateTrainStepBytes, gib } from '../engine/models/memory';
import { OptimConfigSchema } from '../engine/optim';
import { compileLmTrainStep, zeroState } from '../engine/train/shard';

interface Size {
  model: Partial<GptConfig>;
  batch: number;
  context: number;
  optimizer: 'adamw' | 'sgd';
}

// The first four fitted the constants of engine/models/memory.ts: parameter-heavy (wide, big
// vocabulary, short rows), the same with SGD (no moments), activation-heavy (long context), deep
// and narrow (the shape of the spec that froze the stack). The last three check them: the tiny-gpt
// preset, bench step's medium size, and a Llama-style variant (RoPE, RMSNorm, SwiGLU, GQA, untied).
const SIZES: Record<string, Size> = {
  params: { model: { vocab_size: 8192, block_size: 64, n_layer: 6, n_head: 8, n_embd: 512 }, batch: 4, context: 64, optimizer: 'adamw' },
  sgd: { model: { vocab_size: 8192, block_size: 64, n_layer: 6, n_head: 8, n_embd: 512 }, batch: 4, context: 64, optimizer: 'sgd' },
  activations: { model: { vocab_size: 256, block_size: 512, n_layer: 4, n_head: 4, n_embd: 128 }, batch: 16, context: 512, optimizer: 'adamw' },
  deep: { model: { vocab_size: 259, block_size: 32, n_layer: 200, n_head: 2, n_embd: 32 }, batch: 8, context: 32, optimizer: 'adamw' },
  tiny: { model: { vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, n_embd: 64 }, batch: 8, context: 64, optimizer: 'adamw' },
  medium: { model: { vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 }, batch: 8, context: 256, optimizer: 'adamw' },
  llama: {
    model: { vocab_size: 2048, block_size: 128, n_layer: 4, n_head: 8, n_embd: 256, pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false, bias: false },
    batch: 8,
    context: 128,
    optimizer: 'adamw',
  },
};

const STEPS = Number(process.env.BENCH_MEMORY_STEPS ?? 4);
const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;

async function child(name: string): Promise<void> {
  const s = SIZES[name];
  const cfg = GptConfigSchema.parse(s.model);
  const optim = OptimConfigSchema.parse({ optimizer: s.optimizer === 'adamw' ? { kind: 'adamw', lr: 1e-3 } : { kind: 'sgd', lr: 1e-2 } });
  const base = kib('VmRSS');
  const compiled = await compileLmTrainStep({ model: cfg, optim, batchSize: s.batch, contextLength: s.context }, { intraOpThreads: 2 }, { memoryLimitBytes: Infinity });
  const afterCompile = kib('VmRSS');
  const weights = Object.fromEntries(initParams(gptParams(cfg), 1));
  const runner = compiled.runner({ step: 0, params: weights, state: zeroState(compiled.step) });
  const r = mulberry32(3);
  const ids = () => tensor('int64', [s.batch, s.context], Array.from({ length: s.batch * s.context }, () => Math.floor(r() * cfg.vocab_size)));
  const afterLoad = kib('VmRSS');
  let peakSampled = 0;
  const afterRuns: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    await runner.run({ tokens: ids(), targets: ids() });
    afterRuns.push(kib('VmRSS'));
    peakSampled = Math.max(peakSampled, process.memoryUsage().rss);
  }
  const est = estimateTrainStepBytes(cfg, s.batch, s.context, optim.optimizer);
  console.log(JSON.stringify({ name, base, afterCompile, afterLoad, afterRuns, hwm: kib('VmHWM'), peakSampled, estimate: est }));
}

function parent(sizes: string[]): void {
  const rows = [];
  for (const name of sizes) {
    const r = spawnSync(process.execPath, [...process.execArgv, __filename, '--child', name], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`bench memory ${name}: ${r.stderr}`);
    const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { name: string; base: number; afterCompile: number; hwm: number; estimate: ReturnType<typeof estimateTrainStepBytes> };
    const s = SIZES[name];
    rows.push({
      size: `${name}: ${s.model.n_layer}L×${s.model.n_embd}, V ${s.model.vocab_size}, B ${s.batch} × T ${s.context}, ${s.optimizer}`,
      params: `${(m.estimate.params / 1e6).toFixed(2)} M`,
      'estimate (params + activations + base)': `${gib(m.estimate.bytes)} (${gib(m.estimate.paramBytes)} + ${gib(m.estimate.activationBytes)} + ${gib(m.estimate.baseBytes)})`,
      'measured peak RSS (VmHWM)': gib(m.hwm),
      'RSS before compile': gib(m.base),
      'estimate / measured': (m.estimate.bytes / m.hwm).toFixed(2),
      raw: m,
    });
  }
  console.log(`bench memory: ${new Date().toISOString()}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.table(rows.map(({ raw: _raw, ...r }) => r));
  console.log(JSON.stringify(rows.map((r) => r.raw)));
}

const program = new Command('memory')
  .option('--sizes <list>', `comma-separated: ${Object.keys(SIZES).join(', ')}`, Object.keys(SIZES).join(','))
  .option('--child <size>', 'internal: measure one size in this process')
  .action(async (o: { sizes: string; child?: string }) => {
    if (o.child) return child(o.child);
    parent(o.sizes.split(','));
  });
program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
