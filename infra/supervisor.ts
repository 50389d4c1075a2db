// The stack's worker supervisor: a detached process that keeps one worker per role running
// (spec/temporal-names.ts WORKER_ROLES: `workflows` polls truthgpt-cpu for workflow tasks only,
// `cpu` and `gpu` poll their queue for activity tasks only), and records their PIDs in stack.json
// under `workers.<role>`. What it guarantees, for anyone who kills things on purpose:
//
// - A worker that exits (any code, any signal) is restarted: 0.3 s after it dies the first time,
//   then with exponential backoff (0.6 s, 1.2 s, ... 30 s) while it keeps dying within 10 s of its
//   start. Each start rewrites `workers.<role>` (new pid, identity, `restarts` + 1).
// - A worker whose event loop stops answering (its liveness beacon, infra/liveness.ts, quiet for
//   TRUTHGPT_WORKER_STALL_SECONDS, default 120, 0 = off; a SIGSTOPped process counts) is SIGKILLed
//   and then handled like any worker that died.
// - Worker lost: when an activity worker (cpu, gpu) dies, the supervisor fails the attempts it was
//   running through Temporal with a retryable `WorkerLost` failure (spec/errors.ts), so the retry
//   starts at once (its next retry delay is 0.1 s) rather than after the activity's heartbeat
//   timeout. It finds them two ways: the list the worker keeps beside its beacon
//   (`run/worker-<role>.inflight.json`, failed by task token), and, for tasks the worker's poller
//   took but its blocked or stopped event loop never started, the running workflows' pending
//   activities whose last worker is the dead worker's identity (failed by workflow, run and
//   activity id). An attempt that already ended is left alone (Temporal refuses it). A supervisor
//   that cannot reach Temporal logs it; those attempts then time out as before.
// - SIGTERM/SIGINT/SIGHUP: SIGTERM to every worker, SIGKILL after 10 s, attempts still listed then
//   failed as lost, `workers` emptied, exit 0. No restarts once stopping.
// - A supervisor killed outright leaves its workers to notice on their own: a supervised worker
//   whose parent pid changes shuts down within ~2 s (workers/main.ts); `truthgpt down` also stops
//   workers still listed in stack.json.
//
// It restarts processes and reports lost attempts; retrying the work stays Temporal's job.
//
//   node -r tsx/cjs infra/supervisor.ts --state-dir .truthgpt      (started by `truthgpt up`)

import type { ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { workerLost } from '../spec/errors';
import { ROLE_POOL, WORKER_ROLES, type WorkerRole } from '../spec/temporal-names';
import { loadConfig, temporalConnectionOptions } from './config';
import { inflightFile, livenessFile, quietForMs, readInflight, type InflightActivity } from './liveness';
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
  role: WorkerRole;
  name: string;
  env?: Record<string, string>;
}

interface Slot {
  role: WorkerRole;
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
  /** Fails a dead worker's attempts (default: through a Temporal client made from `env`'s config). */
  failLost?: (dead: DeadWorker, reason: string) => Promise<void>;
  /** false: keep no worker entries in the stack's state file (`truthgpt worker` on a host without a stack). Default true. */
  record?: boolean;
  /** Called with each worker process started (the first and every restart). */
  onStart?: (worker: { name: string; role: WorkerRole; pid: number }) => void;
}

/** A worker that died: who it was, and the attempts it listed as running. */
export interface DeadWorker {
  role: WorkerRole;
  pid: number;
  identity: string;
  listed: InflightActivity[];
}

/**
 * Fails each attempt by its task token with a retryable WorkerLost; an attempt that already ended
 * (NotFound) is skipped. Returns one line per attempt for the log.
 */
export async function failLostAttempts(client: Client, lost: InflightActivity[], reason: string): Promise<string[]> {
  return Promise.all(
    lost.map(async (a) => {
      const what = `${a.activityType} ${a.workflowId}/${a.activityId} attempt ${a.attempt}`;
      try {
        await client.activity.fail(Buffer.from(a.taskToken, 'base64'), workerLost(`${reason}; ${a.activityType} attempt ${a.attempt} is retried now`, { workflowId: a.workflowId, activityId: a.activityId, attempt: a.attempt }));
        return `failed ${what} as WorkerLost`;
      } catch (err) {
        return `could not fail ${what} (${(err as Error).message.split('\n')[0]}): it had ended, or it waits for its heartbeat timeout`;
      }
    }),
  );
}

/**
 * Fails the started attempts of running workflows whose last worker is `identity` (tasks a blocked
 * or stopped worker's poller took without ever running them), except those in `skip`
 * (`workflowId/activityId`). Returns one line per attempt for the log.
 */
export async function failAttemptsOfWorker(client: Client, identity: string, reason: string, skip: ReadonlySet<string>): Promise<string[]> {
  const lines: string[] = [];
  const STARTED = temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED;
  for await (const wf of client.workflow.list({ query: 'ExecutionStatus="Running"' })) {
    let pending;
    try {
      pending = (await client.workflow.getHandle(wf.workflowId, wf.runId).describe()).raw.pendingActivities ?? [];
    } catch {
      continue; // closed meanwhile
    }
    for (const a of pending) {
      if (a.lastWorkerIdentity !== identity || a.state !== STARTED || !a.activityId) continue;
      if (skip.has(`${wf.workflowId}/${a.activityId}`)) continue;
      const type = a.activityType?.name ?? 'activity';
      const what = `${type} ${wf.workflowId}/${a.activityId} attempt ${a.attempt}`;
      try {
        await client.activity.fail({ workflowId: wf.workflowId, runId: wf.runId, activityId: a.activityId }, workerLost(`${reason}; ${type} attempt ${a.attempt} is retried now`, { workflowId: wf.workflowId, activityId: a.activityId, attempt: a.attempt }));
        lines.push(`failed ${what} (taken by ${identity}, never listed) as WorkerLost`);
      } catch (err) {
        lines.push(`could not fail ${what} (${(err as Error).message.split('\n')[0]})`);
      }
    }
  }
  return lines;
}

/** TRUTHGPT_WORKER_STALL_SECONDS (a non-negative number; 0 = never), or the default. */
export function stallMsFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = env.TRUTHGPT_WORKER_STALL_SECONDS;
  if (raw === undefined || raw === '') return DEFAULT_STALL_SECONDS * 1000;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) throw new Error(`TRUTHGPT_WORKER_STALL_SECONDS=${JSON.stringify(raw)}: expected a number of seconds >= 0 (0 turns the check off)`);
  return seconds * 1000;
}

export function superviseWorkers(stateDir: string, roles: readonly (WorkerRole | WorkerSlotSpec)[], opts: SuperviseOptions = {}): { stop(): Promise<void> } {
  let stopping = false;
  const env = opts.env ?? process.env;
  const log = opts.log ?? ((msg: string) => process.stdout.write(`${new Date().toISOString()} supervisor: ${msg}\n`));
  const stallMs = opts.stallMs ?? stallMsFromEnv(env);
  const slots = roles.map((r): Slot => {
    const spec = typeof r === 'string' ? { role: r, name: r } : r;
    return { role: spec.role, name: spec.name, env: spec.env ?? {}, startedAt: 0, restarts: 0, crashes: 0 };
  });

  // One Temporal client, made the first time an activity worker dies.
  let client: Promise<{ client: Client; connection: Connection }> | undefined;
  const failLost =
    opts.failLost ??
    (async (dead: DeadWorker, reason: string) => {
      client ??= (async () => {
        const connection = await Connection.connect({ ...temporalConnectionOptions(loadConfig(env)), connectTimeout: 5000 });
        return { connection, client: new Client({ connection, namespace: loadConfig(env).temporal.namespace }) };
      })();
      let c;
      try {
        c = await client;
      } catch (err) {
        client = undefined;
        log(`cannot reach Temporal to fail the attempts of ${dead.role} worker pid ${dead.pid}: ${(err as Error).message.split('\n')[0]}`);
        return;
      }
      for (const line of await failLostAttempts(c.client, dead.listed, reason)) log(line);
      const listed = new Set(dead.listed.map((a) => `${a.workflowId}/${a.activityId}`));
      for (const line of await failAttemptsOfWorker(c.client, dead.identity, reason, listed)) log(line);
    });
  const pendingFails = new Set<Promise<void>>();
  const reportLost = (slot: Slot, pid: number, reason: string) => {
    if (slot.role === 'workflows') return; // runs no activities
    const listed = readInflight(inflightFile(stateDir, slot.name), pid);
    if (listed.length) log(`${slot.name} worker pid ${pid} left ${listed.length} attempt(s) running: ${listed.map((a) => `${a.activityType} ${a.workflowId}/${a.activityId}#${a.attempt}`).join(', ')}`);
    const p = failLost({ role: slot.role, pid, identity: workerIdentity(slot.role, pid, os.hostname()), listed }, reason)
      .catch((err: Error) => log(`failing lost attempts: ${err.message}`))
      .finally(() => pendingFails.delete(p));
    pendingFails.add(p);
  };

  // A state file deleted or corrupted under us must not take the supervisor (and its workers) down.
  const record = (slot: Slot, entry: WorkerEntry | undefined) => {
    if (opts.record === false) return;
    try {
      updateState(stateDir, (s) => {
        if (entry) s.workers[slot.role] = entry;
        else delete s.workers[slot.role];
      });
    } catch (err) {
      log(`could not record the ${slot.role} worker in the state file: ${(err as Error).message}`);
    }
  };

  const start = (slot: Slot) => {
    const { command, args } = tsCommand(WORKER_ENTRY, ['--role', slot.role]);
    const logFile = path.join(logDir(stateDir), `worker-${slot.name}.log`);
    const beacon = livenessFile(stateDir, slot.name);
    const inflight = inflightFile(stateDir, slot.name);
    const child = spawnLogged({
      command,
      args,
      log: logFile,
      env: { ...env, ...slot.env, TRUTHGPT_SUPERVISED: '1', TRUTHGPT_LIVENESS_FILE: beacon, ...(slot.role === 'workflows' ? {} : { TRUTHGPT_INFLIGHT_FILE: inflight }) },
      detached: false,
    });
    slot.child = child;
    slot.startedAt = Date.now();
    const pid = child.pid;
    if (pid === undefined) {
      log(`could not spawn the ${slot.name} worker; retrying`);
      scheduleRestart(slot);
      return;
    }
    log(`started ${slot.name} worker pid ${pid} (restart #${slot.restarts})`);
    opts.onStart?.({ name: slot.name, role: slot.role, pid });
    record(slot, {
      role: slot.role,
      pool: ROLE_POOL[slot.role],
      pid,
      marker: WORKER_ENTRY,
      log: logFile,
      startedAt: new Date(slot.startedAt).toISOString(),
      identity: workerIdentity(slot.role, pid, os.hostname()),
      restarts: slot.restarts,
    });
    child.once('exit', (code, signal) => {
      slot.child = undefined;
      const how = signal ?? `code ${code}`;
      reportLost(slot, pid, `${slot.role} worker pid ${pid} ${signal ? `was killed (${signal})` : `exited (${how})`}`);
      if (stopping) return;
      const lived = Date.now() - slot.startedAt;
      slot.crashes = lived < CRASH_WINDOW_MS ? slot.crashes + 1 : 1;
      log(`${slot.name} worker pid ${pid} exited (${how}) after ${(lived / 1000).toFixed(1)} s`);
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
      await Promise.allSettled([...pendingFails]);
      if (client) await client.then((c) => c.connection.close()).catch(() => {});
    },
  };
}

function main(): void {
  const { values } = parseArgs({ options: { 'state-dir': { type: 'string' } }, strict: true });
  const stateDir = values['state-dir'];
  if (!stateDir) throw new Error('supervisor: --state-dir is required');
  const supervisor = superviseWorkers(path.resolve(stateDir), WORKER_ROLES);
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
