// `truthgpt doctor` and a GPU worker's startup check: can this machine run a pool's activities?
// For the GPU pool it checks, in the order a failure would bite: the device, ORT's platform, the
// CUDA provider libraries of the installed onnxruntime-node, the CUDA/cuDNN libraries those need
// (as the dynamic loader resolves them), and finally a tiny real training step on the device.
// Every failing line carries its fix. For the CPU pool: one line about GPUs, and the step on CPU.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { EngineError } from '../errors';
import { CUDA_INSTALL_STEP } from '../runtime/session';
import { fixForLibrary, providerCudaLibs, type CudaLib } from '../runtime/cuda-libs';
import { gptParams, gptTrainLoss, type GptConfig } from '../models/gpt';
import { getPreset } from '../models/presets';
import { OptimConfigSchema } from '../optim';
import { buildTrainStep } from '../train/step';
import { cudaFallbacks, cudaKernelSource, summarizeFallbacks } from './cuda-opset';
import { probeDevices, type DeviceInfo } from './devices';
import { findOffPath, lddNeeds, ldconfigCache, otherMajors, resolveByName, versionOfFile, type ResolvedLib } from './libs';
import { CUDA_PROVIDER_LIB, readProviderInstall, SHARED_PROVIDER_LIB, type ProviderInstall } from './provider';
import { runTinyStep, TINY_STEP, type TinyStepResult } from './step';

export { probeDevices, visibleCount, parseNvidiaSmi } from './devices';
export type { DeviceInfo, Gpu } from './devices';
export { parseLdd, parseLdconfig, lddNeeds } from './libs';
export { readProviderInstall, CUDA_PROVIDER_LIB, SHARED_PROVIDER_LIB } from './provider';
export type { ProviderInstall } from './provider';
export { runTinyStep, TINY_STEP } from './step';
export type { TinyStepResult } from './step';

/** The worker pools, as the doctor sees them: 'gpu' means a CUDA worker (TRUTHGPT_EP=cuda). */
export type DoctorPool = 'cpu' | 'gpu';
export type CheckStatus = 'ok' | 'fail' | 'skip' | 'info';

export interface DoctorCheck {
  /** Stable id: device, platform, provider, lib:<soname>, ldd, step. */
  id: string;
  status: CheckStatus;
  /** One line: what was checked and what was found. */
  line: string;
  /** The command or setting that fixes a failed check. */
  fix?: string;
  details?: Record<string, unknown>;
}

export interface DoctorReport {
  pool: DoctorPool;
  ep: 'cpu' | 'cuda';
  deviceId: number;
  ortVersion: string;
  bindingDir: string;
  checks: DoctorCheck[];
  /** True when the pool can run here. */
  ok: boolean;
  verdict: string;
}

export interface DoctorOptions {
  pool: DoctorPool;
  /** GPU index the worker would use (TRUTHGPT_DEVICE_ID); default 0. */
  deviceId?: number;
  /** Where to look for the provider libraries instead of onnxruntime-node's binding folder. */
  bindingDir?: string;
  /** Environment for the loader and nvidia-smi (LD_LIBRARY_PATH, CUDA_VISIBLE_DEVICES, PATH). */
  env?: NodeJS.ProcessEnv;
  procDir?: string;
  devDir?: string;
  /** Run the tiny training step (default true). */
  step?: boolean;
}

/** A GPU worker that cannot use its GPU: the message is the doctor's report, one line per problem. */
export class GpuSetupError extends EngineError {
  constructor(readonly report: DoctorReport) {
    super('cuda-unavailable', `this GPU worker cannot use its GPU, fix these first:\n${formatDoctor(report, { onlyProblems: true })}`);
  }
}

const NO_GPU_SOURCES = 'no nvidia-smi, /proc/driver/nvidia or /dev/nvidia*';

function describeGpus(d: DeviceInfo): string {
  const list = d.gpus.map((g) => `${g.index}${g.name ? ` ${g.name}` : ''}${g.memoryMiB ? ` (${g.memoryMiB} MiB)` : ''}`).join(', ');
  const driver = d.gpus[0]?.driver ? `, driver ${d.gpus[0].driver}` : '';
  const cvd = d.cudaVisibleDevices !== undefined ? `, CUDA_VISIBLE_DEVICES=${JSON.stringify(d.cudaVisibleDevices)} leaves ${d.visible} visible` : '';
  return `${d.gpus.length} GPU${d.gpus.length === 1 ? '' : 's'} (${d.source}${driver}): ${list}${cvd}`;
}

/** The device check of a GPU worker: a GPU exists, and the configured index is one of the visible ones. */
export function deviceCheck(d: DeviceInfo, deviceId: number): DoctorCheck {
  const details = { source: d.source, gpus: d.gpus, visible: d.visible, deviceId, ...(d.smiError ? { nvidiaSmiError: d.smiError } : {}) };
  if (d.gpus.length === 0) {
    return {
      id: 'device',
      status: 'fail',
      line: `GPU: none on this machine (${d.smiError ? `nvidia-smi: ${d.smiError}` : NO_GPU_SOURCES})`,
      fix: d.smiError
        ? 'load the NVIDIA driver (nvidia-smi must list the GPU); in a container, pass the GPU in (docker run --gpus ...)'
        : 'run the GPU pool on a host with an NVIDIA GPU and its driver (in a container: docker run --gpus ...); on this machine run the CPU pool (TRUTHGPT_EP=cpu)',
      details,
    };
  }
  if (deviceId >= d.visible) {
    const range = d.visible === 0 ? 'none are visible' : `valid: 0${d.visible > 1 ? `..${d.visible - 1}` : ''}`;
    return {
      id: 'device',
      status: 'fail',
      line: `device index: TRUTHGPT_DEVICE_ID=${deviceId}, but ${describeGpus(d)}; ${range}`,
      fix: d.visible === 0 ? 'unset CUDA_VISIBLE_DEVICES or list existing GPUs in it' : `set TRUTHGPT_DEVICE_ID to ${range.replace('valid: ', '')} (one worker process per GPU)`,
      details,
    };
  }
  const driver = d.gpus[0]?.driver;
  if (driver && compareVersions(driver, MIN_CUDA12_DRIVER) < 0) {
    return {
      id: 'device',
      status: 'fail',
      line: `NVIDIA driver ${driver} is older than CUDA 12 needs (>= ${MIN_CUDA12_DRIVER}): ${describeGpus(d)}`,
      fix: `update the NVIDIA driver to ${MIN_CUDA12_DRIVER} or newer (e.g. \`apt-get install nvidia-driver-550\`), then reboot or reload the module`,
      details,
    };
  }
  return { id: 'device', status: 'ok', line: `${describeGpus(d)}; TRUTHGPT_DEVICE_ID=${deviceId} is one of them`, details };
}

/** The oldest Linux driver that runs CUDA 12.x through minor-version compatibility (NVIDIA's CUDA compatibility table). */
export const MIN_CUDA12_DRIVER = '525.60.13';

/** Compares dotted numeric versions: '550.54' vs '525.60.13' → 1. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

const shortPath = (p: string) => {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
};

function providerCheck(inst: ProviderInstall): DoctorCheck {
  const build = `CUDA ${inst.cudaMajor} / cuDNN ${inst.cudnnMajor} build`;
  const need = [CUDA_PROVIDER_LIB, SHARED_PROVIDER_LIB].filter((f) => inst.files.length === 0 || inst.files.includes(f));
  const missing = need.filter((f) => !fs.existsSync(path.join(inst.bindingDir, f)));
  const details = { bindingDir: inst.bindingDir, manifest: inst.manifest, files: inst.files, gpuPackage: inst.gpuPackage, missing };
  if (missing.length > 0) {
    return {
      id: 'provider',
      status: 'fail',
      line: `CUDA provider of onnxruntime-node ${inst.ortVersion}: ${missing.join(', ')} missing in ${shortPath(inst.bindingDir)}`,
      fix: `\`${CUDA_INSTALL_STEP}\` (downloads ${inst.gpuPackage ?? "ORT's GPU package"}, the ${build}, and copies ${inst.files.join(', ')} there)`,
      details,
    };
  }
  return { id: 'provider', status: 'ok', line: `CUDA provider of onnxruntime-node ${inst.ortVersion} (${build}): ${need.join(', ')} in ${shortPath(inst.bindingDir)}`, details };
}

/** The libraries we name in the report: the ones the provider build needs plus anything ldd could not find. */
const isCudaLib = (soname: string) => /^lib(cudart|cublas|cublasLt|cudnn\w*|cufft|curand|cusparse|nvrtc|nvJitLink|cuda)\.so/.test(soname);

function libCheck(soname: string, known: CudaLib | undefined, found: { path: string; via: string } | null, cache: Map<string, string[]>, env: NodeJS.ProcessEnv, cudnnMajor: number): DoctorCheck {
  const label = known ? `${soname} (${known.what})` : soname;
  if (found) {
    const version = versionOfFile(found.path);
    return { id: `lib:${soname}`, status: 'ok', line: `${label}: ${version ?? 'found'} at ${found.path} (${found.via})`, details: { path: found.path, version, via: found.via } };
  }
  const offPath = findOffPath(soname, env);
  const majors = otherMajors(soname, cache);
  const notes = [
    ...(majors.length ? [`installed with another major only: ${majors.join(', ')}, and this build needs ${soname}`] : []),
    ...(offPath.length ? [`present at ${offPath[0]}, which the loader does not search`] : []),
  ];
  const fix = offPath.length
    ? `export LD_LIBRARY_PATH=${path.dirname(offPath[0]!)}:$LD_LIBRARY_PATH (or add that folder to /etc/ld.so.conf.d/ and run ldconfig)`
    : fixForLibrary(soname, cudnnMajor);
  return {
    id: `lib:${soname}`,
    status: 'fail',
    line: `${label}: not found${notes.length ? `; ${notes.join('; ')}` : ''}`,
    fix,
    details: { path: null, otherMajors: majors, offPath },
  };
}

/** The CUDA/cuDNN libraries the provider needs, as the loader resolves them. */
function libraryChecks(inst: ProviderInstall, env: NodeJS.ProcessEnv): DoctorCheck[] {
  const expected = providerCudaLibs(inst.cudnnMajor ?? 9);
  const lc = ldconfigCache(env);
  const cache = 'cache' in lc ? lc.cache : new Map<string, string[]>();
  const provider = path.join(inst.bindingDir, CUDA_PROVIDER_LIB);
  const checks: DoctorCheck[] = [];
  if (fs.existsSync(provider)) {
    // The provider exists: ldd says exactly what dlopen will miss, the same way ORT will meet it.
    const r = lddNeeds(provider, env);
    if ('error' in r) return [{ id: 'ldd', status: 'fail', line: `cannot list what ${CUDA_PROVIDER_LIB} needs: ${r.error}`, fix: 'install ldd (the libc-bin package) and re-run' }];
    const seen = new Set<string>();
    const byName = new Map(r.libs.map((l): [string, ResolvedLib] => [l.soname, l]));
    const named = [...expected.map((e) => e.soname).filter((s) => byName.has(s)), ...r.libs.map((l) => l.soname).filter((s) => isCudaLib(s) || byName.get(s)!.path === null)];
    for (const soname of named) {
      if (seen.has(soname)) continue;
      seen.add(soname);
      const l = byName.get(soname)!;
      checks.push(libCheck(soname, expected.find((e) => e.soname === soname), l.path ? { path: l.path, via: `ldd ${CUDA_PROVIDER_LIB}` } : null, cache, env, inst.cudnnMajor ?? 9));
    }
    return checks;
  }
  // No provider yet: look the libraries the build will need up by name, as dlopen would.
  if ('error' in lc) checks.push({ id: 'ldconfig', status: 'info', line: `the loader cache could not be read (${lc.error}); only LD_LIBRARY_PATH was searched` });
  for (const lib of expected) checks.push(libCheck(lib.soname, lib, resolveByName(lib.soname, cache, env), cache, env, inst.cudnnMajor ?? 9));
  return checks;
}

const ms = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(1)} s` : `${Math.round(x)} ms`);

function stepLine(r: TinyStepResult): string {
  const where = r.ep === 'cuda' ? `CUDA device ${r.deviceId}` : 'CPU';
  const { preset, batch, seq, steps } = TINY_STEP;
  return (
    `tiny training step on ${where}: ${steps} steps of ${preset} (batch ${batch}x${seq}), compile ${ms(r.compileMs)}, ` +
    `steps ${r.stepMs.map((s) => ms(s)).join(' / ')}, loss ${r.losses[0]!.toFixed(3)} → ${r.losses[r.losses.length - 1]!.toFixed(3)}`
  );
}

async function stepCheck(ep: 'cpu' | 'cuda', deviceId: number): Promise<DoctorCheck> {
  try {
    const r = await runTinyStep(ep, deviceId);
    return { id: 'step', status: 'ok', line: stepLine(r), details: { ...r } };
  } catch (e) {
    const msg = (e as Error).message;
    const fix = /Fix: (.*?); `truthgpt doctor/.exec(msg)?.[1];
    return { id: 'step', status: 'fail', line: `tiny training step on ${ep === 'cuda' ? `CUDA device ${deviceId}` : 'CPU'} failed: ${msg.split('\n')[0]}`, ...(fix ? { fix } : {}) };
  }
}

/**
 * Checks whether this machine can run `pool`'s activities and says what is missing.
 * @example const r = await runDoctor({ pool: 'gpu', deviceId: 0 }); console.log(formatDoctor(r));
 */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const env = opts.env ?? process.env;
  const deviceId = opts.deviceId ?? 0;
  const inst = readProviderInstall(opts.bindingDir);
  const devices = probeDevices({ env, procDir: opts.procDir, devDir: opts.devDir });
  const checks: DoctorCheck[] = [];
  const ep = opts.pool === 'gpu' ? 'cuda' : 'cpu';
  if (opts.pool === 'cpu') {
    checks.push(
      devices.gpus.length === 0
        ? { id: 'device', status: 'info', line: `GPU: none on this machine (${devices.smiError ? `nvidia-smi: ${devices.smiError}` : NO_GPU_SOURCES}): the GPU pool cannot run here, the CPU pool can`, details: { source: devices.source, gpus: [] } }
        : { id: 'device', status: 'info', line: `${describeGpus(devices)}; \`truthgpt doctor --pool gpu\` checks their CUDA setup`, details: { source: devices.source, gpus: devices.gpus } },
    );
  } else {
    checks.push(deviceCheck(devices, deviceId));
    if (!inst.manifest) {
      checks.push({
        id: 'platform',
        status: 'fail',
        line: `onnxruntime-node ${inst.ortVersion} has no CUDA provider for ${inst.platform}`,
        fix: 'run GPU workers on linux/x64, the one platform ORT ships a CUDA provider for in npm',
      });
    } else {
      checks.push(providerCheck(inst), ...libraryChecks(inst, env));
    }
  }
  const blocked = checks.some((c) => c.status === 'fail');
  if (opts.step === false) {
    // Asked not to run it (a quick look); nothing to add.
  } else if (blocked) {
    checks.push({ id: 'step', status: 'skip', line: `tiny training step on CUDA device ${deviceId}: not run until the lines above are fixed` });
  } else {
    checks.push(await stepCheck(ep, deviceId));
  }
  if (opts.pool === 'gpu') checks.push(halfCheck());
  const problems = checks.filter((c) => c.status === 'fail').length;
  const ok = problems === 0;
  const target = opts.pool === 'gpu' ? `the gpu pool (TRUTHGPT_EP=cuda) on device ${deviceId}` : 'the cpu pool';
  return {
    pool: opts.pool,
    ep,
    deviceId,
    ortVersion: inst.ortVersion,
    bindingDir: inst.bindingDir,
    checks,
    ok,
    verdict: ok ? `ok: this machine can run ${target}` : `cannot run ${target}: ${problems === 1 ? '1 problem, with its fix' : `${problems} problems, each with its fix`}`,
  };
}

const LABEL: Record<CheckStatus, string> = { ok: 'ok  ', fail: 'FAIL', skip: 'skip', info: 'info' };

/** Plain lines for people: one per check, its fix indented under it, the verdict last. */
export function formatDoctor(r: DoctorReport, opts: { onlyProblems?: boolean } = {}): string {
  const lines: string[] = [];
  if (!opts.onlyProblems) lines.push(`truthgpt doctor: pool ${r.pool} (ep ${r.ep}${r.ep === 'cuda' ? `, device ${r.deviceId}` : ''}), onnxruntime-node ${r.ortVersion}`);
  for (const c of r.checks) {
    if (opts.onlyProblems && c.status !== 'fail') continue;
    lines.push(`  ${LABEL[c.status]}  ${c.line}`);
    if (c.fix) lines.push(`        fix: ${c.fix}`);
  }
  if (!opts.onlyProblems) lines.push(r.verdict);
  return lines.join('\n');
}

/**
 * A CUDA worker's startup check: the doctor's GPU checks and tiny step, or a GpuSetupError whose
 * message lists what is missing with its fix (instead of an ORT error at the first activity).
 */
export async function assertGpuReady(deviceId: number, opts: Omit<DoctorOptions, 'pool' | 'deviceId'> = {}): Promise<DoctorReport> {
  const report = await runDoctor({ ...opts, pool: 'gpu', deviceId });
  if (!report.ok) throw new GpuSetupError(report);
  return report;
}

/**
 * What a half-precision (`precision: fp16 | bf16`) tiny-gpt step would run where on this worker's
 * CUDA EP, from the published kernel table (engine/doctor/cuda-opset.ts); nothing is run.
 */
function halfCheck(): DoctorCheck {
  const cfg = getPreset(TINY_STEP.preset).config as GptConfig;
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } });
  const parts = (['fp16', 'bf16'] as const).map((precision) => {
    const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, TINY_STEP.batch, TINY_STEP.seq) }, optim, { precision: { precision, mode: 'half' } });
    const lines = summarizeFallbacks(cudaFallbacks(step.graph));
    return `${precision}: ${lines.length ? `falls back to the CPU EP: ${lines.join('; ')}` : 'every op has a CUDA kernel'}`;
  });
  return { id: 'half', status: 'info', line: `half-precision GPT step (not run; by ${cudaKernelSource().split(' (')[0]}'s kernel table): ${parts.join(' | ')}` };
}
