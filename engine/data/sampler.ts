// Batch sampling as a pure function of (seed, shard, step): a resumed run sees exactly the same
// batches as an uninterrupted one, with no sampler state to checkpoint beyond the step.

import { Counter } from './random';

export interface BatchRequest {
  seed: number;
  shard: number;
  step: number;
  batchSize: number;
  contextLength: number;
}

export interface LmBatch {
  /** (B, T) input ids, row-major, int64 as ONNX Gather/SoftmaxCrossEntropyLoss want. */
  tokens: BigInt64Array;
  /** (B, T) next-token targets. */
  targets: BigInt64Array;
  dims: [number, number];
}

/** Random contiguous windows of T+1 tokens (nanoGPT get_batch), keyed by (seed, shard, step). */
export function sampleLmBatch(ids: Uint16Array | Uint32Array, req: BatchRequest): LmBatch {
  const { batchSize: B, contextLength: T } = req;
  if (ids.length < T + 1) throw new Error(`shard ${req.shard}: ${ids.length} tokens, need at least contextLength + 1 = ${T + 1}`);
  const rng = new Counter(req.seed, req.shard, req.step);
  const tokens = new BigInt64Array(B * T);
  const targets = new BigInt64Array(B * T);
  for (let b = 0; b < B; b++) {
    const start = rng.int(ids.length - T);
    for (let t = 0; t < T; t++) {
      tokens[b * T + t] = BigInt(ids[start + t]);
      targets[b * T + t] = BigInt(ids[start + t + 1]);
    }
  }
  return { tokens, targets, dims: [B, T] };
}

/** Sequential non-overlapping windows for evaluation (every token scored once). */
export function* evalLmBatches(ids: Uint16Array | Uint32Array, batchSize: number, contextLength: number): Iterable<LmBatch> {
  const T = contextLength;
  const windows = Math.floor((ids.length - 1) / T);
  for (let w0 = 0; w0 < windows; w0 += batchSize) {
    const B = Math.min(batchSize, windows - w0);
    const tokens = new BigInt64Array(B * T);
    const targets = new BigInt64Array(B * T);
    for (let b = 0; b < B; b++) {
      const start = (w0 + b) * T;
      for (let t = 0; t < T; t++) {
        tokens[b * T + t] = BigInt(ids[start + t]);
        targets[b * T + t] = BigInt(ids[start + t + 1]);
      }
    }
    yield { tokens, targets, dims: [B, T] };
  }
}
