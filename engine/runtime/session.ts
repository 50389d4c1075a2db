// Creating onnxruntime-node sessions with TruthGPT's options, on the CPU or CUDA execution
// provider. The CUDA provider libraries are not in the npm package; when they are missing the
// error says exactly which command installs them.

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import { fixForLibrary, missingLibraryIn, providerCudnnMajor } from './cuda-libs';

export type ExecutionProvider = 'cpu' | 'cuda';
export type LogSeverity = 'verbose' | 'info' | 'warning' | 'error' | 'fatal';

export interface SessionConfig {
  /** Execution provider (default 'cpu'). With 'cuda', ops CUDA lacks fall back to the CPU. */
  ep?: ExecutionProvider;
  /** GPU index for 'cuda' (default 0). */
  deviceId?: number;
  /** Threads inside one op; ORT's default is one per physical core. */
  intraOpThreads?: number;
  /** Threads across independent ops (only used with executionMode 'parallel'). */
  interOpThreads?: number;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Minimum severity ORT logs (default 'error', so routine graph-cleanup warnings stay quiet). */
  logSeverity?: LogSeverity;
  executionMode?: 'sequential' | 'parallel';
  /** ORT's memory pattern (enableMemPattern; ORT's default on). A spec's `ortMemory.pattern` sets it for step sessions. */
  memPattern?: boolean;
  /** ORT's CPU memory arena (enableCpuMemArena; ORT's default on). A spec's `ortMemory.arena` sets it for step sessions. */
  cpuArena?: boolean;
}

/** The exact step that puts the CUDA provider libraries next to the ORT binding (README: GPU setup). */
export const CUDA_INSTALL_STEP = 'ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js';

const SEVERITY: Record<LogSeverity, 0 | 1 | 2 | 3 | 4> = { verbose: 0, info: 1, warning: 2, error: 3, fatal: 4 };

export class CudaUnavailableError extends EngineError {
  /** @param fix the one step that cures `detail` when it is known (a named missing library); else the README's GPU setup. */
  constructor(detail: string, fix?: string) {
    super(
      'cuda-unavailable',
      `ep 'cuda' requested but the CUDA execution provider cannot be used: ${detail}. ` +
        (fix
          ? `Fix: ${fix}; \`truthgpt doctor --pool gpu\` checks the whole setup.`
          : `README "GPU setup": install CUDA 12 and cuDNN 9, then run \`${CUDA_INSTALL_STEP}\` ` +
            `(it downloads ORT's GPU package for this exact version and copies libonnxruntime_providers_cuda.so, ` +
            `_shared.so and _tensorrt.so into node_modules/onnxruntime-node/bin/napi-v6/linux/x64/), or use ep 'cpu'.`),
    );
  }
}

/** The installed onnxruntime-node's package folder and version. */
export function ortPackage(): { dir: string; version: string } {
  const file = require.resolve('onnxruntime-node/package.json');
  return { dir: path.dirname(file), version: (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version };
}

/** Folder of the native ORT binding, where provider libraries must live. */
export function ortBindingDir(): string {
  return path.join(ortPackage().dir, 'bin', 'napi-v6', process.platform, process.arch);
}

/** Throws CudaUnavailableError unless this install can load the CUDA provider at all. */
export function checkCudaInstalled(): void {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new CudaUnavailableError(`onnxruntime-node ships the CUDA provider for linux/x64 only, this is ${process.platform}/${process.arch}`);
  }
  const dir = ortBindingDir();
  const missing = ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'].filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length > 0) throw new CudaUnavailableError(`${missing.join(' and ')} not found in ${dir}`);
}

/** The onnxruntime-node session options a SessionConfig stands for. */
export function toOrtOptions(cfg: SessionConfig): ort.InferenceSession.SessionOptions {
  const ep = cfg.ep ?? 'cpu';
  const opts: ort.InferenceSession.SessionOptions = {
    executionProviders: ep === 'cuda' ? [{ name: 'cuda', deviceId: cfg.deviceId ?? 0 }, 'cpu'] : ['cpu'],
    logSeverityLevel: SEVERITY[cfg.logSeverity ?? 'error'],
  };
  if (cfg.intraOpThreads !== undefined) opts.intraOpNumThreads = cfg.intraOpThreads;
  if (cfg.interOpThreads !== undefined) opts.interOpNumThreads = cfg.interOpThreads;
  if (cfg.graphOptimizationLevel) opts.graphOptimizationLevel = cfg.graphOptimizationLevel;
  if (cfg.executionMode) opts.executionMode = cfg.executionMode;
  if (cfg.memPattern !== undefined) opts.enableMemPattern = cfg.memPattern;
  if (cfg.cpuArena !== undefined) opts.enableCpuMemArena = cfg.cpuArena;
  return opts;
}

/**
 * An ORT session for a model given as bytes or as a file path (a path is needed for models with
 * external data: ORT resolves the side file relative to it).
 *
 * @example const s = await createSession(serializeModel(g).model, { intraOpThreads: 2 });
 */
export async function createSession(model: Uint8Array | string, cfg: SessionConfig = {}): Promise<ort.InferenceSession> {
  const ep = cfg.ep ?? 'cpu';
  if (ep !== 'cpu' && ep !== 'cuda') throw new Error(`createSession: ep must be 'cpu' or 'cuda', got '${String(ep)}'`);
  if (ep === 'cuda') checkCudaInstalled();
  const opts = toOrtOptions(cfg);
  const what = typeof model === 'string' ? model : `model (${model.byteLength} bytes)`;
  try {
    return typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  } catch (e) {
    const msg = (e as Error).message;
    // The provider .so files exist but their CUDA/cuDNN dependencies do not load.
    if (ep === 'cuda' && /cuda|cudnn|cublas|providers_/i.test(msg)) {
      const lib = missingLibraryIn(msg);
      if (lib) throw new CudaUnavailableError(`${lib} not found by the dynamic loader (${msg.split('\n')[0]})`, fixForLibrary(lib, providerCudnnMajor(ortPackage().version)));
      throw new CudaUnavailableError(msg.split('\n')[0]!);
    }
    throw new Error(`createSession(${what}): ${msg}`);
  }
}
