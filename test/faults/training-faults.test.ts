// Training survives crashes, proven with real processes: the local stack (`truthgpt up`: Temporal
// dev server on SQLite, S3 server, supervised worker processes) in a temp state folder on free
// ports, driven through the CLI as a user would.
//
//   1. An uninterrupted run gives the reference sha256 of every final checkpoint file.
//   2. The GPU-pool worker is SIGKILLed mid-trainShard; the supervisor restarts it, the activity
//      times out on its heartbeat, is retried on the new process and resumes from its last
//      snapshot. The final checkpoint is bit-identical to the reference.
//   3. The Temporal dev server is stopped mid-run and started again on its SQLite file; the run
//      completes, again bit-identical.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { keys } from '../../artifacts/keys';
import type { TrainShardResult } from '../../activities/training';
import { loadConfig, s3Settings, type Config } from '../../infra/config';
import { freePort } from '../../infra/ports';
import { stackDown, stackUp } from '../../infra/stack';
import type { StackStatus } from '../../infra/stack-health';
import { processRunning, readState, stopProcess } from '../../infra/stack-state';
import { ArtifactStore } from '../../infra/store';
import type { WaitOutcome } from '../../sdk/cli/run-commands';
import type { TrainingSpecInput } from '../../spec/training';

const exec = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let env: Record<string, string>;
let config: Config;
let store: ArtifactStore;
let specFile: string;
let reference: Extract<WaitOutcome, { status: 'completed' }>;

// One worker, two rounds of H steps with a snapshot every EVERY: each trainShard runs for seconds,
// long enough to kill it in the middle. The heartbeat timeout decides how soon a dead worker's
// shard is retried.
const H = 600;
const EVERY = 100;
const spec: TrainingSpecInput = {
  name: 'faults',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  workers: 1,
  rounds: 2,
  innerSteps: H,
  batchSize: 4,
  contextLength: 32,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 }, grad_clip: 1 },
  outer: { kind: 'average' },
  evalBatches: 4,
  checkpoint: { everySteps: EVERY, everySeconds: 0 },
  heartbeatTimeoutSeconds: 8,
};

async function cli(...args: string[]): Promise<string> {
  const { stdout } = await exec(process.execPath, [path.join(REPO, 'bin/truthgpt.js'), ...args], { cwd: REPO, env: { ...process.env, ...env }, maxBuffer: 16 << 20 });
  return stdout;
}

async function waitJson(id: string): Promise<Extract<WaitOutcome, { status: 'completed' }>> {
  let out: string;
  try {
    out = await cli('wait', id, '--json');
  } catch (err) {
    throw new Error(`truthgpt wait ${id} failed: ${(err as { stdout?: string }).stdout ?? (err as Error).message}`);
  }
  const r = JSON.parse(out) as WaitOutcome;
  if (r.status !== 'completed') throw new Error(`${id} failed: ${JSON.stringify(r.error)}`);
  return r;
}

const shas = (r: { checkpoint: { files: Record<string, { sha256: string }> } }) => Object.fromEntries(Object.entries(r.checkpoint.files).map(([n, f]) => [n, f.sha256]));

/** Polls the store until `key` exists (a committed snapshot); fails after `ms`. */
async function waitForKey(key: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await store.exists(key))) {
    if (Date.now() > deadline) throw new Error(`${key} did not appear within ${ms} ms`);
    await sleep(50);
  }
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-faults-'));
  env = {
    TRUTHGPT_STATE_DIR: dir,
    TRUTHGPT_TEMPORAL_PORT: String(await freePort()),
    TRUTHGPT_UI_PORT: String(await freePort()),
    TRUTHGPT_S3_PORT: String(await freePort()),
    // TRUTHGPT_S3_SERVER=versitygw runs this stack on versitygw (README, "Local S3 server").
    ...(process.env.TRUTHGPT_S3_SERVER ? { TRUTHGPT_S3_SERVER: process.env.TRUTHGPT_S3_SERVER } : {}),
  };
  config = loadConfig(env);
  specFile = path.join(dir, 'spec.json');
  fs.writeFileSync(specFile, JSON.stringify(spec));
  await stackUp(config, { timeoutMs: 240_000 });
  store = new ArtifactStore(s3Settings(config));
  reference = await waitJson((await cli('run', specFile, '--detach', '--id', 'faults-reference')).trim());
}, 420_000);

afterAll(async () => {
  store?.close();
  if (config) await stackDown(config).catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}, 90_000);

test('the reference run learns and reports every final checkpoint file with its sha256', () => {
  expect(Object.keys(shas(reference)).sort()).toEqual(['checkpoint.json', 'model.safetensors', 'optimizer.safetensors']);
  expect(reference.valHistory.map((v) => v.round)).toEqual([0, 1, 2]);
  expect(reference.valHistory[2].loss).toBeLessThan(reference.valHistory[0].loss - 1);
});

test('SIGKILL of the GPU worker mid-trainShard: restarted, resumed from its snapshot, final checkpoint bit-identical', async () => {
  const status = JSON.parse(await cli('status', '--json')) as StackStatus;
  const gpu = status.workers.find((w) => w.pool === 'gpu')!;
  expect(typeof gpu.pid).toBe('number');
  const id = (await cli('run', specFile, '--detach', '--id', 'faults-sigkill')).trim();
  expect(id).toBe('faults-sigkill');
  // Round 1 covers steps H..2H; kill as soon as its first snapshot is committed.
  await waitForKey(`${keys.shardProgress(id, 0, 1, H + EVERY)}/MANIFEST.json`, 180_000);
  process.kill(gpu.pid, 'SIGKILL');

  const r = await waitJson(id);
  const after = JSON.parse(await cli('status', '--json')) as StackStatus;
  const newGpu = after.workers.find((w) => w.pool === 'gpu')!;
  expect(newGpu.pid).not.toBe(gpu.pid);
  expect(after.healthy).toBe(true);

  // The shard's committed result says it resumed (not from the round's first step), losing at
  // most one snapshot interval of work. How fast is bench/'s business, not a test's.
  const result = (await store.readManifest(keys.shardFinal(id, 0, 1)))!.meta.result as TrainShardResult;
  expect(result.resumedFrom).not.toBeNull();
  expect(result.resumedFrom!).toBeGreaterThanOrEqual(H + EVERY);
  expect(result.resumedFrom!).toBeLessThan(2 * H);

  expect(shas(r)).toEqual(shas(reference));
  expect(r.valHistory.map((v) => v.loss)).toEqual(reference.valHistory.map((v) => v.loss));
}, 300_000);

test('restarting the Temporal dev server mid-run loses nothing: the run completes bit-identical', async () => {
  const id = (await cli('run', specFile, '--detach', '--id', 'faults-server-restart')).trim();
  await waitForKey(`${keys.shardProgress(id, 0, 0, EVERY)}/MANIFEST.json`, 180_000);
  const state = readState(dir)!;
  const temporalPid = state.temporal!.pid;
  await stopProcess(state.temporal, 20_000);
  expect(processRunning(state.temporal)).toBe(false);
  await sleep(2000);
  // `up` starts only what is down: the dev server again, on the same SQLite file.
  const status = await stackUp(config, { timeoutMs: 180_000 });
  expect(status.healthy).toBe(true);
  expect(readState(dir)!.temporal!.pid).not.toBe(temporalPid);

  const r = await waitJson(id);
  expect(shas(r)).toEqual(shas(reference));
}, 300_000);
