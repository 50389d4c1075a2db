// A real shared library that needs libcudnn.so.9, built with gcc in a temp folder, standing in for
// libonnxruntime_providers_cuda.so: the real `ldd` then reports what the real loader would, so the
// doctor's missing-library diagnosis is tested without a GPU and without mocking ldd.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface FakeProvider {
  /** Holds libonnxruntime_providers_cuda.so and _shared.so; pass it as the doctor's bindingDir. */
  bindingDir: string;
  /** A folder with the cuDNN stub (libcudnn.so.9.1.0 and its libcudnn.so.9 link), off the loader's path. */
  cudnnDir: string;
  /** cudnnDir is <cudaHome>/lib64, the layout of a CUDA toolkit install that CUDA_HOME points at. */
  cudaHome: string;
  root: string;
  cleanup(): void;
}

const cc = (args: string[], cwd: string) => execFileSync('gcc', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

/** Builds the stub cuDNN and a "provider" linked against it, then moves the stub out of the provider's reach. */
export function buildFakeProvider(): FakeProvider {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-doctor-'));
  const bindingDir = path.join(root, 'binding');
  const cudaHome = path.join(root, 'cuda');
  const cudnnDir = path.join(cudaHome, 'lib64');
  fs.mkdirSync(bindingDir);
  fs.mkdirSync(cudnnDir, { recursive: true });
  fs.writeFileSync(path.join(root, 'cudnn.c'), 'int cudnnGetVersion(void) { return 90100; }\n');
  fs.writeFileSync(path.join(root, 'provider.c'), 'int cudnnGetVersion(void);\nint provider_probe(void) { return cudnnGetVersion(); }\n');
  fs.writeFileSync(path.join(root, 'shared.c'), 'int shared_probe(void) { return 1; }\n');
  // The stub carries the soname the real cuDNN 9 has, so the provider records DT_NEEDED libcudnn.so.9.
  cc(['-shared', '-fPIC', '-Wl,-soname,libcudnn.so.9', '-o', 'libcudnn.so.9', 'cudnn.c'], root);
  cc(['-shared', '-fPIC', '-o', path.join(bindingDir, 'libonnxruntime_providers_cuda.so'), 'provider.c', '-L.', '-l:libcudnn.so.9'], root);
  cc(['-shared', '-fPIC', '-o', path.join(bindingDir, 'libonnxruntime_providers_shared.so'), 'shared.c'], root);
  // "Delete" the stub from where it was linked: it lives on only in a folder the loader does not search,
  // under its full version name as cuDNN installs it.
  fs.renameSync(path.join(root, 'libcudnn.so.9'), path.join(cudnnDir, 'libcudnn.so.9.1.0'));
  fs.symlinkSync('libcudnn.so.9.1.0', path.join(cudnnDir, 'libcudnn.so.9'));
  return { bindingDir, cudnnDir, cudaHome, root, cleanup: () => fs.rmSync(root, { recursive: true, force: true }) };
}
