// `truthgpt status` against a Temporal frontend that is half up (connects, then answers UNAVAILABLE,
// as one does while it starts or restarts). It used to die with "Channel has been shut down", an
// unhandled rejection from a client retry still pending when status closed its connection; it must
// print one DOWN line per part instead, and exit 1.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../infra/ports';
import { startHalfUpFrontend, type HalfUpFrontend } from '../helpers/half-up-frontend';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');

let frontend: HalfUpFrontend;
let dir: string;

beforeAll(async () => {
  frontend = await startHalfUpFrontend();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-status-'));
});

afterAll(async () => {
  await frontend?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function status(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [path.join(REPO, 'bin/truthgpt.js'), 'status'], { cwd: REPO, env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const s3Down = async () => ({
  TRUTHGPT_S3_ENDPOINT: `http://127.0.0.1:${await freePort()}`,
  TRUTHGPT_S3_ACCESS_KEY_ID: 'test',
  TRUTHGPT_S3_SECRET_ACCESS_KEY: 'test',
});

test('a half-up frontend: one DOWN line per part, exit 1, no stack trace, each check asked once', async () => {
  const res = await status({ TRUTHGPT_STATE_DIR: dir, TEMPORAL_ADDRESS: frontend.address, ...(await s3Down()) });
  expect(res.stderr).not.toContain('Channel has been shut down');
  expect(res.stderr).not.toMatch(/^\s+at /m);
  expect(res.code).toBe(1);
  const lines = res.stdout.trim().split('\n');
  expect(lines.filter((l) => l.startsWith('DOWN')).map((l) => l.split(/\s+/)[1])).toEqual(['temporal', 's3', 'worker-gpu', 'worker-cpu', 'worker-workflows']);
  expect(res.stdout).toContain(`frontend ${frontend.address}: 14 UNAVAILABLE: frontend is starting`);
  expect(lines[lines.length - 1]).toBe('down: temporal, s3, worker-gpu, worker-cpu, worker-workflows');
  // No retries behind status's back: one DescribeNamespace, one DescribeTaskQueue per worker role
  // (the old code sent 10 and 23 here, and was still retrying when it closed the connection).
  expect(Object.fromEntries(frontend.refused)).toEqual({ DescribeNamespace: 1, DescribeTaskQueue: 3 });
}, 120_000);

test('no frontend at all: the same one-line verdicts', async () => {
  const address = `127.0.0.1:${await freePort()}`;
  const res = await status({ TRUTHGPT_STATE_DIR: dir, TEMPORAL_ADDRESS: address, ...(await s3Down()) });
  expect(res.stderr).not.toMatch(/^\s+at /m);
  expect(res.code).toBe(1);
  expect(res.stdout).toContain(`DOWN  temporal`);
  expect(res.stdout).toContain(`frontend ${address} unreachable:`);
  expect(res.stdout).toMatch(/worker-cpu .*cannot ask, the frontend is down/);
  expect(res.stdout.trim().split('\n').pop()).toBe('down: temporal, s3, worker-gpu, worker-cpu, worker-workflows');
}, 120_000);
