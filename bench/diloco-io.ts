// The per-round I/O of a DiLoCo round at a real size, without the training compute (issue 14): what
// a shard moves (reading the global weights it does not hold, committing its result: weights and
// AdamW moments) and the whole aggregateRound activity (reading W shard results, the outer step,
// committing the next global checkpoint), on a real local S3 server, with the bytes moved and the
// aggregator's peak RSS. The shard results are the global weights plus a seeded perturbation
// (values do not change the cost). aggregateRound runs in a fresh child process per tree given, so
// two checkouts (before/after a change) are measured on the same stored checkpoints; the child
// first reads the global checkpoint into its tensor cache, as the CPU worker that committed it
// holds it, then resets its peak RSS counter, so the peak is the aggregation's own.
//
//   npm run bench -- diloco-io [--size gpt2|medium] [--workers 2] [--s3 s3rver|versitygw]
//        [--trees <checkout>,<checkout>]   (default: this checkout)
//   → a table on stdout, bench/out/diloco-io-<size>-w<W>.json

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { commitCheckpoint, readCheckpoint, toTensors, type CheckpointRef } from '../artifacts/checkpoints';
import { keys } from '../artifacts/keys';
import { explicitGptConfig, gptParams } from '../engine/models/gpt';
import { initParams } from '../engine/models/blocks';
import { freePort } from '../infra/ports';
import { LOCAL_S3_CREDENTIALS } from '../infra/s3server';
import { tsCommand } from '../infra/stack-spawn';
import { ArtifactStore, type S3Settings } from '../infra/store';
import { ensureVersitygw, versitygwCommand, versitygwEndpoint, versitygwHealthy } from '../infra/versitygw';
import { parseTrainingSpec, type TrainingSpecInput } from '../spec/training';

const SIZES = {
  medium: { vocab_size: 259, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 },
  gpt2: {},
} as const;
const BUCKET = 'bench';
const RUN = 'bench-io';

function vm(field: 'VmRSS' | 'VmHWM', pid: number | 'self' = 'self'): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024;
}

async function startS3(kind: string, dir: string): Promise<{ child: ChildProcess; settings: S3Settings }> {
  const port = await freePort();
  const endpoint = versitygwEndpoint('127.0.0.1', port);
  const settings: S3Settings = { endpoint, region: 'us-east-1', bucket: BUCKET, ...LOCAL_S3_CREDENTIALS, forcePathStyle: true };
  let child: ChildProcess;
  if (kind === 'versitygw') {
    const cmd = versitygwCommand(await ensureVersitygw(), { dir, host: '127.0.0.1', port, credentials: LOCAL_S3_CREDENTIALS, region: 'us-east-1' });
    child = spawn(cmd.command, cmd.args, { env: { ...process.env, ...cmd.env }, stdio: 'ignore' });
    while (!(await versitygwHealthy(endpoint, 500)).ok) await new Promise((r) => setTimeout(r, 50));
    const store = new ArtifactStore(settings);
    await store.ensureBucket();
    store.close();
  } else if (kind === 's3rver') {
    const cmd = tsCommand('infra/s3server.ts', ['--dir', dir, '--port', String(port), '--bucket', BUCKET]);
    child = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('s3 ready') && resolve());
      child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}`)));
    });
  } else {
    throw new Error(`--s3: unknown "${kind}" (s3rver, versitygw)`);
  }
  return { child, settings };
}

/** The spec the activities get: gpt2-small's preset with the size's config, W workers, Nesterov 0.7/0.9. */
function specInput(size: keyof typeof SIZES, W: number): TrainingSpecInput {
  return {
    name: `bench-diloco-io-${size}`,
    model: { preset: 'gpt2-small', config: { ...SIZES[size], block_size: 256 } },
    dataset: { name: 'brown-bench', corpus: { kind: 'brown', categories: ['news'] }, valFraction: 0.1 },
    workers: W,
    rounds: 2,
    innerSteps: 10,
    batchSize: 1,
    contextLength: 128,
    outer: { kind: 'nesterov', lr: 0.7, momentum: 0.9 },
  };
}

async function parent() {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: 'gpt2' },
      workers: { type: 'string', default: '2' },
      s3: { type: 'string', default: 's3rver' },
      trees: { type: 'string', default: path.resolve(__dirname, '..') },
    },
  });
  const size = values.size as keyof typeof SIZES;
  if (!(size in SIZES)) throw new Error(`--size: unknown "${values.size}" (${Object.keys(SIZES).join(', ')})`);
  const W = Number(values.workers);
  const spec = parseTrainingSpec(specInput(size, W));
  if (spec.model.family !== 'gpt') throw new Error('bench/diloco-io builds a GPT');
  const cfg = spec.model.config;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-bench-io-'));
  const { child: server, settings } = await startS3(values.s3, dir);
  const load0 = os.loadavg();
  const rows: Record<string, unknown>[] = [];
  try {
    // Built in a function of its own, so the weights it generates are garbage before the children run.
    const { g, shards, setup } = await (async () => {
      const store = new ArtifactStore(settings);
      const specs = gptParams(cfg);
      const shapes = new Map(specs.map((s) => [s.name, s.shape]));
      const global = initParams(specs, spec.seed);
      const values0 = [...global.values()].reduce((n, a) => n + a.length, 0);
      const state = (round: number) => ({ family: 'gpt' as const, modelConfig: explicitGptConfig(cfg), runConfig: { name: spec.name, seed: spec.seed, outer: spec.outer }, step: round * spec.innerSteps, round, bestValLoss: null, dataCursor: null, rng: [] });
      const scaled = (s: number, k: number) => new Map([...global].map(([n, a]) => [n, a.map((x, i) => x * s + (((i * 2654435761 + k * 97) >>> 0) % 1000) * 1e-7)]));
      // The global checkpoint r1 (weights + outer momentum), as round 0's aggregation commits it.
      const tG = { packMs: 0, uploadMs: 0, bytes: 0 };
      const g = await commitCheckpoint(store, keys.global(RUN, 1), { weights: toTensors(global, shapes), optimizer: toTensors(scaled(1e-3, 0), shapes), state: state(1) }, () => ({}), undefined, { timing: tG });
      // What a shard reads at the start of a round when its process does not hold the global weights.
      const tR = performance.now();
      await readCheckpoint(store, g.prefix, { weightsOnly: true });
      const shardReadMs = performance.now() - tR;
      // Each shard's result: weights and AdamW moments (m, v), committed as trainShard commits it.
      const shards: CheckpointRef[] = [];
      const tS = { packMs: 0, uploadMs: 0, bytes: 0 };
      for (let k = 0; k < W; k++) {
        const m = scaled(1e-4, k + 10);
        const v = scaled(1e-6, k + 20);
        const optimizer = new Map<string, Float32Array>();
        for (const n of global.keys()) optimizer.set(`${n}.m`, m.get(n)!).set(`${n}.v`, v.get(n)!);
        const oShapes = new Map([...optimizer.keys()].map((n) => [n, shapes.get(n.slice(0, -2))!]));
        const ref = await commitCheckpoint(store, keys.shardFinal(RUN, k, 1), { weights: toTensors(scaled(1, k + 1), shapes), optimizer: toTensors(optimizer, oShapes), state: state(1) }, () => ({}), undefined, { timing: tS });
        shards.push(ref);
      }
      store.close();
      const setup = { params: values0, globalCommit: tG, shardCommits: { packMs: tS.packMs / W, uploadMs: tS.uploadMs / W, bytes: tS.bytes / W }, shardReadGlobalMs: shardReadMs };
      console.log(`setup: ${(values0 / 1e6).toFixed(1)} M parameters; a shard commits ${(setup.shardCommits.bytes / 1e6).toFixed(0)} MB in ${((setup.shardCommits.packMs + setup.shardCommits.uploadMs) / 1000).toFixed(2)} s (pack+hash ${(setup.shardCommits.packMs / 1000).toFixed(2)} s); reading the global weights takes ${(shardReadMs / 1000).toFixed(2)} s; the global commit ${(tG.bytes / 1e6).toFixed(0)} MB in ${((tG.packMs + tG.uploadMs) / 1000).toFixed(2)} s; load ${os.loadavg()[0].toFixed(1)}`);
      return { g, shards, setup };
    })();
    const input = { runId: RUN, spec, round: 1, global: g, shards, bestValLoss: null };
    const inputFile = path.join(dir, 'input.json');
    fs.writeFileSync(inputFile, JSON.stringify({ settings, input }));
    for (const tree of values.trees.split(',')) {
      await new Promise((r) => setTimeout(r, 1000));
      const cleanup = new ArtifactStore(settings);
      await cleanup.deletePrefix(`${keys.global(RUN, 2)}/`);
      cleanup.close();
      const loadBefore = os.loadavg()[0];
      const r = spawnSync(process.execPath, ['-r', require.resolve('tsx/cjs'), __filename, '--child', tree, inputFile], { encoding: 'utf8', maxBuffer: 1 << 24 });
      if (r.status !== 0) throw new Error(`aggregateRound in ${tree} failed:\n${r.stderr}`);
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
      rows.push({ tree, W, s3: values.s3, ...out, loadavg1: `${loadBefore.toFixed(1)}–${os.loadavg()[0].toFixed(1)}` });
    }
    console.table(rows);
    fs.mkdirSync(path.join(__dirname, 'out'), { recursive: true });
    fs.writeFileSync(path.join(__dirname, 'out', `diloco-io-${size}-w${W}.json`), JSON.stringify({ size, W, s3: values.s3, setup, rows, cpu: os.cpus()[0]?.model, loadavgBefore: load0, loadavgAfter: os.loadavg(), at: new Date().toISOString() }, null, 2));
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** In a fresh process: aggregateRound of `tree` once, with its time, bytes and peak RSS. */
async function child(tree: string, inputFile: string) {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { createTrainingActivities } = require(path.join(tree, 'activities/training')) as typeof import('../activities/training');
  const { ArtifactStore: Store } = require(path.join(tree, 'infra/store')) as typeof import('../infra/store');
  const { readCheckpoint: read } = require(path.join(tree, 'artifacts/checkpoints')) as typeof import('../artifacts/checkpoints');
  const { tensorCache } = require(path.join(tree, 'artifacts/tensor-cache')) as typeof import('../artifacts/tensor-cache');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const { MockActivityEnvironment } = await import('@temporalio/testing');
  const { settings, input } = JSON.parse(fs.readFileSync(inputFile, 'utf8')) as { settings: S3Settings; input: Parameters<ReturnType<typeof createTrainingActivities>['aggregateRound']>[0] };
  const store = new Store(settings);
  await read(store, input.global.prefix, { cache: tensorCache }); // the CPU worker holds the global checkpoint it committed
  await new Promise((r) => setTimeout(r, 200));
  const rssBefore = vm('VmRSS');
  fs.writeFileSync('/proc/self/clear_refs', '5'); // resets VmHWM to the current RSS
  const acts = createTrainingActivities({ store, ep: 'cpu', deviceId: 0 });
  const t0 = performance.now();
  const r = (await new MockActivityEnvironment().run(acts.aggregateRound, input)) as Awaited<ReturnType<typeof acts.aggregateRound>>;
  const wallMs = performance.now() - t0;
  const peak = vm('VmHWM');
  store.close();
  console.log(JSON.stringify({ wallS: +(wallMs / 1000).toFixed(2), ...Object.fromEntries(Object.entries(r.io ?? {}).map(([k, v]) => [k.replace(/Ms$/, 'S'), k.startsWith('bytes') ? `${(v / 1e6).toFixed(0)} MB` : +(v / 1000).toFixed(2)])), rssBeforeMiB: Math.round(rssBefore), peakRssMiB: Math.round(peak), peakAboveBeforeMiB: Math.round(peak - rssBefore), sha256: r.checkpoint.files['model.safetensors']?.sha256.slice(0, 16) }));
}

const argv = process.argv.slice(2);
(argv[0] === '--child' ? child(argv[1]!, argv[2]!) : parent()).catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
