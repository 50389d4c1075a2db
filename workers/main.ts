// Worker process entry point: `tsx workers/main.ts --pool gpu|cpu`.
// Start one GPU-pool process per GPU (TRUTHGPT_EP=cuda TRUTHGPT_DEVICE_ID=<n>) and CPU-pool
// processes as needed, on any host that reaches Temporal and S3. SIGTERM/SIGINT shut it down
// gracefully (the SDK stops polling and lets running activities finish within the grace time).

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { GpuSetupError } from '../engine/doctor';
import { loadConfig } from '../infra/config';
import { startLivenessBeacon } from '../infra/liveness';
import { TASK_QUEUES, type Pool } from '../spec/temporal-names';
import { createPoolWorker } from './worker';

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
  const { values } = parseArgs({ options: { pool: { type: 'string' } }, strict: true });
  const pool = values.pool as Pool | undefined;
  if (!pool || !(pool in TASK_QUEUES)) throw new Error(`--pool: expected gpu or cpu, got ${JSON.stringify(values.pool ?? null)}`);
  const config = loadConfig();
  const { worker, run, gpuCheck } = await createPoolWorker(config, pool);
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
  console.log(`worker pool=${pool} queue=${TASK_QUEUES[pool]} ep=${config.runtime.ep}:${config.runtime.deviceId} temporal=${config.temporal.address} pid=${process.pid} ready`);
  await run();
  console.log(`worker pool=${pool} pid=${process.pid} stopped`);
}

main().catch((err: Error) => {
  // The GPU check's message is the doctor's report, written for people: no stack under it.
  console.error(`worker: ${err instanceof GpuSetupError ? err.message : (err.stack ?? err.message)}`);
  process.exit(1);
});
