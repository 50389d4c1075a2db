// Calibration for static quantization: run the float graph on N batches with the activations to
// be quantized exposed as extra outputs, and reduce each to a range [lo, hi].
//   minmax     – the observed extremes;
//   percentile – cuts (100 − p)/2 % of the mass from each tail, from a second pass that fills a
//                4096-bin histogram over the first pass's extremes (exact to one bin, bounded memory).

import type { Graph } from '../graph/ir';
import { EngineError } from '../errors';
import { serializeModel } from '../graph/onnx';
import { createSession, type SessionConfig } from '../runtime';
import type { Feeds } from '../eval/lm';
import { rewriteSites } from './rewrite';

export interface Range {
  lo: number;
  hi: number;
}

export interface CalibrationOptions {
  method: 'minmax' | 'percentile';
  percentile: number;
}

const BINS = 4096;

/** Ranges of the named tensors of `src` over `feeds` (one ORT run per feed and pass). */
export async function calibrateRanges(src: Graph, tensors: string[], feeds: Feeds[], opts: CalibrationOptions, cfg: SessionConfig = {}): Promise<Map<string, Range>> {
  if (feeds.length === 0) throw new EngineError('config', 'calibration: no batches given (calibration.batches needs at least 1)');
  const g = rewriteSites(src, [], () => {
    throw new Error('unreachable');
  });
  const outputs = new Set(g.outputs.map((v) => v.name));
  for (const t of tensors) if (!outputs.has(t)) g.outputs.push(g.value(t));
  const session = await createSession(serializeModel(g).model, { graphOptimizationLevel: 'all', ...cfg });
  try {
    const ranges = new Map<string, Range>(tensors.map((t) => [t, { lo: Infinity, hi: -Infinity }]));
    for (const f of feeds) {
      const r = await session.run(f, tensors);
      for (const t of tensors) {
        const data = r[t].data as Float32Array;
        const range = ranges.get(t)!;
        for (let i = 0; i < data.length; i++) {
          const x = data[i];
          if (x < range.lo) range.lo = x;
          if (x > range.hi) range.hi = x;
        }
      }
    }
    for (const [t, r] of ranges) if (!Number.isFinite(r.lo) || !Number.isFinite(r.hi)) throw new EngineError('config', `calibration: tensor "${t}" has non-finite values (${r.lo}..${r.hi})`);
    if (opts.method === 'minmax') return ranges;

    const hists = new Map(tensors.map((t) => [t, new Float64Array(BINS)]));
    for (const f of feeds) {
      const r = await session.run(f, tensors);
      for (const t of tensors) {
        const { lo, hi } = ranges.get(t)!;
        const h = hists.get(t)!;
        const width = (hi - lo) / BINS || 1;
        const data = r[t].data as Float32Array;
        for (let i = 0; i < data.length; i++) h[Math.min(BINS - 1, Math.floor((data[i] - lo) / width))]++;
      }
    }
    const tail = (100 - opts.percentile) / 200;
    const out = new Map<string, Range>();
    for (const t of tensors) out.set(t, percentileRange(hists.get(t)!, ranges.get(t)!, tail));
    return out;
  } finally {
    await session.release();
  }
}

/** The range that leaves `tail` of the histogram's mass outside on each side (bin edges). */
export function percentileRange(h: Float64Array, r: Range, tail: number): Range {
  const total = h.reduce((a, b) => a + b, 0);
  const width = (r.hi - r.lo) / h.length;
  const cut = tail * total;
  let acc = 0;
  let loBin = 0;
  while (loBin < h.length - 1 && acc + h[loBin] <= cut) acc += h[loBin++];
  acc = 0;
  let hiBin = h.length - 1;
  while (hiBin > loBin && acc + h[hiBin] <= cut) acc += h[hiBin--];
  return { lo: r.lo + loBin * width, hi: r.lo + (hiBin + 1) * width };
}
