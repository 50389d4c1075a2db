// `truthgpt status`: asks every part of the stack for real (a process that exists is not a service
// that answers): the Temporal frontend, the Web UI's page, S3's bucket, and each task queue's
// pollers, matched to the worker PIDs the supervisor recorded.

import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { ROLE_POOL, TASK_QUEUES, type Pool, type WorkerRole } from '../spec/temporal-names';
import { temporalConnectionOptions, type Config } from './config';
import { processRunning, readState, stateFile, type StackState } from './stack-state';

export interface PartStatus {
  name: string;
  ok: boolean;
  detail: string;
  pid?: number;
}

export interface StackStatus {
  healthy: boolean;
  /** Names of the parts that are down, in check order. */
  down: string[];
  parts: PartStatus[];
  workers: { role: WorkerRole; pool: Pool; pid: number; identity: string; restarts: number; running: boolean }[];
  ui: string;
  stateFile: string;
}

/** A poller is current when it polled within this window (long polls last 60 s). */
const POLLER_FRESH_MS = 90_000;

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms).unref())]);

const errText = (err: unknown) => (err as Error).message?.split('\n')[0] ?? String(err);

/**
 * A connection without the client's retry interceptor. Every check here gives up after seconds;
 * with the interceptor, a call that a half-up frontend answers UNAVAILABLE keeps a retry timer
 * pending, and when that timer fires after `close()` it throws "Channel has been shut down" where
 * nothing can catch it, killing `truthgpt status` with a stack trace. One attempt per check is what
 * status asks for: it reports the stack as it is now.
 */
export async function connectForStatus(config: Config, timeoutMs = 3000): Promise<Connection> {
  return Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: timeoutMs, interceptors: [] });
}

export async function checkFrontend(config: Config, connection: Connection | undefined, connectErr?: unknown): Promise<PartStatus> {
  if (!connection) return { name: 'temporal', ok: false, detail: `frontend ${config.temporal.address} unreachable: ${errText(connectErr)}` };
  try {
    const info = await withTimeout(connection.workflowService.getSystemInfo({}), 5000, 'getSystemInfo');
    await withTimeout(connection.workflowService.describeNamespace({ namespace: config.temporal.namespace }), 5000, 'describeNamespace');
    return { name: 'temporal', ok: true, detail: `frontend ${config.temporal.address} server ${info.serverVersion || '?'}, namespace ${config.temporal.namespace}` };
  } catch (err) {
    return { name: 'temporal', ok: false, detail: `frontend ${config.temporal.address}: ${errText(err)}` };
  }
}

export async function checkUi(url: string): Promise<PartStatus> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    const body = await res.text();
    if (res.status !== 200) return { name: 'ui', ok: false, detail: `${url} answered HTTP ${res.status}` };
    if (!/<html/i.test(body)) return { name: 'ui', ok: false, detail: `${url} answered 200 but not an HTML page` };
    return { name: 'ui', ok: true, detail: `${url} serves the Temporal Web UI` };
  } catch (err) {
    return { name: 'ui', ok: false, detail: `${url} unreachable: ${errText((err as Error).cause ?? err)}` };
  }
}

export async function checkS3(config: Config): Promise<PartStatus> {
  const s3 = config.s3;
  const where = `${s3.endpoint ?? `AWS ${s3.region}`} bucket ${s3.bucket}`;
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: s3.forcePathStyle,
    credentials: s3.accessKeyId && s3.secretAccessKey ? { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, sessionToken: s3.sessionToken } : undefined,
    maxAttempts: 1,
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: s3.bucket }), { abortSignal: AbortSignal.timeout(5000) });
    return { name: 's3', ok: true, detail: `${where} answers` };
  } catch (err) {
    const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const status = e.$metadata?.httpStatusCode;
    const why = status === 404 ? 'bucket does not exist' : status ? `HTTP ${status} ${e.name}` : errText(err);
    return { name: 's3', ok: false, detail: `${where}: ${why}` };
  } finally {
    client.destroy();
  }
}

export interface Poller {
  identity: string;
  lastAccessMs: number;
}

/** Current pollers of one task queue, for activity tasks or workflow tasks. */
export async function queuePollers(connection: Connection, namespace: string, taskQueue: string, kind: 'activity' | 'workflow'): Promise<Poller[]> {
  const T = temporal.api.enums.v1.TaskQueueType;
  const res = await withTimeout(
    connection.workflowService.describeTaskQueue({
      namespace,
      taskQueue: { name: taskQueue, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
      taskQueueType: kind === 'activity' ? T.TASK_QUEUE_TYPE_ACTIVITY : T.TASK_QUEUE_TYPE_WORKFLOW,
    }),
    5000,
    `describeTaskQueue ${taskQueue}`,
  );
  const now = Date.now();
  return (res.pollers ?? [])
    .map((p) => ({ identity: p.identity ?? '', lastAccessMs: p.lastAccessTime?.seconds ? Number(p.lastAccessTime.seconds) * 1000 : 0 }))
    .filter((p) => now - p.lastAccessMs < POLLER_FRESH_MS);
}

/**
 * A role is up when its queue has a current poller of its kind (workflow tasks for `workflows`,
 * activity tasks for `cpu` and `gpu`). With a state file we also require that poller to be the
 * recorded worker (a killed worker's poller stays listed for a while after it died).
 */
export async function checkQueue(connection: Connection | undefined, config: Config, role: WorkerRole, state: StackState | undefined): Promise<PartStatus> {
  const name = `worker-${role}`;
  const queue = TASK_QUEUES[ROLE_POOL[role]];
  const kind = role === 'workflows' ? 'workflow' : 'activity';
  const what = `${queue} (${kind} tasks)`;
  const entry = state?.workers[role];
  if (entry && !processRunning(entry)) return { name, ok: false, detail: `${what}: worker pid ${entry.pid} is not running`, pid: entry.pid };
  if (!connection) return { name, ok: false, detail: `${what}: cannot ask, the frontend is down`, pid: entry?.pid };
  try {
    const pollers = await queuePollers(connection, config.temporal.namespace, queue, kind);
    const mine = entry ? pollers.filter((p) => p.identity === entry.identity) : pollers;
    if (mine.length === 0) {
      const seen = pollers.map((p) => p.identity).join(', ') || 'none';
      const want = entry ? ` from ${entry.identity}` : '';
      return { name, ok: false, detail: `${what}: no current poller${want} (pollers: ${seen})`, pid: entry?.pid };
    }
    return { name, ok: true, detail: `${what}: ${pollers.length} poller(s): ${pollers.map((p) => p.identity).join(', ')}`, pid: entry?.pid };
  } catch (err) {
    return { name, ok: false, detail: `${what}: ${errText(err)}`, pid: entry?.pid };
  }
}

/** The order status lists the workers in: the queues' activity workers first, as before the roles. */
const STATUS_ORDER: readonly WorkerRole[] = ['gpu', 'cpu', 'workflows'];

export async function stackStatus(config: Config): Promise<StackStatus> {
  const state = readState(config.stack.stateDir);
  const ui = `http://${config.stack.host}:${config.stack.uiPort}/`;
  let connection: Connection | undefined;
  let connectErr: unknown;
  try {
    connection = await connectForStatus(config);
  } catch (err) {
    connectErr = err;
  }
  try {
    const parts: PartStatus[] = [];
    const frontend = await checkFrontend(config, connection, connectErr);
    parts.push({ ...frontend, pid: state?.temporal?.pid });
    if (config.stack.localTemporal) parts.push(await checkUi(ui));
    parts.push({ ...(await checkS3(config)), pid: state?.s3?.pid });
    // A stack started with `up --no-workers` has no supervisor to check: its workers run elsewhere.
    if ((state || config.stack.localTemporal) && state?.workersHere !== false) {
      const sup = state?.supervisor;
      const running = processRunning(sup);
      const detail = !state
        ? `no state file at ${stateFile(config.stack.stateDir)} (run \`truthgpt up\`)`
        : !sup
          ? 'not started (run `truthgpt up`)'
          : running
            ? `pid ${sup.pid} keeps the workers running`
            : `pid ${sup.pid} is not running`;
      parts.push({ name: 'supervisor', ok: running, detail, pid: sup?.pid });
    }
    for (const role of STATUS_ORDER) parts.push(await checkQueue(connection, config, role, state));
    const workers = (Object.values(state?.workers ?? {}) as NonNullable<StackState['workers'][WorkerRole]>[]).map((w) => ({
      // Entries from before the roles had only `pool`, which was then also the role.
      role: w.role ?? w.pool,
      pool: w.pool,
      pid: w.pid,
      identity: w.identity,
      restarts: w.restarts,
      running: processRunning(w),
    }));
    const down = parts.filter((p) => !p.ok).map((p) => p.name);
    return { healthy: down.length === 0, down, parts, workers, ui, stateFile: stateFile(config.stack.stateDir) };
  } finally {
    await connection?.close();
  }
}

export function formatStatus(s: StackStatus): string {
  const lines = s.parts.map((p) => `${p.ok ? 'ok  ' : 'DOWN'}  ${p.name.padEnd(10)} ${p.pid ? `pid ${String(p.pid).padEnd(7)} ` : ''.padEnd(12)}${p.detail}`);
  lines.push('');
  lines.push(s.healthy ? `healthy. Web UI: ${s.ui}` : `down: ${s.down.join(', ')}`);
  return lines.join('\n');
}
