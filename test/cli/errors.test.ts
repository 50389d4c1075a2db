// What the CLI prints when something goes wrong: one line a person can act on, never a stack
// trace unless TRUTHGPT_DEBUG=1 asks for it; bad run ids and oversized specs are refused before
// anything connects anywhere.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../infra/ports';
import { InvalidKeyError } from '../../infra/keys';
import { runIdProblem } from '../../artifacts/keys';
import { checkPayload, checkRunId, InvalidRunIdError, PayloadTooLargeError } from '../../sdk';
import { describeCliError } from '../../sdk/cli/errors';
import { MAX_PAYLOAD_BYTES } from '../../spec/payloads';

const BIN = path.join(__dirname, '../../bin/truthgpt.js');

test('a run id is one store-safe name', () => {
  for (const ok of ['pipeline-brown-20261202-193129', 'a.b_c=d+e', 'x'.repeat(200)]) expect(runIdProblem(ok)).toBeNull();
  expect(runIdProblem('../x')).toMatch(/contains '\/'/);
  expect(runIdProblem('..')).toBe("'..' is not a name");
  expect(runIdProblem('a b')).toMatch(/contains U\+0020/);
  expect(runIdProblem('')).toBe('it is empty');
  expect(runIdProblem('x'.repeat(201))).toBe('it is 201 characters long, 200 at most');
  expect(() => checkRunId('../x', '--id')).toThrow(InvalidRunIdError);
  expect(() => checkRunId('../x', '--id')).toThrow(/^--id "\.\.\/x" cannot be used: it contains '\/'; a run id is one name of/);
});

test('a workflow input above 256 KiB is refused, naming its size', () => {
  expect(() => checkPayload('the pipeline spec', { name: 'ok' })).not.toThrow();
  const big = { name: 'x'.repeat(MAX_PAYLOAD_BYTES) };
  expect(() => checkPayload('the pipeline spec', big)).toThrow(PayloadTooLargeError);
  expect(() => checkPayload('the pipeline spec', big)).toThrow(/^the pipeline spec is 256\.0 KiB as JSON, above the 256\.0 KiB Temporal keeps/);
});

test('errors become one line: user errors their message, S3 setup errors what to check, the rest a hint', () => {
  expect(describeCliError(new InvalidKeyError('../../etc/passwd', "key must not contain a '..' segment"), {})).not.toContain('\n');
  const s3 = Object.assign(new Error('The AWS Access Key Id you provided does not exist in our records.'), { name: 'InvalidAccessKeyId' });
  expect(describeCliError(s3, {})).toBe('S3 does not know this access key: check TRUTHGPT_S3_ACCESS_KEY_ID (and TRUTHGPT_S3_ENDPOINT) (S3 said InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.)');
  const bug = new TypeError("Cannot read properties of undefined (reading 'x')\n    at somewhere");
  expect(describeCliError(bug, {})).toBe("TypeError: Cannot read properties of undefined (reading 'x') (this looks like a bug or an outage; TRUTHGPT_DEBUG=1 shows the stack trace)");
  expect(describeCliError(bug, { TRUTHGPT_DEBUG: '1' })).toContain('at ');
});

describe('the real CLI refuses before connecting', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-cli-errors-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  // Nothing listens on these ports: a check that connected first would fail differently.
  const cli = async (args: string[]) => {
    const ports = ['--temporal-port', String(await freePort()), '--s3-port', String(await freePort()), '--state-dir', dir];
    return promisify(execFile)(process.execPath, [BIN, ...args, ...ports], { timeout: 60_000 }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
  };

  test('--id with a path in it', async () => {
    const spec = path.join(dir, 'tiny.json');
    fs.copyFileSync(path.join(__dirname, '../../examples/tiny.json'), spec);
    const r = await cli(['run', spec, '--id', '../x']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`truthgpt: --id "../x" cannot be used: it contains '/'; a run id is one name of A-Z a-z 0-9 . _ - = + (it names the run's folder in the store)\n`);
  });

  test('a spec file of 2 MiB', async () => {
    const spec = path.join(dir, 'huge.json');
    fs.writeFileSync(spec, JSON.stringify({ name: 'huge', notes: 'x'.repeat(2 * 2 ** 20) }));
    const r = await cli(['run', spec]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^truthgpt: spec file .*huge\.json is 2\.0 MiB, above 1 MiB: a spec holds settings, not data; put text or weights in files or S3 and name them by path or key\n$/);
  });
});
