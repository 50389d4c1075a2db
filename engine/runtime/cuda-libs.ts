// The CUDA and cuDNN shared libraries that onnxruntime-node's CUDA provider links against, and the
// command that installs each one. Used by the session error (engine/runtime/session.ts) and by the
// doctor (engine/doctor/), so both name the same library and the same fix.

/** The CUDA major of the provider build that `ONNXRUNTIME_NODE_INSTALL=cuda12` downloads. */
export const PROVIDER_CUDA_MAJOR = 12;

/**
 * The cuDNN major that ORT's CUDA-12 GPU packages link: 8 up to ORT 1.18, 9 from 1.19 on (ORT's
 * CUDA execution provider requirements; the two majors are not interchangeable).
 */
export function providerCudnnMajor(ortVersion: string): number {
  const [major, minor] = ortVersion.split('.').map((n) => Number.parseInt(n, 10));
  return major! > 1 || (major === 1 && minor! >= 19) ? 9 : 8;
}

export interface CudaLib {
  /** The name the dynamic loader looks for, e.g. libcudnn.so.9. */
  soname: string;
  /** What it is, for people. */
  what: string;
  /** Debian/Ubuntu package from NVIDIA's CUDA apt repository. */
  apt: string;
  /** pip wheel that ships the same library (under site-packages/nvidia/<dir>/lib). */
  pip: string;
  pipDir: string;
}

/**
 * The libraries libonnxruntime_providers_cuda.so needs (its DT_NEEDED entries) for a CUDA 12 /
 * cuDNN `cudnnMajor` build. The apt names carry a CUDA minor (12-8 here); any 12.x minor works
 * (CUDA minor-version compatibility).
 */
export function providerCudaLibs(cudnnMajor: number): CudaLib[] {
  const cu = PROVIDER_CUDA_MAJOR;
  return [
    { soname: `libcudart.so.${cu}`, what: `CUDA ${cu} runtime`, apt: `cuda-cudart-${cu}-8`, pip: `nvidia-cuda-runtime-cu${cu}`, pipDir: 'cuda_runtime' },
    { soname: `libcublas.so.${cu}`, what: `cuBLAS for CUDA ${cu}`, apt: `libcublas-${cu}-8`, pip: `nvidia-cublas-cu${cu}`, pipDir: 'cublas' },
    { soname: `libcublasLt.so.${cu}`, what: `cuBLASLt for CUDA ${cu}`, apt: `libcublas-${cu}-8`, pip: `nvidia-cublas-cu${cu}`, pipDir: 'cublas' },
    { soname: 'libcufft.so.11', what: `cuFFT for CUDA ${cu}`, apt: `libcufft-${cu}-8`, pip: `nvidia-cufft-cu${cu}`, pipDir: 'cufft' },
    { soname: 'libcurand.so.10', what: `cuRAND for CUDA ${cu}`, apt: `libcurand-${cu}-8`, pip: `nvidia-curand-cu${cu}`, pipDir: 'curand' },
    {
      soname: `libcudnn.so.${cudnnMajor}`,
      what: `cuDNN ${cudnnMajor}`,
      apt: `libcudnn${cudnnMajor}-cuda-${cu}`,
      pip: cudnnMajor === 9 ? `nvidia-cudnn-cu${cu}` : `nvidia-cudnn-cu${cu}==8.9.*`,
      pipDir: 'cudnn',
    },
  ];
}

/** `libcudnn.so.9.1.0` → { base: 'libcudnn.so', version: '9.1.0' }; null for a name without a version. */
export function splitSoname(name: string): { base: string; version: string } | null {
  const m = /^(.+?\.so)\.(\d+(?:\.\d+)*)$/.exec(name);
  return m ? { base: m[1]!, version: m[2]! } : null;
}

/**
 * One line saying how to install the library `soname`: the apt package or the pip wheel of a
 * library we know, and for anything else the generic loader-path advice.
 * @example fixForLibrary('libcudnn.so.9') // 'apt-get install libcudnn9-cuda-12 (...) or pip install nvidia-cudnn-cu12 ...'
 */
export function fixForLibrary(soname: string, cudnnMajor = 9): string {
  const known = providerCudaLibs(cudnnMajor).find((l) => l.soname === soname);
  if (known) {
    return (
      `install ${known.what}: \`apt-get install ${known.apt}\` (NVIDIA's CUDA apt repository) or ` +
      `\`pip install ${known.pip}\` and add <site-packages>/nvidia/${known.pipDir}/lib to LD_LIBRARY_PATH`
    );
  }
  const cudnnPart = /^libcudnn_\w+\.so\.(\d+)$/.exec(soname);
  if (cudnnPart) return fixForLibrary(`libcudnn.so.${cudnnPart[1]}`, Number(cudnnPart[1]));
  return `install the package that ships ${soname}, or add the folder that holds it to LD_LIBRARY_PATH (or to /etc/ld.so.conf.d/ and run ldconfig)`;
}

/**
 * The library an ORT load error names: "Failed to load library libonnxruntime_providers_cuda.so
 * with error: libcudnn.so.9: cannot open shared object file" → 'libcudnn.so.9'.
 */
export function missingLibraryIn(message: string): string | null {
  const m = /(lib[\w.+-]+\.so(?:\.\d+)*): cannot open shared object file/.exec(message);
  return m ? m[1]! : null;
}
