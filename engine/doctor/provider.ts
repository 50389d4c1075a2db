// What the installed onnxruntime-node needs for CUDA, read from the package itself: its version,
// the folder of its native binding (where ORT looks for provider libraries), and the files its
// `ONNXRUNTIME_NODE_INSTALL=cuda12` opt-in downloads (script/install-metadata.js), so the doctor
// follows the exact version that is installed instead of a list of ours.

import * as path from 'node:path';
import { ortBindingDir, ortPackage } from '../runtime/session';
import { PROVIDER_CUDA_MAJOR, providerCudnnMajor } from '../runtime/cuda-libs';

/** The CUDA execution provider's own libraries; the TensorRT one is only for the TensorRT EP. */
export const CUDA_PROVIDER_LIB = 'libonnxruntime_providers_cuda.so';
export const SHARED_PROVIDER_LIB = 'libonnxruntime_providers_shared.so';

export interface ProviderInstall {
  ortVersion: string;
  /** ORT's platform key, e.g. linux/x64. */
  platform: string;
  bindingDir: string;
  /** The install-script manifest for CUDA on this platform (e.g. cuda12); null where ORT downloads none. */
  manifest: string | null;
  /** The files that manifest puts into bindingDir. */
  files: string[];
  /** The package those files come from, e.g. "Microsoft.ML.OnnxRuntime.Gpu.Linux 1.30.0". */
  gpuPackage: string | null;
  cudaMajor: number | null;
  cudnnMajor: number | null;
}

interface InstallMetadata {
  requirements: Record<string, string[]>;
  manifests: Record<string, Record<string, { package: string; path: string }>>;
  packages: Record<string, { name: string; versions: { feed: string; version: string }[] }>;
}

/** Reads the installed onnxruntime-node's CUDA install manifest. `bindingDir` overrides where the provider files are looked for. */
export function readProviderInstall(bindingDir?: string): ProviderInstall {
  const { dir, version } = ortPackage();
  const platform = `${process.platform}/${process.arch}`;
  const base: ProviderInstall = { ortVersion: version, platform, bindingDir: bindingDir ?? ortBindingDir(), manifest: null, files: [], gpuPackage: null, cudaMajor: null, cudnnMajor: null };
  let meta: InstallMetadata;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    meta = require(path.join(dir, 'script', 'install-metadata.js')) as InstallMetadata;
  } catch {
    // Older onnxruntime-node releases had no manifest; their CUDA build was CUDA 12 with the same file names.
    return { ...base, manifest: 'cuda12', files: [CUDA_PROVIDER_LIB, SHARED_PROVIDER_LIB], cudaMajor: PROVIDER_CUDA_MAJOR, cudnnMajor: providerCudnnMajor(version) };
  }
  const manifest = (meta.requirements[platform] ?? []).find((m) => /^cuda\d+$/.test(m)) ?? null;
  if (!manifest) return base;
  const entries = meta.manifests[`${platform}:${manifest}`] ?? {};
  const pkgKeys = [...new Set(Object.values(entries).map((e) => e.package))];
  const pkg = pkgKeys.length === 1 ? meta.packages[pkgKeys[0]!] : undefined;
  return {
    ...base,
    manifest,
    files: Object.keys(entries).map((f) => path.basename(f)),
    gpuPackage: pkg ? `${pkg.name} ${pkg.versions[0]?.version ?? version}` : null,
    cudaMajor: Number(manifest.slice('cuda'.length)),
    cudnnMajor: providerCudnnMajor(version),
  };
}
