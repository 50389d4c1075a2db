// Session options shared by the benchmarks: fixed thread counts (intra-op = the cores we were
// given, no inter-op pool) and full graph optimization, so every figure is on the same footing.

import type { InferenceSession } from 'onnxruntime-node';

export function sessionOptions(threads: number, extra: InferenceSession.SessionOptions = {}): InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    ...extra,
  };
}
