// Liveness of a worker's event loop, as its supervisor sees it. A worker whose event loop is
// blocked (a runaway synchronous computation, a huge allocation) still has a pid and still holds
// its task-queue lease, so it looks alive to everyone but does no work: it also stops running the
// workflow tasks of the cpu pool. The worker touches a beacon file from a timer on its event loop;
// the supervisor kills a worker whose beacon has gone quiet for longer than the stall limit, and
// then restarts it like any worker that died. Temporal retries what it was running.
//
// Beside the beacon, a supervised worker keeps the list of the activity attempts it is running
// (`worker-<role>.inflight.json`, written on every start and end of an attempt): when the worker
// dies, the supervisor fails exactly those attempts through Temporal (a retryable WorkerLost), so
// their retries start at once instead of after the heartbeat timeout.

import fs from 'node:fs';
import path from 'node:path';

/** Where the supervisor's worker for `role` beats. */
export const livenessFile = (stateDir: string, role: string) => path.join(stateDir, 'run', `worker-${role}.alive`);

/** Where the supervisor's worker for `role` lists the activity attempts it is running. */
export const inflightFile = (stateDir: string, role: string) => path.join(stateDir, 'run', `worker-${role}.inflight.json`);

/** One running activity attempt, as its worker records it. */
export interface InflightActivity {
  workflowId: string;
  runId: string;
  activityId: string;
  activityType: string;
  attempt: number;
  /** The attempt's task token, base64: failing by token can only end this attempt, never a later one. */
  taskToken: string;
  startedAt: string;
}

export interface InflightRecord {
  pid: number;
  activities: InflightActivity[];
}

/** Writes the whole list through a rename, so a reader never sees half a file. */
export function writeInflight(file: string, record: InflightRecord): void {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(record));
    fs.renameSync(tmp, file);
  } catch {
    // Best effort, like the beacon: without the list, a lost attempt waits for its heartbeat timeout.
  }
}

/** The attempts the worker `pid` recorded last (none when the file is absent, unreadable or another pid's). */
export function readInflight(file: string, pid: number): InflightActivity[] {
  try {
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as InflightRecord;
    return record.pid === pid && Array.isArray(record.activities) ? record.activities : [];
  } catch {
    return [];
  }
}

/** How often the beacon is touched. */
export const BEAT_MS = 1000;

/**
 * Touches `file` every BEAT_MS from this process's event loop (a blocked loop stops touching it).
 * @example startLivenessBeacon(process.env.TRUTHGPT_LIVENESS_FILE)
 */
export function startLivenessBeacon(file: string): NodeJS.Timeout {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const beat = () => {
    try {
      fs.writeFileSync(file, String(process.pid));
    } catch {
      // A state folder removed under us must not crash the worker; the supervisor will see silence.
    }
  };
  beat();
  const timer = setInterval(beat, BEAT_MS);
  timer.unref();
  return timer;
}

/** Milliseconds since `file` was last touched, counted from `since` if it was not touched after that. */
export function quietForMs(file: string, since: number, now = Date.now()): number {
  let last = since;
  try {
    last = Math.max(since, fs.statSync(file).mtimeMs);
  } catch {
    // No beat yet: silent since `since`.
  }
  return now - last;
}
