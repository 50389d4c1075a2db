// TRUTHGPT_SCRATCH_DIR (README, Configuration): a worker refuses a value that is not an existing
// absolute folder, naming the variable, before it connects to anything. (That a worker's dataset
// scratch lands there is what the fault campaign's disk-full runs rely on: test/faults/campaign.)

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const REPO = path.resolve(__dirname, '../..');

function worker(scratch: string) {
  return spawnSync(process.execPath, ['--require', require.resolve('tsx/cjs'), path.join(REPO, 'workers/main.ts'), '--pool', 'cpu'], {
    cwd: REPO,
    // Nothing listens there: a worker that got past the check would fail on connecting instead.
    env: { ...process.env, TRUTHGPT_SCRATCH_DIR: scratch, TEMPORAL_ADDRESS: '127.0.0.1:1', TRUTHGPT_S3_ENDPOINT: 'http://127.0.0.1:1' },
    encoding: 'utf8',
    timeout: 60_000,
  });
}

test.each([
  ['a relative path', 'scratch'],
  ['a folder that does not exist', path.join(os.tmpdir(), 'truthgpt-no-such-scratch-dir')],
  ['a file', __filename],
])('%s is refused naming TRUTHGPT_SCRATCH_DIR', (_what, value) => {
  expect(fs.existsSync(path.join(os.tmpdir(), 'truthgpt-no-such-scratch-dir'))).toBe(false);
  const r = worker(value);
  expect(r.status).toBe(1);
  expect(r.stderr.split('\n')[0]).toBe(`worker: Error: TRUTHGPT_SCRATCH_DIR=${JSON.stringify(value)}: expected the absolute path of an existing folder`);
});
