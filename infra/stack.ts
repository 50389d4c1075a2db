// The local stack: `truthgpt up | status | down`.
//
//   temporal server start-dev   SQLite under <state>/temporal.db, Web UI, our search attributes
//   infra/s3server.ts           s3rver on loopback, buckets under <state>/s3 (the default), or
//   infra/versitygw.ts          versitygw on loopback, buckets under <state>/s3-versitygw
//                               (TRUTHGPT_S3_SERVER=versitygw)
//   infra/supervisor.ts         keeps one worker per role running: workflows (workflow tasks of
//                               truthgpt-cpu), cpu and gpu (activity tasks of their queue)
//
// All three are detached, so they outlive the CLI; `<state>/stack.json` remembers them.
// `up` starts only what is not running, so it is idempotent, and waits until every part answers.

import fs from 'node:fs';
import path from 'node:path';
import { s3Settings, type Config } from './config';
import { canConnect, isPortFree } from './ports';
import { devServerSearchAttributeFlags } from './search-attributes';
import { checkFrontend, checkQueue, checkS3, checkUi, connectForStatus, stackStatus, type PartStatus, type StackStatus } from './stack-health';
import { logTail, spawnLogged, tsCommand } from './stack-spawn';
import { logDir, processRunning, readState, stopProcess, updateState, writeState, type ProcessEntry, type StackState } from './stack-state';
import { ArtifactStore } from './store';
import { DEV_SERVER_DYNAMIC_CONFIG, ensureTemporalCli, type CliBuildProgress } from './temporal';
import { ensureVersitygw, versitygwCommand, versitygwEndpoint, versitygwHealthy } from './versitygw';
import { WORKER_ROLES, type WorkerRole } from '../spec/temporal-names';

export interface UpOptions {
  log?: (line: string) => void;
  /**
   * How long each part may take to answer, counted from when it was started (or, for a part that
   * was already running, from when `up` begins waiting for it). Workers bundle workflows at start:
   * tens of seconds on a busy machine. A first-time Temporal CLI build is not counted.
   */
  timeoutMs?: number;
  /** Live progress of a first-time Temporal CLI (or versitygw) build (minutes); without it `log` gets a line every 30 s. */
  onCliBuildProgress?: (p: CliBuildProgress) => void;
  /** Environment for finding (or building) the Temporal CLI and for the processes `up` starts (default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * false: start Temporal and S3 only, no worker supervisor (`up --no-workers`): a stack host whose
   * workers run on other hosts (`truthgpt worker`). Default true.
   */
  workers?: boolean;
}

export class StackError extends Error {
  override name = 'StackError';
}

const S3_ENTRY = 'infra/s3server.ts';
const SUPERVISOR_ENTRY = 'infra/supervisor.ts';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freshState(config: Config): StackState {
  return {
    version: 1,
    stateDir: config.stack.stateDir,
    host: config.stack.host,
    bindHost: config.stack.bindHost,
    namespace: config.temporal.namespace,
    bucket: config.s3.bucket,
    ports: { temporal: config.stack.temporalPort, ui: config.stack.uiPort, s3: config.stack.s3Port },
    s3Server: config.stack.s3Server,
    workers: {},
    updatedAt: new Date().toISOString(),
  };
}

/** Refuses to start a server on a port someone else holds, naming the port and the way out. */
async function assertPortFree(bindHost: string, host: string, port: number, what: string, envVar: string, flag: string): Promise<void> {
  if ((await isPortFree(port, bindHost)) && !(await canConnect(port, host, 300))) return;
  throw new StackError(
    `port ${port} (${what}) on ${bindHost} is already in use by another process. ` +
      `Stop that process (e.g. \`lsof -i :${port}\` or \`ss -ltnp | grep ${port}\` shows it), ` +
      `or run the stack on another port: ${envVar}=<port> or \`truthgpt up ${flag} <port>\`.`,
  );
}

/** Polls `check` (at least once) until it passes; fails early, with the log's tail, if `proc` dies meanwhile. */
async function waitFor(what: string, check: () => Promise<PartStatus>, deadline: { at: number; ms: number }, proc?: ProcessEntry): Promise<void> {
  for (;;) {
    const last = await check();
    if (last.ok) return;
    if (proc && !processRunning(proc)) {
      throw new StackError(`${what} (pid ${proc.pid}) exited during start: ${last.detail}\n--- ${proc.log} (last lines) ---\n${logTail(proc.log)}`);
    }
    if (Date.now() >= deadline.at) {
      const logHint = proc ? `\n--- ${proc.log} (last lines) ---\n${logTail(proc.log)}` : '';
      throw new StackError(`${what} did not become healthy within ${deadline.ms / 1000} s of its start (\`truthgpt up --timeout <seconds>\` waits longer): ${last.detail}${logHint}`);
    }
    await sleep(500);
  }
}

function startDetached(entry: { command: string; args: string[] }, marker: string, log: string, env: NodeJS.ProcessEnv): ProcessEntry {
  const child = spawnLogged({ ...entry, log, env, detached: true });
  if (child.pid === undefined) throw new StackError(`could not start ${entry.command} (see ${log})`);
  return { pid: child.pid, marker, log, startedAt: new Date().toISOString() };
}

/**
 * Brings the local stack up (only the parts that are not running) and waits until it is healthy.
 * @example await stackUp(loadConfig(), { log: console.log });
 */
export async function stackUp(config: Config, opts: UpOptions = {}): Promise<StackStatus> {
  const log = opts.log ?? (() => {});
  const timeoutMs = opts.timeoutMs ?? 180_000;
  // Each part's deadline starts when that part starts, never earlier: a first-time Temporal CLI
  // build takes minutes and must not eat the time the parts after it have to answer.
  const deadlineFrom = (startedAt: number | undefined) => ({ at: (startedAt ?? Date.now()) + timeoutMs, ms: timeoutMs });
  const { stateDir, host, bindHost, temporalPort, uiPort, s3Port } = config.stack;
  const withWorkers = opts.workers ?? true;
  fs.mkdirSync(logDir(stateDir), { recursive: true });
  const baseEnv = opts.env ?? process.env;
  const env: NodeJS.ProcessEnv = { ...baseEnv, TRUTHGPT_STATE_DIR: stateDir, TRUTHGPT_TEMPORAL_PORT: String(temporalPort), TRUTHGPT_UI_PORT: String(uiPort), TRUTHGPT_S3_PORT: String(s3Port), TRUTHGPT_BIND_HOST: bindHost };
  let temporalStartedAt: number | undefined;
  let startTemporal: (() => void) | undefined;
  let s3StartedAt: number | undefined;

  let state = readState(stateDir);
  const anyRunning = (s: StackState) => [s.temporal, s.s3, s.supervisor].some((p) => processRunning(p));
  if (state && anyRunning(state)) {
    const same = state.ports.temporal === temporalPort && state.ports.ui === uiPort && state.ports.s3 === s3Port;
    if (!same) {
      const p = state.ports;
      throw new StackError(`a stack from ${stateDir} is already running on ports temporal ${p.temporal}, ui ${p.ui}, s3 ${p.s3}; run \`truthgpt down\` first to change ports`);
    }
    const bound = state.bindHost ?? '127.0.0.1';
    if (bound !== bindHost && [state.temporal, state.s3].some((p) => processRunning(p))) {
      throw new StackError(`a stack from ${stateDir} is already running, listening on ${bound}; run \`truthgpt down\` first to listen on ${bindHost} (TRUTHGPT_BIND_HOST, \`up --bind\`)`);
    }
    const running = state.s3Server ?? 's3rver';
    if (config.stack.localS3 && processRunning(state.s3) && running !== config.stack.s3Server) {
      throw new StackError(`the stack from ${stateDir} runs ${running} as its S3 server, but TRUTHGPT_S3_SERVER asks for ${config.stack.s3Server}; run \`truthgpt down\` first to switch`);
    }
  } else {
    state = freshState(config);
    writeState(state);
  }

  // Binaries that may need a first-time go build come before any server starts, so that a build
  // of minutes never eats a started part's health timeout.
  const startS3 = config.stack.localS3 && !processRunning(state.s3);
  const versitygw = startS3 && config.stack.s3Server === 'versitygw' ? await ensureVersitygw(baseEnv, log, { onProgress: opts.onCliBuildProgress }) : undefined;

  if (config.stack.localTemporal && !processRunning(state.temporal)) {
    await assertPortFree(bindHost, host, temporalPort, 'Temporal frontend', 'TRUTHGPT_TEMPORAL_PORT', '--temporal-port');
    await assertPortFree(bindHost, host, uiPort, 'Temporal Web UI', 'TRUTHGPT_UI_PORT', '--ui-port');
    const cli = await ensureTemporalCli(baseEnv, log, { onProgress: opts.onCliBuildProgress });
    const db = path.join(stateDir, 'temporal.db');
    const args = ['server', 'start-dev', '--db-filename', db, '--ip', bindHost, '--port', String(temporalPort), '--ui-port', String(uiPort), '--log-level', 'warn', ...DEV_SERVER_DYNAMIC_CONFIG, ...devServerSearchAttributeFlags()];
    if (config.temporal.namespace !== 'default') args.push('--namespace', config.temporal.namespace);
    startTemporal = () => {
      log(`starting the Temporal dev server on ${bindHost}:${temporalPort} (UI ${uiPort}, data ${db})`);
      const entry = startDetached({ command: cli, args }, db, path.join(logDir(stateDir), 'temporal.log'), env);
      temporalStartedAt = Date.now();
      state = updateState(stateDir, (s) => {
        s.temporal = entry;
        s.bindHost = bindHost;
      });
    };
    startTemporal();
  }

  if (startS3) {
    await assertPortFree(bindHost, host, s3Port, 'S3 server', 'TRUTHGPT_S3_PORT', '--s3-port');
    const logFile = path.join(logDir(stateDir), 's3.log');
    let entry: ProcessEntry;
    if (versitygw) {
      const dir = path.join(stateDir, 's3-versitygw');
      fs.mkdirSync(dir, { recursive: true });
      log(`starting versitygw on ${bindHost}:${s3Port} (bucket ${config.s3.bucket}, data ${dir})`);
      const credentials = { accessKeyId: config.s3.accessKeyId!, secretAccessKey: config.s3.secretAccessKey! };
      const cmd = versitygwCommand(versitygw, { dir, host: bindHost, port: s3Port, credentials, region: config.s3.region });
      entry = startDetached(cmd, dir, logFile, { ...env, ...cmd.env });
    } else {
      const dir = path.join(stateDir, 's3');
      log(`starting the S3 server on ${bindHost}:${s3Port} (bucket ${config.s3.bucket}, data ${dir})`);
      const cmd = tsCommand(S3_ENTRY, ['--dir', dir, '--port', String(s3Port), '--host', bindHost, '--bucket', config.s3.bucket]);
      entry = startDetached(cmd, S3_ENTRY, logFile, env);
    }
    s3StartedAt = Date.now();
    state = updateState(stateDir, (s) => {
      s.s3 = entry;
      s.s3Server = config.stack.s3Server;
      s.bindHost = bindHost;
    });
    if (versitygw) {
      // versitygw serves buckets but creates none: once it answers, create ours.
      const endpoint = versitygwEndpoint(host, s3Port);
      await waitFor('versitygw', async () => ({ name: 's3', ...(await versitygwHealthy(endpoint)) }), deadlineFrom(s3StartedAt), state.s3);
      const store = new ArtifactStore(s3Settings(config));
      try {
        await store.ensureBucket();
      } finally {
        store.close();
      }
    }
  }

  // The dev server picks its internal services' ports itself as it starts, and panics when that
  // races another process for an ephemeral port ("failed assigning ephemeral port", seen with
  // several stacks starting at once): such a start is retried, twice at most.
  for (let attempt = 1; ; attempt++) {
    const temporalDeadline = deadlineFrom(temporalStartedAt);
    try {
      await waitFor('the Temporal frontend', () => frontendCheck(config), temporalDeadline, state.temporal);
      if (config.stack.localTemporal) await waitFor('the Temporal Web UI', () => checkUi(`http://${host}:${uiPort}/`), temporalDeadline, state.temporal);
      break;
    } catch (err) {
      const raced = startTemporal && attempt < 3 && state.temporal && !processRunning(state.temporal) && /failed assigning ephemeral port/.test(logTail(state.temporal.log, 400));
      if (!raced) throw err;
      log(`the Temporal dev server lost a race for one of its internal ports (attempt ${attempt}); starting it again`);
      startTemporal!();
    }
  }
  await waitFor('the S3 server', () => checkS3(config), deadlineFrom(s3StartedAt), state.s3);

  state = updateState(stateDir, (s) => (s.workersHere = withWorkers || processRunning(s.supervisor)));
  // Workers on other hosts (`truthgpt worker`) are theirs to start; status still shows their pollers.
  if (!state.workersHere) return stackStatus(config);
  let supervisorStartedAt: number | undefined;
  if (!processRunning(state.supervisor)) {
    log(`starting the worker supervisor (workers: ${WORKER_ROLES.join(', ')})`);
    const cmd = tsCommand(SUPERVISOR_ENTRY, ['--state-dir', stateDir]);
    const entry = startDetached(cmd, SUPERVISOR_ENTRY, path.join(logDir(stateDir), 'supervisor.log'), env);
    supervisorStartedAt = Date.now();
    state = updateState(stateDir, (s) => (s.supervisor = entry));
  }
  // Every worker starts together under the supervisor, so they share its deadline.
  const workersDeadline = deadlineFrom(supervisorStartedAt);
  for (const role of ['gpu', 'cpu', 'workflows'] as WorkerRole[]) {
    log(`waiting for the ${role} worker to poll its task queue`);
    await waitFor(`the ${role} worker`, () => queueCheck(config, role), workersDeadline, state.supervisor);
  }
  return stackStatus(config);
}

async function frontendCheck(config: Config): Promise<PartStatus> {
  try {
    const connection = await connectForStatus(config, 2000);
    try {
      return await checkFrontend(config, connection);
    } finally {
      await connection.close();
    }
  } catch (err) {
    return checkFrontend(config, undefined, err);
  }
}

async function queueCheck(config: Config, role: WorkerRole): Promise<PartStatus> {
  const state = readState(config.stack.stateDir);
  const connection = await connectForStatus(config, 2000);
  try {
    return await checkQueue(connection, config, role, state);
  } finally {
    await connection.close();
  }
}

/**
 * Stops everything `up` started: the supervisor first (it stops its workers, and must not restart
 * them), then S3 and Temporal. Data under the state folder stays.
 */
export async function stackDown(config: Config, opts: { log?: (line: string) => void } = {}): Promise<string[]> {
  const log = opts.log ?? (() => {});
  const state = readState(config.stack.stateDir);
  if (!state) return [];
  const stopped: string[] = [];
  const stop = async (name: string, entry: ProcessEntry | undefined, graceMs: number) => {
    if (!processRunning(entry)) return;
    log(`stopping ${name} (pid ${entry!.pid})`);
    await stopProcess(entry, graceMs);
    stopped.push(name);
  };
  await stop('supervisor', state.supervisor, 20_000);
  // Workers left behind by a supervisor that was killed outright.
  for (const [role, w] of Object.entries(state.workers)) await stop(`worker-${role}`, w, 10_000);
  await stop('s3', state.s3, 10_000);
  await stop('temporal', state.temporal, 20_000);
  updateState(config.stack.stateDir, (s) => {
    delete s.supervisor;
    delete s.s3;
    delete s.temporal;
    s.workers = {};
  });
  return stopped;
}
