// Worker lost (issue 15): how long a SIGKILLed GPU worker's shard waits before its retry starts
// when the supervisor fails the dead worker's attempts as WorkerLost, found from the worker's
// attempt list, or (the list removed just before the kill) from the pending activities whose last
// worker it was. Also: `cancel` to CANCELED while a shard trains. Real local stack (Temporal dev
// server, S3 server, supervised workers) in a temp folder. The figure before this mechanism is the
// same script run on the commit before it (bench/RESULTS.md): the retry then waited for the
// heartbeat timeout.
//
//   npx tsx bench/worker-lost.ts [--heartbeat 60]      → table on stdout, bench/out/worker-lost.json

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Client } from '@temporalio/client';
import { keys } from '../artifacts/keys';
import { loadConfig, s3Settings } from '../infra/config';
import { inflightFile } from '../infra/liveness';
import { freePort } from '../infra/ports';
import { stackDown, stackUp } from '../infra/stack';
import { readState } from '../infra/stack-state';
import { ArtifactStore } from '../infra/store';
import { startTraining, waitTraining } from '../sdk/cli/run-commands';
import { connectTemporal } from '../sdk/client';
import { LONG_SHARD_SNAPSHOT_EVERY, LONG_SHARD_STEPS, longShardSpec } from '../test/helpers/long-shard-spec';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const H = LONG_SHARD_STEPS;
const EVERY = LONG_SHARD_SNAPSHOT_EVERY;

/** ms from `since` until the named activity's attempt ≥ 2 has started (from describe's pending activities). */
async function retryStartedAfter(client: Client, id: string, since: number, timeoutMs: number): Promise<number> {
  while (Date.now() - since < timeoutMs) {
    const d = await client.workflow.getHandle(id).describe();
    const a = d.raw.pendingActivities?.find((p) => p.activityType?.name === 'trainShard');
    const t = a?.lastStartedTime?.seconds ? Number(a.lastStartedTime.seconds) * 1000 + Math.round((a.lastStartedTime.nanos ?? 0) / 1e6) : 0;
    if (a && (a.attempt ?? 0) >= 2 && t >= since) return t - since;
    await sleep(100);
  }
  throw new Error(`${id}: no retry within ${timeoutMs} ms`);
}

async function main() {
  const { values } = parseArgs({ options: { heartbeat: { type: 'string', default: '60' } } });
  const heartbeat = Number(values.heartbeat);
  const spec = longShardSpec({ name: 'bench-lost', workers: 1, heartbeatTimeoutSeconds: heartbeat });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-bench-lost-'));
  const env = { TRUTHGPT_STATE_DIR: dir, TRUTHGPT_TEMPORAL_PORT: String(await freePort()), TRUTHGPT_UI_PORT: String(await freePort()), TRUTHGPT_S3_PORT: String(await freePort()) };
  const config = loadConfig(env);
  const rows: Record<string, unknown>[] = [];
  try {
    await stackUp(config, { timeoutMs: 240_000 });
    const client = await connectTemporal(config);
    const store = new ArtifactStore(s3Settings(config));
    const waitKey = async (key: string) => {
      while (!(await store.exists(key))) await sleep(50);
    };
    try {
      const warm = await startTraining(client, spec, { workflowId: `bench-lost-warm-${Date.now()}` });
      const w0 = Date.now();
      await waitTraining(client, warm);
      rows.push({ case: 'uninterrupted', wallS: (Date.now() - w0) / 1000 });
      for (const mode of ['WorkerLost, found by identity (attempt list removed)', 'WorkerLost, from the attempt list'] as const) {
        const id = await startTraining(client, spec, { workflowId: `bench-lost-${mode.includes('identity') ? 'identity' : 'list'}-${Date.now()}` });
        const t0 = Date.now();
        await waitKey(`${keys.shardProgress(id, 0, 1, H + EVERY)}/MANIFEST.json`);
        const gpu = readState(dir)!.workers.gpu!;
        if (mode.includes('identity')) fs.rmSync(inflightFile(dir, 'gpu'), { force: true });
        process.kill(gpu.pid, 'SIGKILL');
        const killedAt = Date.now();
        const retryMs = await retryStartedAfter(client, id, killedAt, 10 * 60_000);
        let pollingMs = NaN;
        for (;;) {
          const w = readState(dir)!.workers.gpu;
          if (w && w.pid !== gpu.pid && fs.existsSync(w.log) && fs.readFileSync(w.log, 'utf8').includes(`pid=${w.pid} ready`)) {
            pollingMs = Date.now() - killedAt;
            break;
          }
          await sleep(100);
        }
        const r = await waitTraining(client, id);
        if (r.status !== 'completed') throw new Error(`${id}: ${JSON.stringify(r.error)}`);
        rows.push({ case: `SIGKILL gpu mid-shard, ${mode}`, killToRetryStartS: retryMs / 1000, killToNewWorkerReadyS: pollingMs >= retryMs ? `≤ ${(pollingMs / 1000).toFixed(1)}` : pollingMs / 1000, wallS: (Date.now() - t0) / 1000 });
      }
      // cancel → CANCELED while a shard trains.
      const id = await startTraining(client, spec, { workflowId: `bench-lost-cancel-${Date.now()}` });
      await waitKey(`${keys.shardProgress(id, 0, 0, EVERY)}/MANIFEST.json`);
      const c0 = Date.now();
      await client.workflow.getHandle(id).cancel();
      while ((await client.workflow.getHandle(id).describe()).status.name !== 'CANCELLED') await sleep(50);
      rows.push({ case: 'cancel mid-shard → CANCELED', cancelToCanceledS: (Date.now() - c0) / 1000 });
    } finally {
      store.close();
      await client.connection.close();
    }
  } finally {
    await stackDown(config).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.table(rows);
  fs.mkdirSync(path.join(__dirname, 'out'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'out', 'worker-lost.json'), JSON.stringify({ heartbeatTimeoutSeconds: heartbeat, rows, cpus: os.cpus().length, at: new Date().toISOString() }, null, 2));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
