// `truthgpt worker` as a host runs it, against a real Temporal dev server and S3 server on loopback
// (test/integration/hosts.test.ts runs it on separate network namespaces): the ready line once
// every worker polls, a killed worker restarted by its supervisor, SIGTERM stopping everything,
// and one-line errors naming the part that does not answer.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Connection } from '@temporalio/client';
import { loadConfig } from '../../infra/config';
import { freePort } from '../../infra/ports';
import { queuePollers } from '../../infra/stack-health';
import { parsePools, workerSlots } from '../../sdk/cli/worker-command';
import { withS3, type S3Fixture } from '../helpers/s3';
import { withTemporal, type TemporalFixture } from '../helpers/temporal';

const exec = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');
const CLI = path.join(REPO, 'bin/truthgpt.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let temporal: TemporalFixture;
let s3: S3Fixture;
let dir: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  [temporal, s3] = await Promise.all([withTemporal(), withS3({ bucket: 'truthgpt-worker-cmd' })]);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-worker-cmd-'));
  // The local stack's variables, as on the stack's own host: the defaults point at loopback.
  env = {
    ...process.env,
    TRUTHGPT_TEMPORAL_PORT: String(temporal.port),
    TRUTHGPT_UI_PORT: String(temporal.uiPort),
    TRUTHGPT_S3_PORT: String(s3.server.port),
    TRUTHGPT_S3_BUCKET: 'truthgpt-worker-cmd',
    TRUTHGPT_STATE_DIR: dir,
  };
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([temporal?.close(), s3?.close()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

async function cli(extra: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    const { stderr } = await exec(process.execPath, [CLI, ...args], { cwd: REPO, env: { ...env, ...extra } });
    return { code: 0, stderr };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function waitForLine(out: string[], child: ChildProcess, re: RegExp, ms: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    for (const l of out) {
      const m = re.exec(l);
      if (m) return m;
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no line matching ${re} (exit ${child.exitCode}):\n${out.join('\n')}`);
    await sleep(100);
  }
}

test('pools and worker processes from the options', () => {
  expect(parsePools(['gpu,cpu'])).toEqual(['gpu', 'cpu']);
  expect(parsePools(['cpu', 'gpu', 'cpu'])).toEqual(['cpu', 'gpu']);
  expect(() => parsePools(['tpu'])).toThrow('worker --pool: expected gpu or cpu, got "tpu"');
  expect(workerSlots(['gpu', 'cpu'], 2, undefined).map((s) => s.name)).toEqual(['gpu.0', 'gpu.1', 'workflows.0', 'cpu.0', 'cpu.1']);
  expect(workerSlots(['gpu'], 1, [2, 5])).toEqual([
    { role: 'gpu', name: 'gpu.2', env: { TRUTHGPT_EP: 'cuda', TRUTHGPT_DEVICE_ID: '2' } },
    { role: 'gpu', name: 'gpu.5', env: { TRUTHGPT_EP: 'cuda', TRUTHGPT_DEVICE_ID: '5' } },
  ]);
});

test('TRUTHGPT_BIND_HOST: loopback by default, 0.0.0.0 for other hosts, one interface refused with the reason', () => {
  expect(loadConfig({}).stack).toMatchObject({ bindHost: '127.0.0.1', host: '127.0.0.1' });
  expect(loadConfig({ TRUTHGPT_BIND_HOST: '0.0.0.0' }).stack).toMatchObject({ bindHost: '0.0.0.0', host: '127.0.0.1' });
  expect(() => loadConfig({ TRUTHGPT_BIND_HOST: '10.0.0.5' })).toThrow(/TRUTHGPT_BIND_HOST="10.0.0.5": expected 127.0.0.1 .* or 0.0.0.0 .*dials its own internal services at 127.0.0.1/);
});

test('a part that does not answer is named in one line with its address', async () => {
  const deadPort = await freePort();
  const noTemporal = await cli({ TRUTHGPT_TEMPORAL_PORT: String(deadPort) }, 'worker', '--pool', 'gpu');
  expect(noTemporal.code).toBe(1);
  expect(noTemporal.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^truthgpt: cannot reach Temporal at 127\\.0\\.0\\.1:${deadPort} \\(TEMPORAL_ADDRESS unset: the local stack's address; namespace default\\): `))]);
  const noS3 = await cli({ TRUTHGPT_S3_ENDPOINT: `http://127.0.0.1:${deadPort}`, TRUTHGPT_S3_ACCESS_KEY_ID: 'S3RVER', TRUTHGPT_S3_SECRET_ACCESS_KEY: 'S3RVER' }, 'worker', '--pool', 'gpu');
  expect(noS3.code).toBe(1);
  expect(noS3.stderr.trim().split('\n')).toEqual([expect.stringContaining(`truthgpt: cannot reach S3 at http://127.0.0.1:${deadPort} (TRUTHGPT_S3_ENDPOINT; bucket truthgpt-worker-cmd): `)]);
  const wrongBucket = await cli({ TRUTHGPT_S3_BUCKET: 'no-such-bucket' }, 'worker', '--pool', 'gpu');
  expect(wrongBucket.stderr).toContain('cannot reach S3 at');
  expect(wrongBucket.stderr).toContain('bucket does not exist');
}, 120_000);

test('ready once both gpu workers poll; a killed worker is restarted and polls again; SIGTERM stops them all', async () => {
  const child = spawn(process.execPath, [CLI, 'worker', '--pool', 'gpu', '--processes', '2'], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  const collect = (d: Buffer) => out.push(...d.toString().split('\n').filter(Boolean));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    const ready = await waitForLine(out, child, /truthgpt worker ready on .*: gpu\.0 pid (\d+), gpu\.1 pid (\d+); temporal 127\.0\.0\.1:\d+ namespace default, s3 http:\/\/127\.0\.0\.1:\d+ bucket truthgpt-worker-cmd/, 120_000);
    const [pid0, pid1] = [Number(ready[1]), Number(ready[2])];
    const pollers = (await queuePollers(temporal.client.connection as Connection, 'default', 'truthgpt-gpu', 'activity')).map((p) => p.identity);
    expect(pollers).toEqual(expect.arrayContaining([`truthgpt-gpu-${pid0}@${os.hostname()}`, `truthgpt-gpu-${pid1}@${os.hostname()}`]));
    expect(fs.existsSync(path.join(dir, 'logs', 'worker-gpu.1.log'))).toBe(true);

    process.kill(pid1, 'SIGKILL');
    const back = await waitForLine(out, child, /worker gpu\.1 pid (\d+) is back, polling truthgpt-gpu/, 120_000);
    const pid1b = Number(back[1]);
    expect(pid1b).not.toBe(pid1);
    expect(out.some((l) => l.includes(`gpu.1 worker pid ${pid1} exited (SIGKILL)`))).toBe(true);
    expect(alive(pid0)).toBe(true);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out.at(-1)).toMatch(/worker: stopped$/);
    expect([alive(pid0), alive(pid1b)]).toEqual([false, false]);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}, 300_000);
