// How many NVIDIA GPUs this process can use: nvidia-smi when it is installed (names, memory, driver),
// otherwise what the kernel driver shows (/proc/driver/nvidia/gpus, /dev/nvidia<N>). A set
// CUDA_VISIBLE_DEVICES narrows what CUDA (and so ORT's device_id) numbers from 0.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

export interface Gpu {
  index: number;
  name?: string;
  memoryMiB?: number;
  driver?: string;
}

export interface DeviceInfo {
  /** Where the count comes from. */
  source: 'nvidia-smi' | '/proc/driver/nvidia' | '/dev/nvidia*' | 'none';
  gpus: Gpu[];
  /** Devices CUDA numbers 0..visible-1 in this process (CUDA_VISIBLE_DEVICES applied). */
  visible: number;
  cudaVisibleDevices?: string;
  /** nvidia-smi ran but failed (typically: no driver loaded); its first line. */
  smiError?: string;
}

/** Parses `nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(stdout: string): Gpu[] {
  return stdout
    .split('\n')
    .map((l) => l.split(',').map((f) => f.trim()))
    .filter((f) => f.length >= 2 && /^\d+$/.test(f[0]!))
    .map(([index, name, mem, driver]) => ({ index: Number(index), name, memoryMiB: mem && /^\d+$/.test(mem) ? Number(mem) : undefined, driver }));
}

/** Applies CUDA_VISIBLE_DEVICES ("0,2", "GPU-uuid", "" for none) to a physical count. */
export function visibleCount(physical: number, cudaVisibleDevices: string | undefined): number {
  if (cudaVisibleDevices === undefined) return physical;
  const ids = cudaVisibleDevices.split(',').map((s) => s.trim());
  let n = 0;
  // CUDA stops at the first invalid entry; an index must exist, a UUID/MIG name is taken as given.
  for (const id of ids) {
    if (/^\d+$/.test(id) ? Number(id) < physical : /^(GPU|MIG)-/.test(id)) n++;
    else break;
  }
  return n;
}

export interface DeviceProbeOptions {
  env?: NodeJS.ProcessEnv;
  /** Roots to look at; tests point them at a folder of their own. */
  procDir?: string;
  devDir?: string;
}

/** Counts the GPUs, from the best source present. */
export function probeDevices(opts: DeviceProbeOptions = {}): DeviceInfo {
  const env = opts.env ?? process.env;
  const procDir = opts.procDir ?? '/proc/driver/nvidia';
  const devDir = opts.devDir ?? '/dev';
  const cvd = env.CUDA_VISIBLE_DEVICES;
  const done = (source: DeviceInfo['source'], gpus: Gpu[], smiError?: string): DeviceInfo => ({
    source,
    gpus,
    visible: visibleCount(gpus.length, cvd),
    ...(cvd !== undefined ? { cudaVisibleDevices: cvd } : {}),
    ...(smiError ? { smiError } : {}),
  });

  let smiError: string | undefined;
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=index,name,memory.total,driver_version', '--format=csv,noheader,nounits'], {
      env,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 20_000,
    });
    // nvidia-smi lists every GPU regardless of CUDA_VISIBLE_DEVICES; visibleCount narrows it.
    return done('nvidia-smi', parseNvidiaSmi(out));
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (err.code !== 'ENOENT') smiError = (`${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message).split('\n')[0];
  }

  const list = (d: string) => {
    try {
      return fs.readdirSync(d);
    } catch {
      return null;
    }
  };
  const procGpus = list(`${procDir}/gpus`);
  if (procGpus) {
    const gpus = procGpus.sort().map((bus, index) => {
      let name: string | undefined;
      try {
        name = /^Model:\s*(.+)$/m.exec(fs.readFileSync(`${procDir}/gpus/${bus}/information`, 'utf8'))?.[1]?.trim();
      } catch {
        // The information file is optional for the count.
      }
      return { index, name };
    });
    return done('/proc/driver/nvidia', gpus, smiError);
  }
  const nodes = (list(devDir) ?? []).filter((n) => /^nvidia\d+$/.test(n));
  if (nodes.length > 0) {
    const gpus = nodes.map((n) => Number(n.slice('nvidia'.length))).sort((a, b) => a - b).map((_, index) => ({ index }));
    return done('/dev/nvidia*', gpus, smiError);
  }
  return done('none', [], smiError);
}
