// `truthgpt worker --pool gpu|cpu [...]`: everything a host that joins a running stack needs. It
// reads Temporal and S3 from the same env as every other process (infra/config.ts), checks that
// both answer (a one-line error naming which one and its address when not), then supervises its
// worker processes (workers/main.ts, which builds each with createPoolWorker) with the stack's
// supervisor: a worker that crashes or stalls is restarted, with backoff while it keeps crashing.
// It prints one ready line once every worker polls its task queue, a line for each worker that
// comes back after a restart, and runs until SIGTERM/SIGINT/SIGHUP, which stop the workers
// gracefully (running activities get their grace time, then Temporal retries them elsewhere).

import { Connection } from '@temporalio/client';
import type { Command } from 'commander';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, temporalConnectionOptions, type Config } from '../../infra/config';
import { checkFrontend, checkS3, queuePollers } from '../../infra/stack-health';
import { logDir, processRunning, workerIdentity } from '../../infra/stack-state';
import { superviseWorkers, type WorkerSlotSpec } from '../../infra/supervisor';
import { ROLE_POOL, TASK_QUEUES, type Pool, type WorkerRole } from '../../spec/temporal-names';
import { numberArgument } from './arguments';
import { UsageError } from './usage-error';

interface WorkerFlags {
  pool: string[];
  processes: number;
  devices?: string;
  stateDir?: string;
  wait: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stamp = (line: string) => `${new Date().toISOString()} ${line}`;

/** `--pool gpu --pool cpu` or `--pool gpu,cpu`: the pools, each once, in the order given. */
export function parsePools(values: string[]): Pool[] {
  const pools = values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter(Boolean);
  if (pools.length === 0) throw new UsageError('worker --pool: required: gpu, cpu, or both (--pool gpu --pool cpu or --pool gpu,cpu)');
  for (const p of pools) if (!(p in TASK_QUEUES)) throw new UsageError(`worker --pool: expected gpu or cpu, got "${p}"`);
  return [...new Set(pools as Pool[])];
}

/**
 * The worker processes to supervise: `processes` per pool, or for the gpu pool with `devices` one
 * per GPU index (TRUTHGPT_DEVICE_ID and TRUTHGPT_EP=cuda set for it). Names `<pool>.<n>` name
 * their log files (`<state>/logs/worker-gpu.0.log`), apart from the local stack's own workers.
 */
export function workerSlots(pools: Pool[], processes: number, devices: number[] | undefined): WorkerSlotSpec[] {
  return pools.flatMap((pool): WorkerSlotSpec[] => {
    if (pool === 'gpu' && devices) return devices.map((d) => ({ role: pool, name: `gpu.${d}`, env: { TRUTHGPT_EP: 'cuda', TRUTHGPT_DEVICE_ID: String(d) } }));
    const activities = Array.from({ length: processes }, (_, i): WorkerSlotSpec => ({ role: pool, name: `${pool}.${i}` }));
    // The cpu pool's queue also carries every workflow task: one workflows-only process runs them,
    // apart from the activity processes, so engine work never delays them (spec/temporal-names.ts).
    return pool === 'cpu' ? [{ role: 'workflows', name: 'workflows.0' }, ...activities] : activities;
  });
}

function parseDevices(v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const ids = v.split(',').map((s) => s.trim());
  if (ids.some((s) => !/^\d+$/.test(s))) throw new UsageError(`worker --devices: expected GPU indexes such as 0,1,2, got "${v}"`);
  const unique = [...new Set(ids.map(Number))];
  if (unique.length !== ids.length) throw new UsageError(`worker --devices: "${v}" names a GPU twice`);
  return unique;
}

/**
 * Throws one line naming the part (Temporal or S3), its address and the variable that sets it,
 * when it does not answer; with `waitSeconds`, keeps asking that long first (a host that boots
 * before the stack).
 */
export async function assertReachable(config: Config, waitSeconds = 0, log: (line: string) => void = () => {}): Promise<void> {
  const deadline = Date.now() + waitSeconds * 1000;
  let said = '';
  for (;;) {
    const problem = await reachabilityProblem(config);
    if (!problem) return;
    if (Date.now() >= deadline) throw new UsageError(problem);
    if (problem !== said) log(`waiting (up to ${waitSeconds} s): ${problem}`);
    said = problem;
    await sleep(1000);
  }
}

/**
 * A connection for the checks here, without the client's retry interceptor: the checks give up
 * after seconds, and a retry still pending when its connection is closed throws ("Channel has been
 * shut down") where nothing can catch it, which would take this long-running process down.
 */
const checkConnection = (config: Config, timeoutMs: number) => Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: timeoutMs, interceptors: [] });

async function reachabilityProblem(config: Config): Promise<string | undefined> {
  const t = config.temporal;
  const temporalVar = config.stack.localTemporal ? 'TEMPORAL_ADDRESS unset: the local stack\'s address' : 'TEMPORAL_ADDRESS';
  let connection: Connection | undefined;
  let connectErr: unknown;
  try {
    connection = await checkConnection(config, 5000);
  } catch (err) {
    connectErr = err;
  }
  try {
    const c = connection;
    const frontend = c ? await c.withDeadline(Date.now() + 10_000, () => checkFrontend(config, c)) : await checkFrontend(config, undefined, connectErr);
    // The checks' details start with the address, which the line already names.
    if (!frontend.ok) return `cannot reach Temporal at ${t.address} (${temporalVar}; namespace ${t.namespace}): ${frontend.detail.replace(`frontend ${t.address} unreachable: `, '').replace(`frontend ${t.address}: `, '')}`;
  } finally {
    await connection?.close();
  }
  const s3 = await checkS3(config);
  if (!s3.ok) {
    const s3Var = config.stack.localS3 ? 'TRUTHGPT_S3_ENDPOINT unset: the local stack\'s address' : 'TRUTHGPT_S3_ENDPOINT';
    const where = config.s3.endpoint ?? `AWS ${config.s3.region}`;
    return `cannot reach S3 at ${where} (${s3Var}; bucket ${config.s3.bucket}): ${s3.detail.replace(`${where} bucket ${config.s3.bucket}: `, '')}`;
  }
  return undefined;
}

/** How long a worker may take to poll before `truthgpt worker` says so (it keeps waiting). */
const SLOW_POLL_MS = 60_000;

/**
 * Resolves once worker `pid` polls `pool`'s task queue (its identity among the queue's pollers, as
 * Temporal reports them); false if the process died first. Says once if that takes long.
 */
async function waitForPoller(config: Config, role: WorkerRole, pid: number, stopped: () => boolean, slow: () => void): Promise<boolean> {
  const identity = workerIdentity(role, pid, os.hostname());
  const kind = role === 'workflows' ? 'workflow' : 'activity';
  const since = Date.now();
  let warned = false;
  while (!stopped() && processRunning({ pid, marker: '' })) {
    if (!warned && Date.now() - since > SLOW_POLL_MS) {
      warned = true;
      slow();
    }
    let connection: Connection | undefined;
    try {
      connection = await checkConnection(config, 3000);
      const c = connection;
      const pollers = await c.withDeadline(Date.now() + 5000, () => queuePollers(c, config.temporal.namespace, TASK_QUEUES[ROLE_POOL[role]], kind));
      if (pollers.some((p) => p.identity === identity)) return true;
    } catch {
      // Temporal away for a moment: the worker itself retries; so do we.
    } finally {
      await connection?.close().catch(() => {});
    }
    await sleep(500);
  }
  return false;
}

async function workerAction(flags: WorkerFlags): Promise<void> {
  const pools = parsePools(flags.pool);
  const devices = parseDevices(flags.devices);
  if (devices && !pools.includes('gpu')) throw new UsageError('worker --devices: only the gpu pool runs on GPUs; add --pool gpu');
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (flags.stateDir !== undefined) env.TRUTHGPT_STATE_DIR = flags.stateDir;
  const config = loadConfig(env);
  const slots = workerSlots(pools, flags.processes, devices);
  const say = (line: string) => console.log(stamp(line));

  await assertReachable(config, flags.wait, (line) => console.error(stamp(`worker: ${line}`)));

  const stateDir = config.stack.stateDir;
  let stopping = false;
  const pending = new Set(slots.map((s) => s.name));
  const pids = new Map<string, number>();
  const supervisor = superviseWorkers(stateDir, slots, {
    env: { ...env, TRUTHGPT_STATE_DIR: stateDir },
    record: false,
    log: (msg) => say(`worker: ${msg}`),
    onStart: ({ name, role, pid }) => {
      const pool = ROLE_POOL[role];
      pids.set(name, pid);
      const slow = () => say(`worker: ${name} pid ${pid} does not poll ${TASK_QUEUES[pool]} after ${SLOW_POLL_MS / 1000} s; still waiting (its log: ${path.join(logDir(stateDir), `worker-${name}.log`)})`);
      void waitForPoller(config, role, pid, () => stopping, slow).then((polling) => {
        if (!polling || stopping || pids.get(name) !== pid) return;
        const wasPending = pending.delete(name);
        if (!wasPending) say(`worker ${name} pid ${pid} is back, polling ${TASK_QUEUES[pool]}`);
        else if (pending.size === 0) {
          const list = slots.map((s) => `${s.name} pid ${pids.get(s.name)}`).join(', ');
          say(`truthgpt worker ready on ${os.hostname()}: ${list}; temporal ${config.temporal.address} namespace ${config.temporal.namespace}, s3 ${config.s3.endpoint ?? `AWS ${config.s3.region}`} bucket ${config.s3.bucket}; logs in ${logDir(stateDir)}`);
        }
      });
    },
  });

  await new Promise<void>((resolve, reject) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      say(`worker: ${signal}, stopping the workers`);
      supervisor.stop().then(resolve, reject);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    process.once('SIGHUP', stop);
  });
  say('worker: stopped');
}

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description(
      'run this host\'s workers for a running stack: checks that Temporal and S3 answer, starts the pools\' worker processes, restarts one that crashes or stalls, prints a ready line; runs until SIGTERM/SIGINT. Temporal and S3 come from the same env as every command (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, TEMPORAL_API_KEY, TRUTHGPT_S3_*; README "Add a host to a running stack")',
    )
    .requiredOption('--pool <pool>', 'gpu or cpu; repeat it or write gpu,cpu for both', (v: string, prev: string[] | undefined) => [...(prev ?? []), v])
    .option('--processes <n>', 'worker processes per pool (the gpu pool with --devices: one per GPU instead)', numberArgument('worker --processes', 1, 64, true), 1)
    .option('--devices <list>', 'GPU indexes for the gpu pool, one worker process each, with TRUTHGPT_EP=cuda (e.g. 0,1,2,3)')
    .option('--state-dir <dir>', `folder for the workers' logs (<dir>/logs/worker-<pool>.<n>.log) and liveness files (env TRUTHGPT_STATE_DIR, default ./.truthgpt)`)
    .option('--wait <seconds>', 'keep asking this long for Temporal and S3 to answer before giving up (a host that boots before the stack)', numberArgument('worker --wait', 0, 86_400, false), 0)
    .action(workerAction);
}
