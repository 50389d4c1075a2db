// Liveness of a worker's event loop, as its supervisor sees it. A worker whose event loop is
// blocked (a runaway synchronous computation, a huge allocation) still has a pid and still holds
// its task-queue lease, so it looks alive to everyone but does no work: it also stops running the
// workflow tasks of the cpu pool. The worker touches a beacon file from a timer on its event loop;
// the supervisor kills a worker whose beacon has gone quiet for longer than the stall limit, and
// then restarts it like any worker that died. Temporal retries what it was running.

import fs from 'node:fs';
import path from 'node:path';

/** Where the supervisor's worker for `pool` beats. */
export const livenessFile = (stateDir: string, pool: string) => path.join(stateDir, 'run', `worker-${pool}.alive`);

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
