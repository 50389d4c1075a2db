// The stack's worker supervisor: a detached process that keeps one worker per pool running,
// restarting one that dies (quickly the first time, with exponential backoff while it keeps
// crashing), and records worker PIDs in stack.json. A worker whose event loop stops answering (its
// liveness beacon, infra/liveness.ts, goes quiet for TRUTHGPT_WORKER_STALL_SECONDS) is killed and
// restarted the same way. It restarts processes only; retrying work is Temporal's job, which
// re-dispatches the dead worker's activities after their timeouts.
//
//   node -r tsx/cjs infra/supervisor.ts --state-dir .truthgpt      (started by `truthgpt up`)

import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Pool } from '../spec/temporal-names';
import { livenessFile, quietForMs } from './liveness';
import { logDir, updateState, workerIdentity, type WorkerEntry } from './stack-state';
import { spawnLogged, tsCommand } from './stack-spawn';

export const WORKER_ENTRY = 'workers/main.ts';
/** A worker that lived shorter than this crashed at start, so the next restart backs off. */
const CRASH_WINDOW_MS = 10_000;
const FIRST_RESTART_DELAY_MS = 300;
const MAX_RESTART_DELAY_MS = 30_000;
const STOP_GRACE_MS = 10_000;
/** Default stall limit: longer than any synchronous stretch of real work (graph building, quantizing). */
export const DEFAULT_STALL_SECONDS = 120;

/**
 * One supervised worker process beyond the stack's one-per-pool: `name` names its log
 * (`logs/worker-<name>.log`) and liveness file, `env` is added to its environment (a GPU index).
 */
export interface WorkerSlotSpec {
  pool: Pool;
  name: string;
  env?: Record<string, string>;
}

interface Slot {
  pool: Pool;
  name: string;
  env: Record<string, string>;
  child?: ChildProcess;
  startedAt: number;
  restarts: number;
  /** Crashes in a row, each within CRASH_WINDOW_MS of its start. */
  crashes: number;
  timer?: NodeJS.Timeout;
}

/** Delay before restart number `crashes` in a crash loop: 0.3 s, 0.6 s, 1.2 s, ... capped at 30 s. */
export function restartDelayMs(crashes: number): number {
  return Math.min(FIRST_RESTART_DELAY_MS * 2 ** Math.max(0, crashes - 1), MAX_RESTART_DELAY_MS);
}

export interface SuperviseOptions {
  env?: NodeJS.ProcessEnv;
  log?: (msg: string) => void;
  /** A worker whose event loop is silent this long is killed and restarted; 0 turns it off. */
  stallMs?: number;
  /** false: keep no worker entries in the stack's state file (`truthgpt worker` on a host without a stack). Default true. */
  record?: boolean;
  /** Called with each worker process started (the first and every restart). */
  onStart?: (worker: { name: string; pool: Pool; pid: number }) => void;
}

/** TRUTHGPT_WORKER_STALL_SECONDS (a non-negative number; 0 = never), or the default. */
export function stallMsFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = env.TRUTHGPT_WORKER_STALL_SECONDS;
  if (raw === undefined || raw === '') return DEFAULT_STALL_SECONDS * 1000;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) throw new Error(`TRUTHGPT_WORKER_STALL_SECONDS=${JSON.stringify(raw)}: expected a number of seconds >= 0 (0 turns the check off)`);
  return seconds * 1000;
}

export function superviseWorkers(stateDir: string, pools: (Pool | WorkerSlotSpec)[], opts: SuperviseOptions = {}): { stop(): Promise<void> } {
  let stopping = false;
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((msg: string) => process.stdout.write(`${new Date().toISOString()} supervisor: ${msg}\n`));
  const stallMs = opts.stallMs ?? stallMsFromEnv(env);
  const slots = pools.map((p): Slot => {
    const spec = typeof p === 'string' ? { pool: p, name: p } : p;
    return { pool: spec.pool, name: spec.name, env: spec.env ?? {}, startedAt: 0, restarts: 0, crashes: 0 };
  });

  // A state file deleted or corrupted under us must not take the supervisor (and its workers) down.
  const record = (slot: Slot, entry: WorkerEntry | undefined) => {
    if (opts.record === false) return;
    try {
      updateState(stateDir, (s) => {
        if (entry) s.workers[slot.pool] = entry;
        else delete s.workers[slot.pool];
      });
    } catch (err) {
      log(`could not record the ${slot.pool} worker in the state file: ${(err as Error).message}`);
    }
  };

  const start = (slot: Slot) => {
    const { command, args } = tsCommand(WORKER_ENTRY, ['--pool', slot.pool]);
    const logFile = path.join(logDir(stateDir), `worker-${slot.name}.log`);
    const beacon = livenessFile(stateDir, slot.name);
    const child = spawnLogged({ command, args, log: logFile, env: { ...env, ...slot.env, TRUTHGPT_SUPERVISED: '1', TRUTHGPT_LIVENESS_FILE: beacon }, detached: false });
    slot.child = child;
    slot.startedAt = Date.now();
    const pid = child.pid;
    if (pid === undefined) {
      log(`could not spawn the ${slot.name} worker; retrying`);
      scheduleRestart(slot);
      return;
    }
    log(`started ${slot.name} worker pid ${pid} (restart #${slot.restarts})`);
    opts.onStart?.({ name: slot.name, pool: slot.pool, pid });
    record(slot, {
      pool: slot.pool,
      pid,
      marker: WORKER_ENTRY,
      log: logFile,
      startedAt: new Date(slot.startedAt).toISOString(),
      identity: workerIdentity(slot.pool, pid, os.hostname()),
      restarts: slot.restarts,
    });
    child.once('exit', (code, signal) => {
      slot.child = undefined;
      if (stopping) return;
      const lived = Date.now() - slot.startedAt;
      slot.crashes = lived < CRASH_WINDOW_MS ? slot.crashes + 1 : 1;
      log(`${slot.name} worker pid ${pid} exited (${signal ?? `code ${code}`}) after ${(lived / 1000).toFixed(1)} s`);
      scheduleRestart(slot);
    });
  };

  const scheduleRestart = (slot: Slot) => {
    const delay = restartDelayMs(slot.crashes);
    log(`restarting the ${slot.name} worker in ${delay} ms`);
    slot.timer = setTimeout(() => {
      slot.timer = undefined;
      if (stopping) return;
      slot.restarts++;
      start(slot);
    }, delay);
  };

  // The watchdog: a live pid whose event loop went quiet is as good as dead.
  const watchdog = stallMs > 0
    ? setInterval(() => {
        for (const slot of slots) {
          const child = slot.child;
          if (stopping || !child || child.exitCode !== null || child.signalCode !== null) continue;
          const quiet = quietForMs(livenessFile(stateDir, slot.name), slot.startedAt);
          if (quiet < stallMs) continue;
          log(`${slot.name} worker pid ${child.pid} has not answered for ${(quiet / 1000).toFixed(1)} s (its event loop is blocked or the process is stopped): killing it`);
          child.kill('SIGKILL');
        }
      }, Math.min(5000, Math.max(250, stallMs / 4)))
    : undefined;
  watchdog?.unref();

  for (const slot of slots) start(slot);

  return {
    async stop() {
      stopping = true;
      if (watchdog) clearInterval(watchdog);
      await Promise.all(
        slots.map(async (slot) => {
          if (slot.timer) clearTimeout(slot.timer);
          const child = slot.child;
          if (child && child.exitCode === null && child.signalCode === null) {
            const exited = new Promise<void>((r) => child.once('exit', () => r()));
            child.kill('SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
            await exited;
            clearTimeout(t);
          }
          record(slot, undefined);
          log(`stopped the ${slot.name} worker`);
        }),
      );
    },
  };
}

function main(): void {
  const { values } = parseArgs({ options: { 'state-dir': { type: 'string' } }, strict: true });
  const stateDir = values['state-dir'];
  if (!stateDir) throw new Error('supervisor: --state-dir is required');
  const supervisor = superviseWorkers(path.resolve(stateDir), ['gpu', 'cpu']);
  const stop = (signal: NodeJS.Signals) => {
    process.stdout.write(`${new Date().toISOString()} supervisor: ${signal}, stopping workers\n`);
    supervisor.stop().then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`supervisor: error while stopping: ${err.message}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  process.once('SIGHUP', stop);
}

if (require.main === module) main();
