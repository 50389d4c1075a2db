// One Temporal worker for one role (spec/temporal-names.ts): `workflows` polls truthgpt-cpu for
// workflow tasks only (no activities, no engine), `cpu` polls it for activity tasks only, and `gpu`
// polls truthgpt-gpu for activity tasks only, one at a time on the device, because a training step
// owns its whole device (a shard that only uploads its result no longer holds it). Workflow tasks
// thus never share an event loop with engine work: an evaluate that holds a CPU worker's loop for
// minutes delays no workflow.

import os from 'node:os';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { createActivities } from '../activities';
import { DeviceGate } from '../activities/device';
import { assertGpuReady, type DoctorReport } from '../engine/doctor';
import { s3Settings, temporalConnectionOptions, type Config } from '../infra/config';
import { workerIdentity } from '../infra/stack-state';
import { ArtifactStore } from '../infra/store';
import { ROLE_POOL, TASK_QUEUES, type WorkerRole } from '../spec/temporal-names';
import { inflightRecorder } from './inflight';
import { activityPayloadGuard } from './payload-guard';
import { heartbeatGapRecorder } from './heartbeat-gaps';
import { deviceBinder, deviceTuner } from './device-slots';

export interface PoolWorker {
  worker: Worker;
  /** The doctor's report of a CUDA worker's startup check (null for a CPU worker, which runs none). */
  gpuCheck: DoctorReport | null;
  /** Stops polling, waits for running activities (up to the grace time), closes connections. */
  run(): Promise<void>;
}

/**
 * How often a running activity's heartbeats reach the server at most. The SDK's default throttle is
 * 80 % of the heartbeat timeout (48 s for a 60 s timeout), and a cancellation only reaches an
 * activity in the answer to a heartbeat: 2 s keeps `truthgpt cancel` prompt for a few small calls.
 */
export const HEARTBEAT_THROTTLE = '2 seconds';

export interface RoleWorkerOptions {
  /** Record running attempts here for the supervisor (infra/liveness.ts); default TRUTHGPT_INFLIGHT_FILE. */
  inflightFile?: string;
}

/**
 * Builds the worker of `role` from the config; `overrides` lets a test shorten timeouts.
 * @example const { run } = await createPoolWorker(loadConfig(), 'workflows'); await run();
 */
export async function createPoolWorker(config: Config, role: WorkerRole, overrides: Partial<WorkerOptions> = {}, opts: RoleWorkerOptions = {}): Promise<PoolWorker> {
  const pool = ROLE_POOL[role];
  const runsActivities = role !== 'workflows';
  // A CUDA worker checks its GPU setup before it takes any task: a missing library fails here with
  // the doctor's lines and fixes, not as an ORT error inside the first activity. CPU workers skip it.
  const gpuCheck = runsActivities && config.runtime.ep === 'cuda' ? await assertGpuReady(config.runtime.deviceId) : null;
  const store = new ArtifactStore(s3Settings(config));
  const connection = await NativeConnection.connect(temporalConnectionOptions(config));
  const inflight = opts.inflightFile ?? process.env.TRUTHGPT_INFLIGHT_FILE;
  // Off unless set: each attempt's longest silence between heartbeats (workers/heartbeat-gaps.ts).
  const gaps = process.env.TRUTHGPT_HEARTBEAT_GAPS;
  const device = new DeviceGate();
  try {
    const worker = await Worker.create({
      connection,
      namespace: config.temporal.namespace,
      taskQueue: TASK_QUEUES[pool],
      identity: workerIdentity(role, process.pid, os.hostname()),
      ...(runsActivities
        ? {
            activities: createActivities({ store, ep: config.runtime.ep, deviceId: config.runtime.deviceId, pool, memoryLimitBytes: config.runtime.workerMemoryGb * 2 ** 30, halfEmulation: config.runtime.halfEmulation }),
            // Payloads above 256 KiB fail by name where they are made (workers/payload-guard.ts).
            interceptors: { activity: [...(pool === 'gpu' ? [deviceBinder(device)] : []), activityPayloadGuard, ...(inflight ? [inflightRecorder(inflight)] : []), ...(gaps ? [heartbeatGapRecorder(gaps)] : [])] },
            maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
            defaultHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
            // One activity at a time holds the device; one that released it (a shard uploading its
            // result) may finish beside the next (activities/device.ts).
            ...(pool === 'gpu' ? { tuner: deviceTuner(device) } : {}),
          }
        : {
            workflowsPath: require.resolve('../workflows'),
            // ... and workflows/payload-guard.ts for what workflows send.
            interceptors: { workflowModules: [require.resolve('../workflows/payload-guard')] },
          }),
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
