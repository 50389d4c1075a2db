// The machine's ORT MatMul peak on a given thread count: one graph of chained square MatMuls,
// big enough that MLAS runs at its best and per-op overhead is noise. This is the denominator
// of "% of peak" for the training-step benchmark.

import '../engine/autodiff/rules';
import * as ort from 'onnxruntime-node';
import { Graph } from '../engine/graph/ir';
import { serializeModel } from '../engine/graph/onnx';
import { matmul } from '../engine/graph/ops';
import { mulberry32 } from '../engine/models/blocks';
import { sessionOptions } from './ort';

export interface PeakResult {
  size: number;
  chain: number;
  threads: number;
  gflops: number;
  medianS: number;
}

export async function measureMatmulPeak(threads: number, size = 1024, chain = 8, runs = 7): Promise<PeakResult> {
  const g = new Graph('matmul_peak');
  const rand = mulberry32(7);
  // Weights scaled by 1/√size keep activations O(1) along the chain (no inf/denormal slow paths).
  const w = Float32Array.from({ length: size * size }, () => (rand() * 2 - 1) * Math.sqrt(3 / size));
  let x = g.input('x', 'float32', [size, size]);
  for (let i = 0; i < chain; i++) x = matmul(x, g.initializer(`w${i}`, { dtype: 'float32', dims: [size, size], data: w })); // (S, S) @ (S, S)
  g.output(x, 'y');
  const session = await ort.InferenceSession.create(serializeModel(g).model, sessionOptions(threads));
  const feeds = { x: new ort.Tensor('float32', Float32Array.from({ length: size * size }, () => rand() * 2 - 1), [size, size]) };
  await session.run(feeds);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  await session.release();
  times.sort((a, b) => a - b);
  const medianS = times[Math.floor(times.length / 2)];
  return { size, chain, threads, medianS, gflops: (2 * size * size * size * chain) / medianS / 1e9 };
}
