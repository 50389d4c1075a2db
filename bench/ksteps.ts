// `npm run bench -- ksteps [--size small] [--ks 1,16]`: time per optimizer step with K steps per
// session.run (engine/train/ksteps.ts) against one run per step, on the same machine in the same
// process, and the per-run overhead the Loop removes.
//
// Each round runs the same steps (the same batches, from the same weights) once per K, back to
// back; the table reports each K's best round and the paired ratio of round medians against
// K = 1, the load-robust comparison on a shared machine. With per-step compute c and per-run
// overhead o, a round of N steps costs N·c + (N/K)·o, so two K give both: o and c are solved
// from the first and the last K. The final weights of every K are compared bit for bit.
// Besides wall time it records this process's CPU time (user + system) per step: on a machine
// shared with other jobs it moves far less with their load than wall time does (with one thread
// it is the work itself; with more, ORT's spinning pool threads add to it).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InferenceSession } from 'onnxruntime-node';
import { serializeModel } from '../engine/graph/onnx';
import { initParams } from '../engine/models/blocks';
import { gptParams, gptTrainLoss } from '../engine/models/gpt';
import { OptimConfigSchema } from '../engine/optim';
import { StepRunner } from '../engine/runtime';
import { stepGraph } from '../engine/train/ksteps';
import { buildTrainStep } from '../engine/train/step';
import { sessionOptions } from './ort';
import { BENCH_OPTIM, pairedRatio, sampleBatches, SIZES } from './step';

export interface KStepsBenchArgs {
  size: string;
  threads: number;
  ks: number[];
  /** Timed rounds; each runs `steps` steps per K. */
  rounds: number;
  /** Steps per round (a multiple of every K). */
  steps: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const DATA_FILE = require.resolve('typescript/lib/lib.es5.d.ts');

function cpuFlags(): string {
  try {
    const flags = /^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1].split(' ') ?? [];
    return ['avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'].filter((f) => flags.includes(f)).join(' ');
  } catch {
    return 'unknown';
  }
}

export async function benchKSteps(args: KStepsBenchArgs): Promise<void> {
  const size = SIZES[args.size];
  if (!size) throw new Error(`bench ksteps: unknown --size ${args.size} (have ${Object.keys(SIZES).join(', ')})`);
  const bad = args.ks.find((k) => !Number.isInteger(k) || k < 1 || args.steps % k !== 0);
  if (bad !== undefined) throw new Error(`bench ksteps: --ks ${bad} must be a positive integer dividing --steps ${args.steps}`);
  const cfg = size.model;
  const B = size.batch;
  const T = cfg.block_size;
  const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, OptimConfigSchema.parse(BENCH_OPTIM));
  const weights = Object.fromEntries(initParams(gptParams(cfg), 0));
  const runners = new Map<number, StepRunner>();
  for (const k of args.ks) {
    const session = await InferenceSession.create(serializeModel(stepGraph(step, k)).model, sessionOptions(args.threads));
    runners.set(k, new StepRunner(session, { params: weights, stepsPerRun: k }));
  }
  const batches = sampleBatches(fs.readFileSync(DATA_FILE), B, T, 1);
  const roundS = new Map<number, number[]>(args.ks.map((k) => [k, []]));
  const roundCpuS = new Map<number, number[]>(args.ks.map((k) => [k, []]));
  const loadavg: number[][] = [os.loadavg()];
  // Round 0 is the warmup (untimed): the first runs of a session pay its allocations.
  for (let r = 0; r <= args.rounds; r++) {
    const roundBatches = Array.from({ length: args.steps }, () => batches.next().value);
    const order = r % 2 ? [...args.ks].reverse() : args.ks;
    for (const k of order) {
      const runner = runners.get(k)!;
      const t0 = process.hrtime.bigint();
      const c0 = process.cpuUsage();
      for (let s = 0; s < args.steps; s += k) await runner.runSteps(roundBatches.slice(s, s + k));
      const perStep = Number(process.hrtime.bigint() - t0) / 1e9 / args.steps;
      const cpu = process.cpuUsage(c0);
      if (r > 0) {
        roundS.get(k)!.push(perStep);
        roundCpuS.get(k)!.push((cpu.user + cpu.system) / 1e6 / args.steps);
      }
    }
    loadavg.push(os.loadavg());
  }
  const ref = runners.get(args.ks[0])!.getParams();
  const identical = Object.fromEntries(
    args.ks.map((k) => {
      const p = runners.get(k)!.getParams();
      return [k, Object.keys(ref).every((n) => Buffer.from(ref[n].buffer, ref[n].byteOffset, ref[n].byteLength).equals(Buffer.from(p[n].buffer, p[n].byteOffset, p[n].byteLength)))];
    }),
  );
  // Bytes that cross the session boundary per run: every param and state tensor in and out.
  const crossing = 2 * 4 * [...Object.values(ref), ...Object.values(runners.get(args.ks[0])!.getState())].reduce((n, t) => n + t.length, 0);
  const rows = args.ks.map((k) => ({
    k,
    bestStepS: Math.min(...roundS.get(k)!),
    medianStepS: median(roundS.get(k)!),
    vsK1: pairedRatio(roundS.get(k)!, roundS.get(args.ks[0])!),
    bestCpuS: Math.min(...roundCpuS.get(k)!),
    medianCpuS: median(roundCpuS.get(k)!),
    bytesPerStep: crossing / k,
    bitIdentical: identical[k],
  }));
  const [lo, hi] = [rows[0], rows[rows.length - 1]];
  // t(K) = c + o/K per step: two K give o and c (best rounds: the least disturbed by other jobs).
  const split = (t: (r: (typeof rows)[number]) => number) => {
    const o = rows.length > 1 ? (t(lo) - t(hi)) / (1 / lo.k - 1 / hi.k) : NaN;
    return { overheadS: o, computeS: t(lo) - o / lo.k };
  };
  const { overheadS, computeS } = split((r) => r.bestStepS);
  const cpuSplit = split((r) => r.bestCpuS);
  const result = {
    date: new Date().toISOString(),
    machine: { cpu: os.cpus()[0]?.model, logicalCores: os.cpus().length, flags: cpuFlags(), node: process.version },
    loadavg,
    size: args.size,
    model: cfg,
    batch: B,
    threads: args.threads,
    stepsPerRound: args.steps,
    rounds: args.rounds,
    rows,
    perRunOverheadS: overheadS,
    perStepComputeS: computeS,
    cpu: { perRunOverheadS: cpuSplit.overheadS, perStepComputeS: cpuSplit.computeS },
    roundS: Object.fromEntries(roundS),
    roundCpuS: Object.fromEntries(roundCpuS),
    /** Peak RSS of this process: one K's memory when --ks names one K (a run per K compares them). */
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
  };
  console.log(`K steps per session.run: ${args.size} (${cfg.n_layer}L × ${cfg.n_embd}, batch ${B} × ${T}), ${args.threads} threads, ${args.rounds} rounds × ${args.steps} steps`);
  console.log(`load average (1 min) ${loadavg.map((l) => l[0].toFixed(1)).join(' → ')}`);
  const ms = (s: number) => (s * 1e3).toFixed(2);
  console.log('| K | wall ms/step, best | median | paired vs K=1 (median [p25, p75]) | CPU ms/step, best | median | MB across the session per step | weights = K=1 bit for bit |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|:---:|');
  for (const r of rows) {
    console.log(`| ${r.k} | ${ms(r.bestStepS)} | ${ms(r.medianStepS)} | ${r.vsK1.median.toFixed(3)} [${r.vsK1.p25.toFixed(3)}, ${r.vsK1.p75.toFixed(3)}] | ${ms(r.bestCpuS)} | ${ms(r.medianCpuS)} | ${(r.bytesPerStep / 1e6).toFixed(2)} | ${r.bitIdentical ? 'yes' : 'NO'} |`);
  }
  console.log(`peak RSS of this process ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB${args.ks.length > 1 ? ' (all K together: run one K per process to compare memory)' : ''}`);
  if (rows.length > 1) console.log(`per-run overhead o = ${ms(overheadS)} ms wall (${ms(cpuSplit.overheadS)} ms CPU), per-step compute c = ${ms(computeS)} ms wall (${ms(cpuSplit.computeS)} ms CPU); from the best rounds, t(K) = c + o/K at K = ${lo.k} and ${hi.k}`);
  for (const r of runners.values()) await r.release();
  const outDir = path.join(__dirname, 'out');
  fs.mkdirSync(outDir, { recursive: true });
  const outFile = path.join(outDir, `ksteps-${args.size}-${Date.now()}.json`);
  fs.writeFileSync(outFile, JSON.stringify(result, null, 1));
  console.log(`wrote ${path.relative(process.cwd(), outFile)}`);
}
