// One Temporal worker for one pool. The CPU pool runs every workflow plus CPU activities; the GPU
// pool runs activities only, one at a time, because a training step owns its whole device.

import os from 'node:os';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import { assertGpuReady, type DoctorReport } from '../engine/doctor';
import { s3Settings, temporalConnectionOptions, type Config } from '../infra/config';
import { workerIdentity } from '../infra/stack-state';
import { ArtifactStore } from '../infra/store';
import { TASK_QUEUES, type Pool } from '../spec/temporal-names';
import { activityPayloadGuard } from './payload-guard';

export interface PoolWorker {
  worker: Worker;
  /** The doctor's report of a CUDA worker's startup check (null for a CPU worker, which runs none). */
  gpuCheck: DoctorReport | null;
  /** Stops polling, waits for running activities (up to the grace time), closes connections. */
  run(): Promise<void>;
}

/**
 * Builds the worker of `pool` from the config; `overrides` lets a test shorten timeouts.
 * @example const { run } = await createPoolWorker(loadConfig(), 'cpu'); await run();
 */
export async function createPoolWorker(config: Config, pool: Pool, overrides: Partial<WorkerOptions> = {}): Promise<PoolWorker> {
  // A CUDA worker checks its GPU setup before it takes any task: a missing library fails here with
  // the doctor's lines and fixes, not as an ORT error inside the first activity. CPU workers skip it.
  const gpuCheck = config.runtime.ep === 'cuda' ? await assertGpuReady(config.runtime.deviceId) : null;
  const store = new ArtifactStore(s3Settings(config));
  const connection = await NativeConnection.connect(temporalConnectionOptions(config));
  try {
    const worker = await Worker.create({
      connection,
      namespace: config.temporal.namespace,
      taskQueue: TASK_QUEUES[pool],
      identity: workerIdentity(pool, process.pid, os.hostname()),
      activities: createActivities({ store, ep: config.runtime.ep, deviceId: config.runtime.deviceId, pool, memoryLimitBytes: config.runtime.workerMemoryGb * 2 ** 30 }),
      ...(pool === 'cpu' ? { workflowsPath: require.resolve('../workflows') } : {}),
      // Payloads above 256 KiB fail by name where they are made (workflows/ and workers/payload-guard.ts).
      interceptors: { activity: [activityPayloadGuard], ...(pool === 'cpu' ? { workflowModules: [require.resolve('../workflows/payload-guard')] } : {}) },
      ...(pool === 'gpu' ? { maxConcurrentActivityTaskExecutions: 1 } : {}),
      shutdownGraceTime: '10 seconds',
      ...overrides,
    });
    return {
      worker,
      gpuCheck,
      async run() {
        try {
          await worker.run();
        } finally {
          await connection.close();
          store.close();
        }
      },
    };
  } catch (err) {
    await connection.close();
    store.close();
    throw err;
  }
}
