// Worker process entry point: `tsx workers/main.ts --role workflows|cpu|gpu`.
// Run at least one `workflows` process (workflow tasks of truthgpt-cpu, no engine work), CPU
// activity processes (`cpu`) as needed, and one `gpu` process per GPU (TRUTHGPT_EP=cuda
// TRUTHGPT_DEVICE_ID=<n>), on any hosts that reach Temporal and S3. `--pool gpu|cpu` is the older
// spelling of `--role gpu|cpu`. SIGTERM/SIGINT shut it down gracefully (the SDK stops polling and
// lets running activities finish within the grace time).

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { GpuSetupError } from '../engine/doctor';
import { loadConfig } from '../infra/config';
import { startLivenessBeacon } from '../infra/liveness';
import { ROLE_POOL, TASK_QUEUES, WORKER_ROLES, type WorkerRole } from '../spec/temporal-names';
import { createPoolWorker } from './worker';

const USAGE = `usage: npm run worker -- --role workflows|cpu|gpu

  --role workflows   workflow tasks of truthgpt-cpu only (every workflow; no activities, no engine)
  --role cpu         activity tasks of truthgpt-cpu only (datasets, aggregation, export, quantization, ...)
  --role gpu         activity tasks of truthgpt-gpu only, one at a time (TRUTHGPT_EP, TRUTHGPT_DEVICE_ID)
  --pool gpu|cpu     the older name of --role gpu|cpu

Run at least one worker of each role; configuration comes from the environment (README, "Configuration").`;

async function main(): Promise<void> {
  // The AWS SDK's own switch for its Node-version notice (README, "Node version"); the stack's
  // supervisor sets it too, this covers `npm run worker`.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // TRUTHGPT_SCRATCH_DIR: the worker's scratch folder (datasets being tokenized, uploads being
  // spooled). Everything in the process takes its temp folder from os.tmpdir(), which reads TMPDIR.
  const scratch = process.env.TRUTHGPT_SCRATCH_DIR;
  if (scratch) {
    if (!path.isAbsolute(scratch) || !fs.existsSync(scratch) || !fs.statSync(scratch).isDirectory()) {
      throw new Error(`TRUTHGPT_SCRATCH_DIR=${JSON.stringify(scratch)}: expected the absolute path of an existing folder`);
    }
    process.env.TMPDIR = scratch;
  }
  // First, so that the supervisor hears the event loop from the start (bundling takes a while).
  if (process.env.TRUTHGPT_LIVENESS_FILE) startLivenessBeacon(process.env.TRUTHGPT_LIVENESS_FILE);
  const { values } = parseArgs({ options: { role: { type: 'string' }, pool: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const flag = values.role !== undefined ? '--role' : '--pool';
  const given = values.role ?? values.pool;
  const allowed: readonly string[] = flag === '--role' ? WORKER_ROLES : ['gpu', 'cpu'];
  if (!given || !allowed.includes(given)) throw new Error(`${flag}: expected ${allowed.join(', ')}, got ${JSON.stringify(given ?? null)}`);
  const role = given as WorkerRole;
  if (values.role !== undefined && values.pool !== undefined) throw new Error('--role and --pool: give one (--pool is the older name of --role gpu|cpu)');
  if (flag === '--pool' && role === 'cpu') console.log('worker: --pool cpu runs CPU activities only; workflows need a `--role workflows` process');
  const config = loadConfig();
  const { worker, run, gpuCheck } = await createPoolWorker(config, role);
  const pool = ROLE_POOL[role];
  const step = gpuCheck?.checks.find((c) => c.id === 'step');
  if (step) console.log(`worker: GPU check passed: ${step.line}`);
  // Under the stack's supervisor: a supervisor that was killed outright must not leave workers behind.
  if (process.env.TRUTHGPT_SUPERVISED === '1') {
    const parent = process.ppid;
    const watch = setInterval(() => {
      if (process.ppid === parent) return;
      clearInterval(watch);
      console.error(`worker: supervisor pid ${parent} is gone, shutting down`);
      if (worker.getState() === 'RUNNING') worker.shutdown();
    }, 2000);
    watch.unref();
  }
  console.log(`worker role=${role} queue=${TASK_QUEUES[pool]} ep=${config.runtime.ep}:${config.runtime.deviceId} temporal=${config.temporal.address} pid=${process.pid} ready`);
  await run();
  console.log(`worker role=${role} pid=${process.pid} stopped`);
}

main().catch((err: Error) => {
  // The GPU check's message is the doctor's report, written for people: no stack under it.
  console.error(`worker: ${err instanceof GpuSetupError ? err.message : (err.stack ?? err.message)}`);
  process.exit(1);
});
