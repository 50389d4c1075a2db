// Importing this module makes the current JS realm use the host realm's typed-array classes.
//
// Why: jest runs each test file in a vm context with its own Float32Array etc., while
// onnxruntime-node's native binding creates output buffers with the host realm's classes, so
// onnxruntime-common's `data instanceof Float32Array` check rejects every output ("A float32
// tensor's data must be type of function Float32Array()"). Outside such a sandbox the classes
// are already the host's and this is a no-op. Import it before onnxruntime-node loads (jest
// `setupFiles`, or the first import of a test file).

import * as vm from 'node:vm';

const NAMES = [
  'Float32Array',
  'Float64Array',
  'Int8Array',
  'Int16Array',
  'Int32Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Uint16Array',
  'Uint32Array',
  'BigInt64Array',
  'BigUint64Array',
] as const;

const g = globalThis as unknown as Record<string, unknown>;
for (const name of NAMES) {
  const host = vm.runInThisContext(name) as unknown;
  if (g[name] !== host) g[name] = host;
}
