// Speed and size of a model as deployed: latency percentiles per batch, tokens per second, the
// process's peak resident memory while it ran, and the bytes of the model file(s).

import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import type { Feeds } from './lm';

export interface SpeedResult {
  runs: number;
  p50Ms: number;
  p95Ms: number;
  meanMs: number;
  /** Tokens processed per second over the timed runs. */
  tokensPerSec: number;
  /** Highest resident set size sampled around the runs (bytes). */
  peakRssBytes: number;
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no values');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/**
 * Times `session.run` on each feed `runs` times round-robin after `warmup` untimed runs.
 * `tokensPerBatch` counts the tokens one run processes (B·T for an LM batch).
 */
export async function measureSpeed(session: ort.InferenceSession, feeds: Feeds[], tokensPerBatch: number, opts: { warmup?: number; runs?: number } = {}): Promise<SpeedResult> {
  if (feeds.length === 0) throw new Error('measureSpeed: no feeds');
  const warmup = opts.warmup ?? 2;
  const runs = opts.runs ?? 10;
  for (let i = 0; i < warmup; i++) await session.run(feeds[i % feeds.length]);
  const times: number[] = [];
  let peak = process.memoryUsage.rss();
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds[i % feeds.length]);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    peak = Math.max(peak, process.memoryUsage.rss());
  }
  const sorted = [...times].sort((a, b) => a - b);
  const total = times.reduce((a, b) => a + b, 0);
  return {
    runs,
    p50Ms: percentile(sorted, 50),
    p95Ms: percentile(sorted, 95),
    meanMs: total / runs,
    tokensPerSec: (tokensPerBatch * runs) / (total / 1000),
    peakRssBytes: peak,
  };
}

/** Bytes of a saved model file plus every external-data side file its initializers reference. */
export function modelFileBytes(file: string): number {
  const proto = onnx.ModelProto.decode(fs.readFileSync(file));
  const sides = new Set<string>();
  for (const t of proto.graph?.initializer ?? []) {
    for (const e of t.externalData ?? []) if (e.key === 'location' && e.value) sides.add(e.value);
  }
  let n = fs.statSync(file).size;
  for (const s of sides) n += fs.statSync(path.join(path.dirname(file), s)).size;
  return n;
}
