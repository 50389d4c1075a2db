// DiLoCo orchestration cost (issue 14): one W-worker run on the real local stack (Temporal dev
// server, S3 server, supervised GPU-pool and CPU-pool worker processes) in a temp folder on free
// ports, then the same inner steps directly in the engine in this process (the compute-only
// baseline, re-measured in the same run). Prints, per round, where the time outside the training
// loops went (read from the activities' results in the workflow history) and the bytes moved, and
//   orchestration share: (rounds wall − the workers' training loops) / rounds wall
// over the steady rounds (round 1 also compiles the step and fills the worker's caches), and the
// same against the engine-only rounds timed after the run (--no-baseline skips them).
//
//   npm run bench -- diloco [--size medium|gpt2-small|gpt2] [--workers 2] [--rounds 4] [--H 20]
//        [--batch 4] [--context 256] [--compression none|fp16|int8] [--s3 versitygw|s3rver]
//   → tables on stdout, bench/out/diloco-<size>.json

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { defaultPayloadConverter } from '@temporalio/common';
import type { AggregateResult, TrainShardResult } from '../activities/training';
import { ShardCache } from '../artifacts/datasets';
import { initParams } from '../engine/models/blocks';
import { gptParams } from '../engine/models/gpt';
import { compileLmTrainStep, runShard, zeroState } from '../engine/train/shard';
import { loadConfig } from '../infra/config';
import { freePort } from '../infra/ports';
import { stackDown, stackUp } from '../infra/stack';
import { readState } from '../infra/stack-state';
import { ArtifactStore } from '../infra/store';
import { startTraining, waitTraining } from '../sdk/cli/run-commands';
import { connectTemporal } from '../sdk/client';
import { parseTrainingSpec, type TrainingSpecInput } from '../spec/training';

const SIZES = {
  medium: { preset: 'gpt2-small', config: { vocab_size: 259, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 } },
  'gpt2-small': { preset: 'gpt2-small', config: {} },
  gpt2: { preset: 'gpt2-small', config: {} },
} as const;

/** Peak resident memory (VmHWM, MiB) of each worker process of the stack, read before it stops. */
function workerPeaks(stateDir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [role, w] of Object.entries(readState(stateDir)?.workers ?? {})) {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${w.pid}/status`, 'utf8'));
    if (m) out[role] = Math.round(Number(m[1]) / 1024);
  }
  return out;
}

interface ActivityTimes {
  type: string;
  scheduled: number;
  started: number;
  completed: number;
  result: unknown;
}

/** Length of the union of [start, end] intervals, ms. */
function unionMs(spans: number[][]): number {
  let total = 0;
  let end = -Infinity;
  for (const [a, b] of [...spans].sort((x, y) => x[0]! - y[0]!)) {
    if (b! <= end) continue;
    total += b! - Math.max(a!, end);
    end = b!;
  }
  return total;
}

const ms = (t: unknown) => {
  const ts = t as { seconds?: { toNumber(): number } | number; nanos?: number } | null | undefined;
  const s = typeof ts?.seconds === 'number' ? ts.seconds : (ts?.seconds?.toNumber() ?? 0);
  return s * 1000 + (ts?.nanos ?? 0) / 1e6;
};

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: 'medium' },
      workers: { type: 'string', default: '2' },
      rounds: { type: 'string', default: '4' },
      H: { type: 'string', default: '20' },
      batch: { type: 'string', default: '4' },
      context: { type: 'string', default: '256' },
      compression: { type: 'string', default: 'none' },
      threads: { type: 'string', default: '1' },
      s3: { type: 'string', default: 'versitygw' },
      'no-baseline': { type: 'boolean', default: false },
    },
  });
  const size = values.size as keyof typeof SIZES;
  if (!(size in SIZES)) throw new Error(`--size: unknown "${values.size}" (${Object.keys(SIZES).join(', ')})`);
  const [W, rounds, H, B, T, threads] = [values.workers, values.rounds, values.H, values.batch, values.context, values.threads].map(Number);
  const input: TrainingSpecInput = {
    name: `bench-diloco-${size}`,
    model: { preset: SIZES[size].preset, config: { ...SIZES[size].config, block_size: Math.max(T, 64) } },
    dataset: { name: 'brown-bench', corpus: { kind: 'brown', categories: ['news', 'humor', 'romance'] }, valFraction: 0.1 },
    workers: W,
    rounds,
    innerSteps: H,
    batchSize: B,
    contextLength: T,
    optimizer: { optimizer: { kind: 'adamw', lr: 1e-3, weight_decay: 0.01 }, grad_clip: 1 },
    outer: { kind: 'nesterov', lr: 0.7, momentum: 0.9, ...(values.compression === 'none' ? {} : { compression: values.compression as 'fp16' | 'int8' }) },
    evalEvery: 1000, // once, after the last round: evaluation is not part of a round
    evalBatches: 2,
    checkpoint: { everySteps: 0, everySeconds: 0 }, // no in-round snapshots: the fixed cost only
    threads,
    roundsPerRun: 1000,
    shardTimeoutMinutes: 120,
    heartbeatTimeoutSeconds: 600,
  };
  const spec = parseTrainingSpec(input);
  if (spec.model.family !== 'gpt') throw new Error('bench/diloco trains a GPT');
  const gptConfig = spec.model.config;

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-bench-'));
  const env = { TRUTHGPT_S3_SERVER: values.s3, TRUTHGPT_STATE_DIR: dir, TRUTHGPT_TEMPORAL_PORT: String(await freePort()), TRUTHGPT_UI_PORT: String(await freePort()), TRUTHGPT_S3_PORT: String(await freePort()) };
  const config = loadConfig(env);
  let r;
  let acts: ActivityTimes[] = [];
  let shardIds: (Uint16Array | Uint32Array)[] = [];
  let peakRssMiB: Record<string, number> = {};
  const load0 = os.loadavg();
  try {
    await stackUp(config, { timeoutMs: 240_000 });
    const client = await connectTemporal(config);
    try {
      const id = await startTraining(client, input, { workflowId: `bench-diloco-${size}-${Date.now()}` });
      r = await waitTraining(client, id);
      if (r.status !== 'completed') throw new Error(`run failed: ${JSON.stringify(r.error)}`);
      const history = await client.workflow.getHandle(id).fetchHistory();
      const byId = new Map<string, ActivityTimes>();
      for (const e of history.events ?? []) {
        const eid = String(e.eventId);
        if (e.activityTaskScheduledEventAttributes) byId.set(eid, { type: e.activityTaskScheduledEventAttributes.activityType!.name!, scheduled: ms(e.eventTime), started: NaN, completed: NaN, result: null });
        const st = e.activityTaskStartedEventAttributes;
        if (st) byId.get(String(st.scheduledEventId))!.started = ms(e.eventTime);
        const done = e.activityTaskCompletedEventAttributes;
        if (done) {
          const a = byId.get(String(done.scheduledEventId))!;
          a.completed = ms(e.eventTime);
          a.result = defaultPayloadConverter.fromPayload(done.result!.payloads![0]!);
        }
      }
      acts = [...byId.values()];
      const store = new ArtifactStore(config.s3);
      const cache = new ShardCache();
      shardIds = await Promise.all(r.dataset.train.map((t) => cache.get(store, r!.dataset, t.file)));
      store.close();
      peakRssMiB = workerPeaks(dir);
    } finally {
      await client.connection.close();
    }
  } finally {
    await stackDown(config).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // Per round: the shards (one after another on the one GPU-pool worker) and the aggregation.
  const shards = acts.filter((a) => a.type === 'trainShard');
  const aggs = acts.filter((a) => a.type === 'aggregateRound');
  const rows = r.trainHistory.map((p, i) => {
    const sh = shards.slice(i * W, (i + 1) * W);
    const sr = sh.map((a) => a.result as TrainShardResult);
    // The round's last shard may have aggregated in its own process (trainShard's `aggregate`):
    // then no aggregateRound activity ran, and its time is inside that shard's activity.
    const inShard = sr.find((x) => x.aggregate)?.aggregate;
    const ag = inShard ? null : aggs.shift()!;
    const ar = inShard ?? (ag!.result as AggregateResult);
    const sum = (f: (x: TrainShardResult) => number) => sr.reduce((n, x) => n + f(x), 0);
    const shardActivityMs = sh.reduce((n, a) => n + (a.completed - a.started), 0);
    const aggActivityMs = ag ? ag.completed - ag.started : 0;
    // A shard that uploads its result while the next one trains (activities/device.ts) overlaps
    // it: "dispatch" is the time no activity of the round ran, "overlapped" what ran beside another.
    const busyMs = unionMs([...sh, ...(ag ? [ag] : [])].map((a) => [a.started, a.completed]));
    const trainMs = sum((x) => x.trainMs);
    const io = { read: sum((x) => x.io!.readMs) + ar.io!.readMs, pack: sum((x) => x.io!.packMs) + ar.io!.packMs, upload: sum((x) => x.io!.uploadMs) + ar.io!.uploadMs };
    return {
      round: p.round,
      roundMs: p.roundMs,
      trainMs,
      dispatchMs: p.roundMs - busyMs,
      overlappedMs: shardActivityMs + aggActivityMs - busyMs,
      readMs: io.read,
      packMs: io.pack,
      uploadMs: io.upload,
      outerMs: ar.io!.outerMs,
      otherInActivitiesMs: shardActivityMs + aggActivityMs - trainMs - io.read - io.pack - io.upload - ar.io!.outerMs,
      MBread: (sum((x) => x.io!.bytesRead) + ar.io!.bytesRead) / 1e6,
      MBwritten: (sum((x) => x.io!.bytesWritten) + ar.io!.bytesWritten) / 1e6,
    };
  });

  // The compute-only baseline: the same steady rounds' steps, directly in the engine.
  const baselineRounds: number[] = [];
  if (!values['no-baseline']) await baseline();
  async function baseline() {
  const c = await compileLmTrainStep({ model: gptConfig, optim: spec.optimizer, batchSize: B, contextLength: T }, { intraOpThreads: threads });
  const params = Object.fromEntries(initParams(gptParams(gptConfig), spec.seed));
  const runners = shardIds.map(() => c.runner({ step: 0, params, state: zeroState(c.step) }));
  for (let round = 0; round < rounds; round++) {
    const t0 = performance.now();
    for (let k = 0; k < W; k++) await runShard({ runner: runners[k]!, ids: shardIds[k]!, seed: spec.seed, shard: k, batchSize: B, contextLength: T, endStep: (round + 1) * H });
    baselineRounds.push(performance.now() - t0);
  }
  }
  const steady = rows.slice(1);
  const wall = steady.reduce((n, x) => n + x.roundMs, 0);
  // Two compute figures: the workers' own training loops in the same rounds (same moment, same
  // load: the robust one on a shared machine) and the separately timed engine-only rounds.
  const loops = steady.reduce((n, x) => n + x.trainMs, 0);
  const compute = baselineRounds.slice(1).reduce((n, x) => n + x, 0);
  const share = (wall - loops) / wall;
  const shareVsBaseline = baselineRounds.length ? (wall - compute) / wall : NaN;
  console.table(rows);
  console.table([{ s3: values.s3, size, W, H, batchPerWorker: B, context: T, compression: values.compression, steadyRounds: steady.length, roundsWallS: wall / 1000, computeOnlyS: compute / 1000, trainLoopsInWorkersS: steady.reduce((n, x) => n + x.trainMs, 0) / 1000, loadavg1: os.loadavg()[0] }]);
  const perRound = (f: (x: (typeof rows)[number]) => number) => (steady.reduce((n, x) => n + f(x), 0) / steady.length / 1000).toFixed(2);
  console.log(`fixed cost per steady round, s: ${perRound((x) => x.roundMs - x.trainMs)} = dispatch ${perRound((x) => x.dispatchMs)} + in activities ${perRound((x) => x.roundMs - x.trainMs - x.dispatchMs)} (of their ${perRound((x) => x.readMs + x.packMs + x.uploadMs + x.outerMs + x.otherInActivitiesMs)} s outside the loops, ${perRound((x) => x.overlappedMs)} s ran beside another shard)`);
  console.log(`outside the loops per steady round, s: dispatch ${perRound((x) => x.dispatchMs)}, reads ${perRound((x) => x.readMs)}, pack+hash ${perRound((x) => x.packMs)}, uploads ${perRound((x) => x.uploadMs)}, outer step ${perRound((x) => x.outerMs)}, other in activities ${perRound((x) => x.otherInActivitiesMs)}; MB read ${perRound((x) => x.MBread * 1000)}, written ${perRound((x) => x.MBwritten * 1000)}`);
  console.log(`peak RSS of the worker processes, MiB: ${JSON.stringify(peakRssMiB)}`);
  if (baselineRounds.length) console.log(`orchestration share against the engine-only rounds timed after the run: ${(shareVsBaseline * 100).toFixed(1)}%`);
  console.log(`orchestration share: ${(share * 100).toFixed(1)}%`);
  fs.mkdirSync(path.join(__dirname, 'out'), { recursive: true });
  fs.writeFileSync(
    path.join(__dirname, 'out', `diloco-${size}.json`),
    JSON.stringify({ s3: values.s3, size, W, rounds, H, B, T, compression: values.compression, rows, activities: acts.map((a) => ({ type: a.type, scheduledMs: a.scheduled - acts[0]!.scheduled, startedMs: a.started - acts[0]!.scheduled, completedMs: a.completed - acts[0]!.scheduled, io: (a.result as { io?: unknown } | null)?.io, trainMs: (a.result as { trainMs?: number } | null)?.trainMs })), baselineRounds, peakRssMiB, share, shareVsBaseline, cpu: os.cpus()[0]?.model, loadavgBefore: load0, loadavgAfter: os.loadavg(), at: new Date().toISOString() }, null, 2),
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
