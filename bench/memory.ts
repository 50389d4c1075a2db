// `npm run bench -- memory [--sizes a,b] [--checkpointing a,b]`: peak memory of one real GPT
// training step against engine/models/memory.ts's estimate. Each size runs in its own process
// (compile the step with compileLmTrainStep, load seeded weights, run a few steps), which reports
// VmHWM from /proc/self/status, so a peak is that size's alone.
//
// Then activation checkpointing (engine/train/checkpointing.ts) at the `--checkpointing` sizes
// (default medium and gpt2): each size with `off` and with `block`, each in its own process,
// alternating, `--rounds` times; the peak is the smallest VmHWM of a configuration's processes and
// the step time the smallest median step time (the first step of a process, which allocates, left
// out), so other work on the machine hits both alike.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as os from 'node:os';
import { Command } from 'commander';
import { tensor } from '../engine/graph/ir';
import { initParams, mulberry32 } from '../engine/models/blocks';
import { GptConfigSchema, gptParams, type GptConfig } from '../engine/models/gpt';
import { estimateTrainStepBytes, gib } from '../engine/models/memory';
import { OptimConfigSchema } from '../engine/optim';
import { ActivationCheckpointingSchema, type ActivationCheckpointing } from '../engine/train/checkpointing';
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
// gpt2 (gpt2-small at its full context, batch 1) is for the checkpointing comparison only.
const SIZES: Record<string, Size> = {
  params: { model: { vocab_size: 8192, block_size: 64, n_layer: 6, n_head: 8, n_embd: 512 }, batch: 4, context: 64, optimizer: 'adamw' },
  sgd: { model: { vocab_size: 8192, block_size: 64, n_layer: 6, n_head: 8, n_embd: 512 }, batch: 4, context: 64, optimizer: 'sgd' },
  activations: { model: { vocab_size: 256, block_size: 512, n_layer: 4, n_head: 4, n_embd: 128 }, batch: 16, context: 512, optimizer: 'adamw' },
  deep: { model: { vocab_size: 259, block_size: 32, n_layer: 200, n_head: 2, n_embd: 32 }, batch: 8, context: 32, optimizer: 'adamw' },
  tiny: { model: { vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, n_embd: 64 }, batch: 8, context: 64, optimizer: 'adamw' },
  medium: { model: { vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 }, batch: 8, context: 256, optimizer: 'adamw' },
  // bench step's ctx1024 size, explicit and fused attention (GPT `attention`): the (B, nh, T, T) terms dominate.
  ctx1024: { model: { vocab_size: 256, block_size: 1024, n_layer: 6, n_head: 12, n_embd: 384 }, batch: 2, context: 1024, optimizer: 'adamw' },
  'ctx1024-fused': { model: { vocab_size: 256, block_size: 1024, n_layer: 6, n_head: 12, n_embd: 384, attention: 'fused' }, batch: 2, context: 1024, optimizer: 'adamw' },
  'medium-fused': { model: { vocab_size: 256, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384, attention: 'fused' }, batch: 8, context: 256, optimizer: 'adamw' },
  gpt2: { model: { vocab_size: 50257, block_size: 1024, n_layer: 12, n_head: 12, n_embd: 768 }, batch: 1, context: 1024, optimizer: 'adamw' },
  llama: {
    model: { vocab_size: 2048, block_size: 128, n_layer: 4, n_head: 8, n_embd: 256, pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false, bias: false },
    batch: 8,
    context: 128,
    optimizer: 'adamw',
  },
};

const STEPS = Number(process.env.BENCH_MEMORY_STEPS ?? 4);
const kib = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;

const ESTIMATE_SIZES = Object.keys(SIZES).filter((n) => n !== 'gpt2');

/** ORT's memory pattern and CPU arena for the step session: both on (ORT's default) or both off (a spec's `ortMemory: { pattern: false, arena: false }`). */
let ortMemory: 'default' | 'off' = 'default';
const ortSession = () => ({ intraOpThreads: 2, ...(ortMemory === 'off' ? { memPattern: false, cpuArena: false } : {}) });

async function child(name: string, ac: ActivationCheckpointing): Promise<void> {
  const s = SIZES[name];
  const cfg = GptConfigSchema.parse(s.model);
  const optim = OptimConfigSchema.parse({ optimizer: s.optimizer === 'adamw' ? { kind: 'adamw', lr: 1e-3 } : { kind: 'sgd', lr: 1e-2 } });
  const base = kib('VmRSS');
  const compiled = await compileLmTrainStep({ model: cfg, optim, batchSize: s.batch, contextLength: s.context, activationCheckpointing: ac }, ortSession(), { memoryLimitBytes: Infinity });
  const afterCompile = kib('VmRSS');
  const weights = Object.fromEntries(initParams(gptParams(cfg), 1));
  const runner = compiled.runner({ step: 0, params: weights, state: zeroState(compiled.step) });
  const r = mulberry32(3);
  const ids = () => tensor('int64', [s.batch, s.context], Array.from({ length: s.batch * s.context }, () => Math.floor(r() * cfg.vocab_size)));
  const afterLoad = kib('VmRSS');
  let peakSampled = 0;
  const afterRuns: number[] = [];
  const stepS: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    const batch = { tokens: ids(), targets: ids() };
    const t0 = performance.now();
    const m = await runner.run(batch);
    stepS.push((performance.now() - t0) / 1000);
    losses.push(m.loss);
    afterRuns.push(kib('VmRSS'));
    peakSampled = Math.max(peakSampled, process.memoryUsage().rss);
  }
  const est = estimateTrainStepBytes(cfg, s.batch, s.context, optim.optimizer, { activationCheckpointing: ac, ortMemory: { pattern: ortMemory === 'default', arena: ortMemory === 'default' } });
  console.log(JSON.stringify({ name, ac, base, afterCompile, afterLoad, afterRuns, hwm: kib('VmHWM'), peakSampled, stepS, losses, estimate: est }));
}

/**
 * Step time of off vs block in one process: both sessions built, their steps alternating (which
 * goes first alternates too) on the same batches, so load on the machine hits both alike.
 */
async function pairedChild(name: string, pairs: number): Promise<void> {
  const s = SIZES[name];
  const cfg = GptConfigSchema.parse(s.model);
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } });
  const weights = Object.fromEntries(initParams(gptParams(cfg), 1));
  const runners = [];
  for (const ac of ['off', 'block'] as const) {
    const compiled = await compileLmTrainStep({ model: cfg, optim, batchSize: s.batch, contextLength: s.context, activationCheckpointing: ac }, { intraOpThreads: 2 }, { memoryLimitBytes: Infinity });
    runners.push(compiled.runner({ step: 0, params: weights, state: zeroState(compiled.step) }));
  }
  const r = mulberry32(3);
  const ids = () => tensor('int64', [s.batch, s.context], Array.from({ length: s.batch * s.context }, () => Math.floor(r() * cfg.vocab_size)));
  const times: [number, number][] = [];
  const losses: [number, number][] = [];
  for (let i = 0; i < pairs; i++) {
    const batch = { tokens: ids(), targets: ids() };
    const t: [number, number] = [0, 0];
    const l: [number, number] = [0, 0];
    for (const k of i % 2 ? [1, 0] : [0, 1]) {
      const t0 = performance.now();
      l[k] = (await runners[k].run(batch)).loss;
      t[k] = (performance.now() - t0) / 1000;
    }
    times.push(t);
    losses.push(l);
  }
  console.log(JSON.stringify({ name, times, losses }));
}

interface ChildResult {
  name: string;
  base: number;
  afterCompile: number;
  hwm: number;
  stepS: number[];
  losses: number[];
  estimate: ReturnType<typeof estimateTrainStepBytes>;
}

function runChild(name: string, ac: ActivationCheckpointing): ChildResult {
  const r = spawnSync(process.execPath, [...process.execArgv, __filename, '--child', name, '--ac', String(ac), '--ort-memory', ortMemory], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`bench memory ${name} (activationCheckpointing ${ac}): ${r.stderr || `exit ${r.status} ${r.signal ?? ''}`}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
const load = () => os.loadavg().map((x) => x.toFixed(1)).join(' ');

/** off vs block at each size, alternating processes, `rounds` of each. */
function checkpointingComparison(sizes: string[], rounds: number, pairsAt: Set<string>, pairs: number): void {
  console.log(`activation checkpointing: ${new Date().toISOString()}, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, ${STEPS} steps per process (the first left out of the time), ${rounds} process(es) per configuration`);
  const all: Record<string, unknown>[] = [];
  for (const name of sizes) {
    const s = SIZES[name];
    if (!s) throw new Error(`bench memory: unknown size ${name} (have ${Object.keys(SIZES).join(', ')})`);
    const pairsHere = pairsAt.has(name) ? pairs : 0;
    const runs: Record<'off' | 'block', ChildResult[]> = { off: [], block: [] };
    const loads: string[] = [load()];
    for (let i = 0; i < rounds; i++) {
      for (const ac of ['off', 'block'] as const) {
        runs[ac].push(runChild(name, ac));
        loads.push(load());
      }
    }
    const peak = (ac: 'off' | 'block') => Math.min(...runs[ac].map((r) => r.hwm));
    const step = (ac: 'off' | 'block') => Math.min(...runs[ac].map((r) => median(r.stepS.slice(1))));
    const [a, b] = [peak('off'), peak('block')];
    let [ta, tb] = [step('off'), step('block')];
    let timing = 'separate processes, the smallest median of each';
    if (pairsHere > 0) {
      const r = spawnSync(process.execPath, [...process.execArgv, __filename, '--paired-child', name, '--pairs', String(pairsHere)], { encoding: 'utf8', maxBuffer: 1 << 26 });
      if (r.status !== 0) throw new Error(`bench memory ${name} (paired timing): ${r.stderr || `exit ${r.status} ${r.signal ?? ''}`}`);
      const p = JSON.parse(r.stdout.trim().split('\n').pop()!) as { times: [number, number][]; losses: [number, number][] };
      loads.push(load());
      const kept = p.times.slice(1); // the first pair allocates
      const ratio = median(kept.map(([a, b]) => b / a));
      ta = median(kept.map(([a]) => a));
      tb = ta * ratio;
      timing = `one process, ${kept.length} alternating pairs of steps, the median of block/off ratios; losses ${p.losses.every(([a, b]) => a === b) ? 'identical' : 'DIFFER'}`;
      all.push({ name, paired: p });
    }
    console.log(
      `${name} (${s.model.n_layer}L×${s.model.n_embd}, V ${s.model.vocab_size}, B ${s.batch} × T ${s.context}): activation checkpointing: peak RSS ${mib(a)} MiB → ${mib(b)} MiB (${((100 * (b - a)) / a).toFixed(0).replace('-', '−')}%), step time ${tb >= ta ? '+' : '−'}${Math.abs((100 * (tb - ta)) / ta).toFixed(0)}% (${ta.toFixed(2)} s → ${tb.toFixed(2)} s; ${timing}); load average (1 min) ${loads.map((l) => l.split(' ')[0]).join(', ')}`,
    );
    all.push({ name, off: runs.off, block: runs.block, loads });
  }
  console.log(JSON.stringify(all));
}

function parent(sizes: string[], ac: ActivationCheckpointing): void {
  const rows = [];
  for (const name of sizes) {
    const m = runChild(name, ac);
    const s = SIZES[name];
    rows.push({
      size: `${name}: ${s.model.n_layer}L×${s.model.n_embd}, V ${s.model.vocab_size}, B ${s.batch} × T ${s.context}, ${s.optimizer}${ac === 'off' ? '' : `, checkpointing ${ac}`}${ortMemory === 'off' ? ', ORT pattern + arena off' : ''}`,
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

const list = (v: string) => (v === '' || v === 'none' ? [] : v.split(','));

const program = new Command('memory')
  .option('--sizes <list>', `estimate vs measured at these sizes, comma-separated (none: skip): ${ESTIMATE_SIZES.join(', ')}`, ESTIMATE_SIZES.join(','))
  .option('--checkpointing <list>', `activation checkpointing off vs block at these sizes (none: skip): ${Object.keys(SIZES).join(', ')}`, 'medium,gpt2')
  .option('--rounds <n>', 'processes per configuration in the checkpointing comparison', '2')
  .option('--paired <list>', 'sizes whose step time is also measured with both steps in one process, alternating (gpt2 would need both sessions in memory at once)', 'medium')
  .option('--pairs <n>', 'alternating pairs of steps in the paired timing', '8')
  .option('--child <size>', 'internal: measure one size in this process')
  .option('--paired-child <size>', 'internal: time off and block in this process')
  .option('--ac <setting>', 'activationCheckpointing of the estimate-vs-measured table (off, block or a number of blocks)', 'off')
  .option('--ort-memory <mode>', "ORT's memory pattern and CPU arena on the step session: default (both on) or off (both off, `ortMemory: { pattern: false, arena: false }`)", 'default')
  .action(async (o: { sizes: string; checkpointing: string; rounds: string; paired: string; pairs: string; pairedChild?: string; child?: string; ac: string; ortMemory: string }) => {
    if (o.ortMemory !== 'default' && o.ortMemory !== 'off') throw new Error(`--ort-memory: default or off, got ${o.ortMemory}`);
    ortMemory = o.ortMemory;
    const ac = ActivationCheckpointingSchema.parse(/^\d+$/.test(o.ac) ? Number(o.ac) : o.ac);
    if (o.pairedChild) return pairedChild(o.pairedChild, Number(o.pairs));
    if (o.child) return child(o.child, ac);
    if (list(o.sizes).length) parent(list(o.sizes), ac);
    if (list(o.checkpointing).length) checkpointingComparison(list(o.checkpointing), Number(o.rounds), new Set(list(o.paired)), Number(o.pairs));
  });
program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
