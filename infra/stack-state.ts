// The local stack's state file, `<state>/stack.json`: ports, PIDs and log paths of every process
// `truthgpt up` started. `up` writes the server entries, the supervisor writes the worker entries;
// writes go through a rename so a reader never sees half a file.

import fs from 'node:fs';
import path from 'node:path';
import type { Pool, WorkerRole } from '../spec/temporal-names';

export interface ProcessEntry {
  pid: number;
  /** A string from the process's command line, so a recycled PID is not mistaken for ours. */
  marker: string;
  log: string;
  startedAt: string;
}

export interface WorkerEntry extends ProcessEntry {
  /** What the process polls for (spec/temporal-names.ts): workflow tasks, cpu or gpu activities. */
  role: WorkerRole;
  /** The task queue's pool (`workflows` polls the cpu queue). */
  pool: Pool;
  /** Poller identity the worker registers with Temporal, to match it in describeTaskQueue. */
  identity: string;
  restarts: number;
}

export interface StackState {
  version: 1;
  stateDir: string;
  host: string;
  /** Where Temporal and S3 listen (absent in state files from before TRUTHGPT_BIND_HOST: 127.0.0.1). */
  bindHost?: string;
  namespace: string;
  bucket: string;
  ports: { temporal: number; ui: number; s3: number };
  /** The local S3 server's kind (absent in state files from before versitygw: s3rver). */
  s3Server?: 's3rver' | 'versitygw';
  temporal?: ProcessEntry;
  s3?: ProcessEntry;
  supervisor?: ProcessEntry;
  /** false when `up --no-workers` started no supervisor here: the workers run on other hosts. */
  workersHere?: boolean;
  /** One entry per supervised worker process, by role. */
  workers: Partial<Record<WorkerRole, WorkerEntry>>;
  updatedAt: string;
}

export const stateFile = (stateDir: string) => path.join(stateDir, 'stack.json');
export const logDir = (stateDir: string) => path.join(stateDir, 'logs');

export function readState(stateDir: string): StackState | undefined {
  const file = stateFile(stateDir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const state = JSON.parse(text) as StackState;
    if (state.version !== 1) throw new Error(`unknown version ${String(state.version)}`);
    return state;
  } catch (err) {
    throw new Error(`${file} is not a valid stack state file (${(err as Error).message}); run \`truthgpt down\` or delete it`);
  }
}

export function writeState(state: StackState): void {
  const file = stateFile(state.stateDir);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ ...state, updatedAt: new Date().toISOString() }, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

/** Read-modify-write; the change function sees the latest file content. */
export function updateState(stateDir: string, change: (s: StackState) => void): StackState {
  const state = readState(stateDir);
  if (!state) throw new Error(`no stack state at ${stateFile(stateDir)}`);
  change(state);
  writeState(state);
  return state;
}

/** True when `pid` is alive and (on Linux) its command line contains `marker`. */
export function processRunning(entry: Pick<ProcessEntry, 'pid' | 'marker'> | undefined): boolean {
  if (!entry || !entry.pid) return false;
  try {
    process.kill(entry.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${entry.pid}/stat`, 'utf8');
    // A zombie (state Z) has exited; its parent just has not reaped it yet.
    if (/^\d+ \(.*\) Z/.test(stat)) return false;
    const cmdline = fs.readFileSync(`/proc/${entry.pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    return cmdline.includes(entry.marker);
  } catch {
    return true; // no /proc (macOS): the signal check is all we have
  }
}

/** Sends `signal` to a process we started; ignores processes that are already gone. */
export function signalProcess(entry: Pick<ProcessEntry, 'pid' | 'marker'> | undefined, signal: NodeJS.Signals): boolean {
  if (!processRunning(entry)) return false;
  try {
    process.kill(entry!.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the process is gone; returns false on timeout. */
export async function waitForExit(entry: Pick<ProcessEntry, 'pid' | 'marker'> | undefined, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!processRunning(entry)) {
      // An exiting process loses its cmdline (so the marker check says "gone") a moment before
      // it really ends; wait for the pid itself (gone or a zombie) so callers see a clean state.
      while (entry && Date.now() < deadline && processRunning({ pid: entry.pid, marker: '' })) await new Promise((r) => setTimeout(r, 20));
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return !processRunning(entry);
}

/** SIGTERM, then SIGKILL after graceMs. */
export async function stopProcess(entry: Pick<ProcessEntry, 'pid' | 'marker'> | undefined, graceMs: number): Promise<void> {
  if (!signalProcess(entry, 'SIGTERM')) return;
  if (await waitForExit(entry, graceMs)) return;
  signalProcess(entry, 'SIGKILL');
  await waitForExit(entry, 5000);
}

/** Poller identity of a stack worker; status matches it against describeTaskQueue's pollers. */
export function workerIdentity(role: WorkerRole, pid: number, hostname: string): string {
  return `truthgpt-${role}-${pid}@${hostname}`;
}
