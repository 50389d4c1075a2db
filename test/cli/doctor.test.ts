// `truthgpt doctor` and a worker's startup check as a user meets them: real processes, real exit
// codes. A CUDA worker that lacks a piece stops before it connects to Temporal, printing the
// doctor's lines; a CPU worker never runs the check.

import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { probeDevices, type DoctorReport } from '../../engine/doctor';
import { ortPackage } from '../../engine/runtime';
import { freePort } from '../../infra/ports';
import { buildFakeProvider, type FakeProvider } from '../helpers/fake-provider';

const root = join(__dirname, '..', '..');
const cli = join(root, 'bin', 'truthgpt.js');
// Nothing of the caller's CUDA or truthgpt settings leaks into the child.
const baseEnv = { PATH: process.env.PATH, HOME: process.env.HOME, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
const hasGpu = probeDevices().gpus.length > 0;

const truthgpt = (args: string[], env: Record<string, string | undefined> = {}) =>
  spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', env: { ...baseEnv, ...env } });

let fake: FakeProvider;
beforeAll(() => {
  fake = buildFakeProvider();
});
afterAll(() => fake.cleanup());

(hasGpu ? describe.skip : describe)('truthgpt doctor on a machine without a GPU', () => {
  test('the CPU pool: one line about the GPU, the step on CPU, exit 0', () => {
    const r = truthgpt(['doctor']);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(`truthgpt doctor: pool cpu (ep cpu), onnxruntime-node ${ortPackage().version}`);
    expect(lines[1]).toMatch(/^ {2}info {2}GPU: none on this machine .*the CPU pool can$/);
    expect(lines[2]).toMatch(/^ {2}ok {4}tiny training step on CPU: 3 steps of tiny-gpt .*, loss \d\.\d{3} → \d\.\d{3}$/);
    expect(lines.at(-1)).toBe('ok: this machine can run the cpu pool');
  });

  test('--pool gpu --json against a provider missing libcudnn.so.9: exit 1, the library and its fix in the JSON', () => {
    const r = truthgpt(['doctor', '--pool', 'gpu', '--provider-dir', fake.bindingDir, '--json']);
    expect(r.status).toBe(1);
    const report = JSON.parse(r.stdout) as DoctorReport;
    expect(report.ok).toBe(false);
    expect(report.checks.find((c) => c.id === 'device')!.status).toBe('fail');
    const cudnn = report.checks.find((c) => c.id === 'lib:libcudnn.so.9')!;
    expect(cudnn).toMatchObject({ status: 'fail', line: 'libcudnn.so.9 (cuDNN 9): not found' });
    expect(cudnn.fix).toContain('apt-get install libcudnn9-cuda-12');
  });

  test('TRUTHGPT_EP and TRUTHGPT_DEVICE_ID pick the pool and device; a bad --pool is one line', () => {
    expect(truthgpt(['doctor', '--provider-dir', fake.bindingDir], { TRUTHGPT_EP: 'cuda', TRUTHGPT_DEVICE_ID: '3' }).stdout).toMatch(/^truthgpt doctor: pool gpu \(ep cuda, device 3\)/);
    const bad = truthgpt(['doctor', '--pool', 'tpu']);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toBe('truthgpt: doctor --pool: expected gpu or cpu, got "tpu"');
  });
});

(hasGpu ? describe.skip : describe)('worker startup', () => {
  const worker = (env: Record<string, string>) =>
    spawnSync(process.execPath, ['--import', 'tsx', join(root, 'workers', 'main.ts'), '--pool', 'gpu'], { cwd: root, encoding: 'utf8', env: { ...baseEnv, ...env }, timeout: 60_000 });

  test('a CUDA worker without a GPU fails fast with the doctor lines, before it dials Temporal', async () => {
    const port = await freePort();
    const r = worker({ TRUTHGPT_EP: 'cuda', TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^worker: this GPU worker cannot use its GPU, fix these first:\n {2}FAIL {2}GPU: none on this machine/);
    expect(r.stderr).toContain('        fix: ');
    expect(r.stderr).not.toMatch(/TransportError|\n\s+at /);
  });

  test('a CPU-ep worker on the same queue runs no GPU check: it goes straight to Temporal', async () => {
    const port = await freePort();
    const r = worker({ TRUTHGPT_EP: 'cpu', TEMPORAL_ADDRESS: `127.0.0.1:${port}` });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/TransportError.*Connection refused/);
    expect(r.stderr).not.toContain('cannot use its GPU');
  });
});
