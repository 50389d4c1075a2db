// The doctor (engine/doctor/) on this machine, for real: the CPU pool's path with its tiny step,
// the GPU pool's refusal on a machine without a GPU, and the missing-library diagnosis through the
// real `ldd` on a gcc-built library that needs a cuDNN stub the loader cannot find.

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deviceCheck, formatDoctor, probeDevices, runDoctor, visibleCount, parseLdconfig, type DoctorReport } from '../../engine/doctor';
import { otherMajors } from '../../engine/doctor/libs';
import { CUDA_INSTALL_STEP, fixForLibrary, missingLibraryIn, ortBindingDir } from '../../engine/runtime';
import { buildFakeProvider, type FakeProvider } from '../helpers/fake-provider';

const check = (r: DoctorReport, id: string) => r.checks.find((c) => c.id === id);
// Only PATH: the loader must see no LD_LIBRARY_PATH or CUDA_HOME the test did not set.
const cleanEnv = { PATH: process.env.PATH };
const hasGpu = probeDevices().gpus.length > 0;

describe('doctor on this machine', () => {
  (hasGpu ? it.skip : it)('CPU pool without a GPU: one line says so, the tiny step runs on CPU, exit status ok', async () => {
    const r = await runDoctor({ pool: 'cpu' });
    expect(r.ok).toBe(true);
    expect(r.checks.map((c) => c.id)).toEqual(['device', 'step']);
    expect(check(r, 'device')!.line).toMatch(/^GPU: none on this machine \(.*\): the GPU pool cannot run here, the CPU pool can$/);
    const step = check(r, 'step')!;
    expect(step.status).toBe('ok');
    expect(step.line).toMatch(/^tiny training step on CPU: 3 steps of tiny-gpt/);
    const d = step.details as { ep: string; stepMs: number[]; losses: number[] };
    expect(d.ep).toBe('cpu');
    expect(d.stepMs).toHaveLength(3);
    expect(d.losses.every(Number.isFinite)).toBe(true);
    // A random-token LM starts near ln(256) = 5.55.
    expect(d.losses[0]).toBeGreaterThan(5);
    expect(d.losses[0]).toBeLessThan(6);
    const text = formatDoctor(r);
    expect(text.split('\n').filter((l) => /GPU/.test(l))).toHaveLength(1);
    expect(text.split('\n').at(-1)).toBe('ok: this machine can run the cpu pool');
  });

  (hasGpu ? it.skip : it)('GPU pool without a GPU: fails, names each missing piece with its fix, and does not run the step', async () => {
    const r = await runDoctor({ pool: 'gpu', deviceId: 0, env: cleanEnv });
    expect(r.ok).toBe(false);
    const device = check(r, 'device')!;
    expect(device.status).toBe('fail');
    expect(device.fix).toMatch(/TRUTHGPT_EP=cpu/);
    if (!fs.existsSync(path.join(ortBindingDir(), 'libonnxruntime_providers_cuda.so'))) {
      const provider = check(r, 'provider')!;
      expect(provider.status).toBe('fail');
      expect(provider.line).toMatch(/libonnxruntime_providers_cuda\.so, libonnxruntime_providers_shared\.so missing/);
      expect(provider.fix).toContain(CUDA_INSTALL_STEP);
      expect(provider.fix).toContain('CUDA 12 / cuDNN 9 build');
    }
    expect(check(r, 'step')!.status).toBe('skip');
    expect(r.verdict).toMatch(/^cannot run the gpu pool \(TRUTHGPT_EP=cuda\) on device 0: \d+ problems, each with its fix$/);
  });
});

describe('missing CUDA libraries, as the real loader sees them', () => {
  let fake: FakeProvider;
  beforeAll(() => {
    fake = buildFakeProvider();
  });
  afterAll(() => fake.cleanup());

  it('a provider whose libcudnn.so.9 is gone: ldd says "not found", the doctor names it and the fix', async () => {
    const r = await runDoctor({ pool: 'gpu', bindingDir: fake.bindingDir, env: cleanEnv, step: false });
    expect(check(r, 'provider')!.status).toBe('ok');
    const cudnn = check(r, 'lib:libcudnn.so.9')!;
    expect(cudnn.status).toBe('fail');
    expect(cudnn.line).toBe('libcudnn.so.9 (cuDNN 9): not found');
    expect(cudnn.fix).toContain('apt-get install libcudnn9-cuda-12');
    expect(cudnn.fix).toContain('pip install nvidia-cudnn-cu12');
    // libc and friends resolve, so they are not reported: only CUDA libraries and missing ones are.
    expect(r.checks.filter((c) => c.id.startsWith('lib:')).map((c) => c.id)).toEqual(['lib:libcudnn.so.9']);
    expect(formatDoctor(r)).toContain('  FAIL  libcudnn.so.9 (cuDNN 9): not found\n        fix: install cuDNN 9: `apt-get install libcudnn9-cuda-12`');
  });

  it('the same library present under CUDA_HOME but off the loader path: the fix is the LD_LIBRARY_PATH line', async () => {
    const r = await runDoctor({ pool: 'gpu', bindingDir: fake.bindingDir, env: { ...cleanEnv, CUDA_HOME: fake.cudaHome }, step: false });
    const cudnn = check(r, 'lib:libcudnn.so.9')!;
    expect(cudnn.status).toBe('fail');
    expect(cudnn.line).toBe(`libcudnn.so.9 (cuDNN 9): not found; present at ${path.join(fake.cudnnDir, 'libcudnn.so.9')}, which the loader does not search`);
    expect(cudnn.fix).toBe(`export LD_LIBRARY_PATH=${fake.cudnnDir}:$LD_LIBRARY_PATH (or add that folder to /etc/ld.so.conf.d/ and run ldconfig)`);
  });

  it('with that folder on LD_LIBRARY_PATH, ldd resolves it and the doctor reports the version from the file name', async () => {
    const r = await runDoctor({ pool: 'gpu', bindingDir: fake.bindingDir, env: { ...cleanEnv, LD_LIBRARY_PATH: fake.cudnnDir }, step: false });
    const cudnn = check(r, 'lib:libcudnn.so.9')!;
    expect(cudnn.status).toBe('ok');
    expect(cudnn.line).toBe(`libcudnn.so.9 (cuDNN 9): 9.1.0 at ${path.join(fake.cudnnDir, 'libcudnn.so.9')} (ldd libonnxruntime_providers_cuda.so)`);
  });

  it('without the provider library, the libraries are looked up by name (LD_LIBRARY_PATH, then ldconfig -p)', async () => {
    const empty = path.join(fake.root, 'empty');
    fs.mkdirSync(empty, { recursive: true });
    const r = await runDoctor({ pool: 'gpu', bindingDir: empty, env: { ...cleanEnv, LD_LIBRARY_PATH: fake.cudnnDir }, step: false });
    expect(check(r, 'provider')!.status).toBe('fail');
    const ids = r.checks.filter((c) => c.id.startsWith('lib:')).map((c) => c.id);
    expect(ids).toEqual(['lib:libcudart.so.12', 'lib:libcublas.so.12', 'lib:libcublasLt.so.12', 'lib:libcufft.so.11', 'lib:libcurand.so.10', 'lib:libcudnn.so.9']);
    expect(check(r, 'lib:libcudnn.so.9')!.line).toBe(`libcudnn.so.9 (cuDNN 9): 9.1.0 at ${path.join(fake.cudnnDir, 'libcudnn.so.9')} (LD_LIBRARY_PATH)`);
  });
});

describe('doctor pieces', () => {
  it("reads ORT's load error and names the library and its fix", () => {
    const msg =
      '/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1778 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() ' +
      '[ONNXRuntimeError] : 1 : FAIL : Failed to load library libonnxruntime_providers_cuda.so with error: libcudnn.so.9: cannot open shared object file: No such file or directory';
    expect(missingLibraryIn(msg)).toBe('libcudnn.so.9');
    expect(fixForLibrary('libcudnn.so.9')).toMatch(/^install cuDNN 9: `apt-get install libcudnn9-cuda-12`/);
    // cuDNN 9's sub-libraries point at the cuDNN package too.
    expect(fixForLibrary('libcudnn_adv.so.9')).toBe(fixForLibrary('libcudnn.so.9'));
    expect(fixForLibrary('libfoo.so.3')).toMatch(/ships libfoo\.so\.3.*LD_LIBRARY_PATH/);
  });

  it('finds another major of a wanted library in the loader cache', () => {
    const cache = parseLdconfig(
      '3 libs found in cache `/etc/ld.so.cache\'\n' +
        '\tlibcudnn.so.8 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.8\n' +
        '\tlibcudnn.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so\n' +
        '\tlibcudnn.so.8 (libc6) => /usr/lib/i386-linux-gnu/libcudnn.so.8\n',
    );
    expect(otherMajors('libcudnn.so.9', cache)).toEqual(['libcudnn.so.8 (/usr/lib/x86_64-linux-gnu/libcudnn.so.8)']);
  });

  it('checks the configured device index against the visible GPUs', () => {
    const two = { source: 'nvidia-smi' as const, gpus: [{ index: 0, name: 'NVIDIA H100', memoryMiB: 81559, driver: '550.54' }, { index: 1, name: 'NVIDIA H100', memoryMiB: 81559, driver: '550.54' }], visible: 2 };
    expect(deviceCheck(two, 1).status).toBe('ok');
    const bad = deviceCheck(two, 2);
    expect(bad.status).toBe('fail');
    expect(bad.line).toMatch(/TRUTHGPT_DEVICE_ID=2, but 2 GPUs \(nvidia-smi, driver 550\.54\)/);
    expect(bad.fix).toBe('set TRUTHGPT_DEVICE_ID to 0..1 (one worker process per GPU)');
    // A container given one GPU sees it as index 0, whatever its host index.
    expect(visibleCount(4, '2')).toBe(1);
    expect(visibleCount(2, '0,5,1')).toBe(1);
    expect(visibleCount(2, '')).toBe(0);
    expect(deviceCheck({ ...two, visible: visibleCount(2, ''), cudaVisibleDevices: '' }, 0).fix).toBe('unset CUDA_VISIBLE_DEVICES or list existing GPUs in it');
    // CUDA 12 needs driver 525.60.13 or newer.
    const old = deviceCheck({ ...two, gpus: two.gpus.map((g) => ({ ...g, driver: '470.256.02' })) }, 0);
    expect(old.status).toBe('fail');
    expect(old.line).toMatch(/^NVIDIA driver 470\.256\.02 is older than CUDA 12 needs \(>= 525\.60\.13\)/);
    expect(deviceCheck({ ...two, gpus: two.gpus.map((g) => ({ ...g, driver: '525.60.13' })) }, 0).status).toBe('ok');
  });

  it('counts GPUs from /dev/nvidia<N> when neither nvidia-smi nor /proc/driver/nvidia is there', () => {
    const dev = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-dev-'));
    try {
      for (const n of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm']) fs.writeFileSync(path.join(dev, n), '');
      const d = probeDevices({ env: { PATH: '' }, procDir: path.join(dev, 'no-proc'), devDir: dev });
      expect(d.source).toBe('/dev/nvidia*');
      expect(d.gpus.map((g) => g.index)).toEqual([0, 1]);
    } finally {
      fs.rmSync(dev, { recursive: true, force: true });
    }
  });
});
