// The local stack for real: `up` in a temp state folder on free ports (never the developer's
// 7233/8233), then status, a killed worker that comes back, a second `up`, a taken port, `down`.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadConfig, s3Settings, type Config } from '../../infra/config';
import { onPath } from '../../infra/go-tool';
import { freePort } from '../../infra/ports';
import { stackDown, stackUp, StackError } from '../../infra/stack';
import { stackStatus, type StackStatus } from '../../infra/stack-health';
import { processRunning, readState, writeState, type StackState } from '../../infra/stack-state';
import { CommitConflictError, ArtifactStore } from '../../infra/store';
import { stallMsFromEnv, superviseWorkers } from '../../infra/supervisor';
import { findVersitygw } from '../../infra/versitygw';
import { withTemporal } from '../helpers/temporal';
import { buildLogProgress, cacheDir, ensureTemporalCli, findTemporalCli, formatBuildProgress } from '../../infra/temporal';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');

let dir: string;
let config: Config;
let env: Record<string, string>;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-stack-'));
  const [temporalPort, uiPort, s3Port] = [await freePort(), await freePort(), await freePort()];
  env = {
    TRUTHGPT_STATE_DIR: dir,
    TRUTHGPT_TEMPORAL_PORT: String(temporalPort),
    TRUTHGPT_UI_PORT: String(uiPort),
    TRUTHGPT_S3_PORT: String(s3Port),
  };
  config = loadConfig(env);
});

afterAll(async () => {
  if (config) await stackDown(config).catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

const pidsOf = (s: StackState) => ({ temporal: s.temporal?.pid, s3: s.s3?.pid, supervisor: s.supervisor?.pid, gpu: s.workers.gpu?.pid, cpu: s.workers.cpu?.pid, workflows: s.workers.workflows?.pid });
const part = (s: StackStatus, name: string) => s.parts.find((p) => p.name === name)!;

/** The CLI as a user runs it, against this test's stack. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [path.join(REPO, 'bin/truthgpt.js'), ...args], { cwd: REPO, env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('up → healthy → a killed worker comes back → second up is harmless → down stops everything', async () => {
  const status = await stackUp(config, { timeoutMs: 240_000 });
  expect(status.down).toEqual([]);
  expect(status.parts.map((p) => p.name)).toEqual(['temporal', 'ui', 's3', 'supervisor', 'worker-gpu', 'worker-cpu', 'worker-workflows']);
  const state = readState(dir)!;
  const pids = pidsOf(state);
  for (const [name, pid] of Object.entries(pids)) {
    expect([name, typeof pid]).toEqual([name, 'number']);
    expect([name, processRunning({ pid: pid!, marker: '' })]).toEqual([name, true]);
  }
  expect(state.ports).toEqual({ temporal: config.stack.temporalPort, ui: config.stack.uiPort, s3: config.stack.s3Port });
  expect(fs.existsSync(path.join(dir, 'temporal.db'))).toBe(true);
  expect(fs.existsSync(path.join(dir, 'logs', 'worker-gpu.log'))).toBe(true);

  // The UI serves its page, and the CLI's JSON status agrees (exit code 0).
  const page = await (await fetch(`http://127.0.0.1:${config.stack.uiPort}/`)).text();
  expect(page).toMatch(/<html/i);
  const json = await cli('status', '--json');
  expect(json.code).toBe(0);
  const parsed = JSON.parse(json.stdout) as StackStatus;
  expect(parsed.healthy).toBe(true);
  expect(parsed.workers.map((w) => [w.role, w.pool, w.pid]).sort()).toEqual([
    ['cpu', 'cpu', pids.cpu],
    ['gpu', 'gpu', pids.gpu],
    ['workflows', 'cpu', pids.workflows],
  ]);

  // SIGKILL the gpu worker: the supervisor restarts it, and the new process polls the queue.
  const killedAt = Date.now();
  process.kill(pids.gpu!, 'SIGKILL');
  let newPid: number | undefined;
  let respawnMs = 0;
  let pollingMs = 0;
  while (Date.now() - killedAt < 60_000) {
    const w = readState(dir)!.workers.gpu;
    if (!newPid && w && w.pid !== pids.gpu && processRunning(w)) {
      newPid = w.pid;
      respawnMs = Date.now() - killedAt;
    }
    if (newPid && part(await stackStatus(config), 'worker-gpu').ok) {
      pollingMs = Date.now() - killedAt;
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(`gpu worker SIGKILLed: new pid ${newPid} after ${respawnMs} ms, polling again after ${pollingMs} ms`);
  expect(newPid).toBeDefined();
  expect(pollingMs).toBeGreaterThan(0);
  expect(readState(dir)!.workers.gpu!.restarts).toBe(1);
  expect(processRunning({ pid: pids.gpu!, marker: '' })).toBe(false);

  // A second `up` starts nothing new and leaves a healthy stack.
  const again = await stackUp(config, { timeoutMs: 60_000 });
  expect(again.healthy).toBe(true);
  expect(pidsOf(readState(dir)!)).toEqual({ ...pids, gpu: newPid });

  // down: supervisor first (no restarts), then S3 and Temporal; all processes gone, data kept.
  const stopped = await stackDown(config);
  expect(stopped).toEqual(['supervisor', 's3', 'temporal']);
  for (const pid of [pids.temporal, pids.s3, pids.supervisor, pids.cpu, pids.workflows, newPid]) {
    expect([pid, processRunning({ pid: pid!, marker: '' })]).toEqual([pid, false]);
  }
  expect(fs.existsSync(path.join(dir, 'temporal.db'))).toBe(true);

  // status now fails, naming every part that is down.
  const after = await cli('status');
  expect(after.code).toBe(1);
  expect(after.stdout).toContain('down: temporal, ui, s3, supervisor, worker-gpu, worker-cpu, worker-workflows');
}, 400_000);

// versitygw comes from VERSITYGW_PATH (.ci/run), PATH or the cache, or is built with go.
const canHaveVersitygw = (() => {
  try {
    return findVersitygw() !== undefined || onPath('go', process.env) !== undefined;
  } catch {
    return false;
  }
})();

(canHaveVersitygw ? test : test.skip)('TRUTHGPT_S3_SERVER=versitygw: up runs versitygw under the state folder, commits are create-only, switching servers needs a down', async () => {
  const vgwConfig = loadConfig({ ...env, TRUTHGPT_S3_SERVER: 'versitygw' });
  const status = await stackUp(vgwConfig, { timeoutMs: 240_000 });
  expect(status.down).toEqual([]);
  const state = readState(dir)!;
  expect(state.s3Server).toBe('versitygw');
  const bin = findVersitygw()!;
  expect(fs.readFileSync(state.s3!.log, 'utf8')).toContain(`start: ${bin} --port 127.0.0.1:${config.stack.s3Port} `);
  // Each bucket is a folder under <state>/s3-versitygw; objects are plain files in it.
  expect(fs.statSync(path.join(dir, 's3-versitygw', 'truthgpt')).isDirectory()).toBe(true);

  const store = new ArtifactStore(s3Settings(vgwConfig));
  try {
    expect(await store.conditionalWrites('stack-check')).toBe(true);
    const first = await store.commit('stack-check/c1', { 'model.bin': Buffer.from('first') });
    await expect(store.commit('stack-check/c1', { 'model.bin': Buffer.from('second') })).rejects.toThrow(CommitConflictError);
    expect((await store.getVerified('stack-check/c1', 'model.bin')).toString()).toBe('first');
    expect(fs.readFileSync(path.join(dir, 's3-versitygw', 'truthgpt', ...first.files[0]!.key.split('/')), 'utf8')).toBe('first');
  } finally {
    store.close();
  }

  const json = await cli('status', '--json');
  expect(json.code).toBe(0);
  expect((JSON.parse(json.stdout) as StackStatus).parts.find((p) => p.name === 's3')).toMatchObject({ ok: true, pid: state.s3!.pid });

  // The running stack's S3 server is versitygw; asking for s3rver without a down is refused.
  await expect(stackUp(config, { timeoutMs: 10_000 })).rejects.toThrow(
    `the stack from ${dir} runs versitygw as its S3 server, but TRUTHGPT_S3_SERVER asks for s3rver; run \`truthgpt down\` first to switch`,
  );
  expect(await stackDown(vgwConfig)).toEqual(['supervisor', 's3', 'temporal']);
  expect(processRunning(state.s3)).toBe(false);
}, 400_000);

test('a port held by another process is refused, naming the port, the part and the fix', async () => {
  const holder = net.createServer();
  const taken = await new Promise<number>((resolve) => holder.listen(0, '127.0.0.1', () => resolve((holder.address() as net.AddressInfo).port)));
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-stack-taken-'));
  try {
    const cfg = loadConfig({ TRUTHGPT_STATE_DIR: other, TRUTHGPT_TEMPORAL_PORT: String(taken), TRUTHGPT_UI_PORT: String(await freePort()), TRUTHGPT_S3_PORT: String(await freePort()) });
    const err = await stackUp(cfg, { timeoutMs: 10_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StackError);
    expect((err as Error).message).toContain(`port ${taken} (Temporal frontend) on 127.0.0.1 is already in use by another process`);
    expect((err as Error).message).toContain('TRUTHGPT_TEMPORAL_PORT=<port>');
    // Nothing was started on the way to the error.
    const state = readState(other)!;
    expect([state.temporal, state.s3, state.supervisor]).toEqual([undefined, undefined, undefined]);
  } finally {
    holder.close();
    fs.rmSync(other, { recursive: true, force: true });
  }
});

test('a worker that keeps crashing is restarted with growing delays, and its log says why', async () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-crashloop-'));
  writeState({ version: 1, stateDir: d, host: '127.0.0.1', namespace: 'default', bucket: 'truthgpt', ports: { temporal: 1, ui: 2, s3: 3 }, workers: {}, updatedAt: '' });
  const lines: string[] = [];
  // An invalid TRUTHGPT_EP makes every worker exit at start: a crash loop.
  const sup = superviseWorkers(d, ['gpu'], { env: { ...process.env, TRUTHGPT_EP: 'rocm' }, log: (m) => lines.push(m) });
  try {
    const deadline = Date.now() + 90_000;
    while ((readState(d)!.workers.gpu?.restarts ?? 0) < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  } finally {
    await sup.stop();
  }
  const delays = lines.map((l) => /restarting the gpu worker in (\d+) ms/.exec(l)?.[1]).filter(Boolean).map(Number);
  expect(delays.slice(0, 4)).toEqual([300, 600, 1200, 2400]);
  expect(fs.readFileSync(path.join(d, 'logs', 'worker-gpu.log'), 'utf8')).toContain('TRUTHGPT_EP="rocm": expected cpu or cuda');
  expect(readState(d)!.workers.gpu).toBeUndefined();
  fs.rmSync(d, { recursive: true, force: true });
}, 120_000);

test('a worker whose event loop stops answering is killed and restarted by the supervisor', async () => {
  const temporal = await withTemporal();
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-stall-'));
  writeState({ version: 1, stateDir: d, host: '127.0.0.1', namespace: 'default', bucket: 'truthgpt', ports: { temporal: temporal.port, ui: temporal.uiPort, s3: 1 }, workers: {}, updatedAt: '' });
  const lines: string[] = [];
  const workerEnv = { ...process.env, TRUTHGPT_STATE_DIR: d, TRUTHGPT_TEMPORAL_PORT: String(temporal.port), TRUTHGPT_UI_PORT: String(temporal.uiPort) };
  const sup = superviseWorkers(d, ['cpu'], { env: workerEnv, log: (m) => lines.push(m), stallMs: 8000 });
  const log = path.join(d, 'logs', 'worker-cpu.log');
  const until = async (what: string, ok: () => boolean, ms: number) => {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; supervisor said:\n${lines.join('\n')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  try {
    await until('the worker to be ready', () => fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes(' ready'), 120_000);
    const hung = readState(d)!.workers.cpu!;
    // SIGSTOP freezes the process as a blocked event loop would: pid alive, nothing answering.
    process.kill(hung.pid, 'SIGSTOP');
    await until('a new worker', () => (readState(d)!.workers.cpu?.restarts ?? 0) > hung.restarts, 60_000);
    expect(lines.join('\n')).toMatch(new RegExp(`cpu worker pid ${hung.pid} has not answered for \\d+\\.\\d s \\(its event loop is blocked or the process is stopped\\): killing it`));
    expect(readState(d)!.workers.cpu!.pid).not.toBe(hung.pid);
    await until('the old pid to be gone', () => !processRunning({ pid: hung.pid, marker: '' }), 10_000);
  } finally {
    await sup.stop();
    await temporal.close();
    fs.rmSync(d, { recursive: true, force: true });
  }
}, 240_000);

test('TRUTHGPT_WORKER_STALL_SECONDS: seconds, 0 turns the check off, anything else is an error naming it', () => {
  expect(stallMsFromEnv({})).toBe(120_000);
  expect(stallMsFromEnv({ TRUTHGPT_WORKER_STALL_SECONDS: '30' })).toBe(30_000);
  expect(stallMsFromEnv({ TRUTHGPT_WORKER_STALL_SECONDS: '0' })).toBe(0);
  expect(() => stallMsFromEnv({ TRUTHGPT_WORKER_STALL_SECONDS: 'soon' })).toThrow(/TRUTHGPT_WORKER_STALL_SECONDS="soon": expected a number of seconds >= 0/);
});

test('config errors name the variable', () => {
  expect(() => loadConfig({ TRUTHGPT_S3_PORT: 'http' })).toThrow(/TRUTHGPT_S3_PORT="http": expected a port number/);
  expect(() => loadConfig({ TRUTHGPT_EP: 'rocm' })).toThrow(/TRUTHGPT_EP="rocm": expected cpu or cuda/);
  expect(() => loadConfig({ TEMPORAL_TLS_CERT_PATH: '/etc/hostname' })).toThrow(/TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together/);
  // Half a key pair is an error, also where the local server's default key would fill the other half.
  for (const env of [{ TRUTHGPT_S3_SECRET_ACCESS_KEY: 'secret' }, { TRUTHGPT_S3_ACCESS_KEY_ID: 'id', TRUTHGPT_S3_ENDPOINT: 'http://127.0.0.1:9000' }]) {
    expect(() => loadConfig(env)).toThrow(/TRUTHGPT_S3_ACCESS_KEY_ID and TRUTHGPT_S3_SECRET_ACCESS_KEY must be set together \(TRUTHGPT_S3_\w+ is not set\)/);
  }
  expect(() => loadConfig({ TRUTHGPT_S3_SESSION_TOKEN: 'token' })).toThrow(/TRUTHGPT_S3_SESSION_TOKEN is set without/);
  expect(loadConfig({ TRUTHGPT_S3_ACCESS_KEY_ID: 'id', TRUTHGPT_S3_SECRET_ACCESS_KEY: 'secret' }).s3).toMatchObject({ accessKeyId: 'id', secretAccessKey: 'secret' });
  expect(() => loadConfig({ TRUTHGPT_TEMPORAL_PORT: '9000', TRUTHGPT_S3_PORT: '9000' })).toThrow(/TRUTHGPT_S3_PORT and TRUTHGPT_TEMPORAL_PORT are both 9000/);
  const cloud = loadConfig({ TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_NAMESPACE: 'ns.acct', TEMPORAL_API_KEY: 'k', TRUTHGPT_S3_ENDPOINT: 'aws' });
  expect(cloud.temporal.tls).not.toBeNull();
  expect(cloud.s3.endpoint).toBeUndefined();
  expect(cloud.s3.forcePathStyle).toBe(false);
  expect(cloud.s3.accessKeyId).toBeUndefined();
});

test('the Temporal CLI is found in order TEMPORAL_CLI_PATH, PATH, cache; without Go the error says how to get one', async () => {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-cache-'));
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-bin-'));
  try {
    const fake = (p: string) => {
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, '#!/bin/sh\n', { mode: 0o755 });
      return p;
    };
    const empty = { PATH: '/nonexistent', TRUTHGPT_CACHE_DIR: cache };
    expect(findTemporalCli(empty)).toBeUndefined();
    await expect(ensureTemporalCli(empty)).rejects.toThrow(/No Temporal CLI found and no Go toolchain to build it\. .*TEMPORAL_CLI_PATH.*go install github\.com\/temporalio\/cli\/cmd\/temporal@v1\.5\.1/);
    const cached = fake(path.join(cache, 'bin', 'temporal'));
    expect(findTemporalCli(empty)).toBe(cached);
    const onPath = fake(path.join(bin, 'temporal'));
    expect(findTemporalCli({ ...empty, PATH: bin })).toBe(onPath);
    expect(findTemporalCli({ ...empty, PATH: bin, TEMPORAL_CLI_PATH: cached })).toBe(cached);
    expect(() => findTemporalCli({ TEMPORAL_CLI_PATH: path.join(bin, 'missing') })).toThrow(/TEMPORAL_CLI_PATH=.*missing is not an executable file/);
    expect(cacheDir({ XDG_CACHE_HOME: '/xdg' })).toBe('/xdg/truthgpt');
    expect(cacheDir({ XDG_CACHE_HOME: '/xdg', TRUTHGPT_CACHE_DIR: '/c' })).toBe('/c');
    expect(cacheDir({})).toBe(path.join(os.homedir(), '.cache', 'truthgpt'));
  } finally {
    fs.rmSync(cache, { recursive: true, force: true });
    fs.rmSync(bin, { recursive: true, force: true });
  }
});

test('a Temporal CLI build reports what go does, for how long, and where its log is', () => {
  expect(buildLogProgress('')).toEqual({ packages: 0, activity: 'resolving modules or linking cached packages' });
  expect(buildLogProgress('go: downloading go.temporal.io/server v1.29.1\ngo: downloading github.com/zeebo/errs v1.4.0\n')).toEqual({ packages: 0, activity: 'downloading modules' });
  const compiling = 'go: downloading cel.dev/expr v0.23.1\ninternal/abi\nruntime\ngo.temporal.io/server/service/history\n';
  expect(buildLogProgress(compiling)).toEqual({ packages: 3, activity: 'compiling go.temporal.io/server/service/history' });
  expect(buildLogProgress(`${compiling}github.com/temporalio/cli/cmd/temporal\n`)).toEqual({ packages: 4, activity: 'linking the binary' });
  const line = formatBuildProgress({ tool: 'the Temporal CLI v1.5.1', elapsedMs: 125_400, packages: 3, activity: 'compiling runtime', buildLog: 'cache/temporal-build.log', done: false });
  expect(line).toBe('building the Temporal CLI v1.5.1: 2m05s, 3 packages compiled, compiling runtime (log: cache/temporal-build.log)');
  expect(formatBuildProgress({ tool: 'the Temporal CLI v1.5.1', elapsedMs: 9_000, packages: 0, activity: 'downloading modules', buildLog: 'cache/l', builderPid: 42, done: false })).toContain('v1.5.1 (by pid 42): 9s, 0 packages');
});

test('a dev server that panics over an ephemeral port at start is started again', async () => {
  // The real CLI behind a wrapper whose first start dies as the dev server does when another
  // process takes the internal port it picked (seen in CI with several stacks starting at once).
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-race-'));
  try {
    const real = await ensureTemporalCli(process.env);
    const wrapper = path.join(d, 'temporal');
    const once = path.join(d, 'raced-once');
    fs.writeFileSync(
      wrapper,
      `#!/bin/sh\nif [ ! -e '${once}' ]; then touch '${once}'; echo 'panic: failed assigning ephemeral port: dial tcp 127.0.0.1:40123: connect: connection refused' >&2; exit 2; fi\nexec '${real}' "$@"\n`,
      { mode: 0o755 },
    );
    const [temporalPort, uiPort, s3Port] = [await freePort(), await freePort(), await freePort()];
    const raceEnv = { TRUTHGPT_STATE_DIR: path.join(d, 'state'), TRUTHGPT_TEMPORAL_PORT: String(temporalPort), TRUTHGPT_UI_PORT: String(uiPort), TRUTHGPT_S3_PORT: String(s3Port) };
    const raceConfig = loadConfig(raceEnv);
    const lines: string[] = [];
    try {
      const status = await stackUp(raceConfig, { env: { ...process.env, ...raceEnv, TEMPORAL_CLI_PATH: wrapper }, workers: false, log: (m) => lines.push(m) });
      expect(part(status, 'temporal').ok).toBe(true);
      expect(lines.filter((l) => l.startsWith('starting the Temporal dev server'))).toHaveLength(2);
      expect(lines).toContain('the Temporal dev server lost a race for one of its internal ports (attempt 1); starting it again');
    } finally {
      await stackDown(raceConfig).catch(() => {});
    }
  } finally {
    fs.rmSync(d, { recursive: true, force: true });
  }
}, 180_000);
