// The DiLoCo outer optimizer (Douillard et al. 2023; OpenDiLoCo): after each round the
// pseudo-gradient Δ = mean over workers of (global − local) drives an outer SGD step with Nesterov
// momentum, as torch.optim.SGD(nesterov=True) computes it:
//   buf ← μ·buf + Δ        global ← global − lr·(Δ + μ·buf)
// `average` replaces the step by the plain mean of the workers' weights. It is computed as that
// mean directly, not as global − Δ, because g − (g − l) is not l in float32: with one worker the
// new global is then bit-for-bit the worker's weights, so W=1 training is ordinary AdamW training.
//
// Workers are added one at a time, and a streamed worker one tensor at a time (`worker(who)`), so
// aggregation holds the global weights, a float64 accumulator and one tensor of one worker, however
// many workers there are; apply() frees the accumulator tensor by tensor as it fills the new weights.

import { z } from 'zod';
import { EngineError } from '../errors';

/**
 * What workers upload at the end of a round: their float32 weights (`none`, absent: the default),
 * or the pseudo-gradient global − local as fp16 or block-scaled int8 (engine/train/compress.ts).
 * No default is filled in, so a spec without it parses (and is recorded in checkpoints) as before.
 */
const compression = z.enum(['none', 'fp16', 'int8']).optional();

export const OuterOptimSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('nesterov'),
    lr: z.number().positive().default(0.7),
    momentum: z.number().min(0).lt(1).default(0.9),
    compression,
  }),
  z.strictObject({ kind: z.literal('average'), compression }),
]);
export type OuterOptimConfig = z.infer<typeof OuterOptimSchema>;
/**
 * The paper's step (tuned there at H = 500). It stays the default because a spec without `outer`
 * parses to it. At small H prefer `{ kind: 'average' }`: its steady-state gain is 1 round delta,
 * Nesterov 0.7 / 0.9's lr / (1 − μ) = 7, which at H = 10 ended 4–5 % behind (bench/RESULTS.md).
 */
export const DEFAULT_OUTER: OuterOptimConfig = { kind: 'nesterov', lr: 0.7, momentum: 0.9 };

export type Weights = Map<string, Float32Array>;

export interface OuterResult {
  weights: Weights;
  /** Nesterov momentum buffers by parameter name; empty for `average`. */
  momentum: Weights;
  /** L2 norm of the pseudo-gradient Δ = global − mean(local). */
  pseudoGradNorm: number;
}

export class OuterAggregator {
  /** Σ over workers of local weights (float64, so the mean of few workers is exact). */
  private readonly sums = new Map<string, Float64Array>();
  private count = 0;

  constructor(private readonly global: Weights) {
    for (const [name, w] of global) this.sums.set(name, new Float64Array(w.length));
  }

  get workers(): number {
    return this.count;
  }

  /** Adds one worker's end-of-round weights; `who` names it in errors. */
  add(local: Weights, who: string): void {
    for (const name of this.global.keys()) {
      if (!local.has(name)) throw new Error(`${who}: parameter "${name}" is missing`);
    }
    const worker = this.worker(who);
    for (const [name, w] of local) worker.add(name, w);
    worker.end();
  }

  /**
   * One worker's weights added tensor by tensor as they arrive (a streamed file), so that only the
   * tensor in hand is held: `add(name, w)` for each, then `end()`, which checks that none was
   * missing and counts the worker. The sums are the same as add()'s: every value is added in the
   * order the workers are.
   */
  worker(who: string): { add(name: string, w: Float32Array): void; end(): void } {
    const seen = new Set<string>();
    return {
      add: (name, w) => {
        const sum = this.sums.get(name);
        if (!sum) throw new Error(`${who}: parameter "${name}" is not in the global model`);
        if (w.length !== sum.length) throw new Error(`${who}: parameter "${name}" has ${w.length} values, the global model ${sum.length}`);
        if (seen.has(name)) throw new Error(`${who}: parameter "${name}" comes twice`);
        for (let i = 0; i < w.length; i++) {
          if (!Number.isFinite(w[i])) throw new NonFiniteWeightError(who, name, i, w[i]);
          sum[i] += w[i];
        }
        seen.add(name);
      },
      end: () => {
        for (const name of this.global.keys()) {
          if (!seen.has(name)) throw new Error(`${who}: parameter "${name}" is missing`);
        }
        this.count++;
      },
    };
  }

  /**
   * Adds one worker's pseudo-gradient Δ = global − local (decoded from fp16/int8) instead of its
   * weights: the sum then holds global − Δ, so `apply` is the same outer step.
   */
  addDelta(delta: Weights, who: string): void {
    for (const name of this.global.keys()) {
      if (!delta.has(name)) throw new Error(`${who}: parameter "${name}" is missing`);
    }
    for (const [name, d] of delta) {
      const sum = this.sums.get(name);
      const g = this.global.get(name);
      if (!sum || !g) throw new Error(`${who}: parameter "${name}" is not in the global model`);
      if (d.length !== sum.length) throw new Error(`${who}: parameter "${name}" has ${d.length} values, the global model ${sum.length}`);
      for (let i = 0; i < d.length; i++) {
        if (!Number.isFinite(d[i])) throw new NonFiniteWeightError(who, name, i, d[i]);
        sum[i] += g[i] - d[i];
      }
    }
    this.count++;
  }

  /** The outer step; `momentum` is the previous round's buffers (absent in round 0). */
  apply(cfg: OuterOptimConfig, momentum?: Weights): OuterResult {
    if (this.count === 0) throw new Error('outer step: no worker results were added');
    if (this.sums.size < this.global.size) throw new Error('outer step: apply() runs once per aggregator');
    const W = this.count;
    const weights: Weights = new Map();
    const nextMomentum: Weights = new Map();
    let sq = 0;
    for (const [name, g] of this.global) {
      const sum = this.sums.get(name)!;
      this.sums.delete(name); // the float64 sums go as the new weights come: the peak is one of them, not both
      const out = new Float32Array(g.length);
      if (cfg.kind === 'average') {
        for (let i = 0; i < g.length; i++) {
          out[i] = sum[i] / W;
          const d = g[i] - out[i];
          sq += d * d;
        }
      } else {
        const prev = momentum?.get(name);
        if (momentum && momentum.size > 0 && !prev) throw new Error(`outer step: momentum buffer for "${name}" is missing`);
        if (prev && prev.length !== g.length) throw new Error(`outer step: momentum buffer "${name}" has ${prev.length} values, want ${g.length}`);
        const buf = new Float32Array(g.length);
        const { lr, momentum: mu } = cfg;
        for (let i = 0; i < g.length; i++) {
          const delta = g[i] - sum[i] / W; // pseudo-gradient: global − mean(local)
          sq += delta * delta;
          buf[i] = mu * (prev ? prev[i] : 0) + delta;
          out[i] = g[i] - lr * (delta + mu * buf[i]);
        }
        nextMomentum.set(name, buf);
      }
      weights.set(name, out);
    }
    return { weights, momentum: nextMomentum, pseudoGradNorm: Math.sqrt(sq) };
  }
}

/** A worker's weights are NaN/inf: deterministic, so retrying the aggregation cannot help. */
export class NonFiniteWeightError extends EngineError {
  constructor(
    readonly who: string,
    readonly tensor: string,
    readonly index: number,
    readonly value: number,
  ) {
    super('non-finite', `${who}: tensor "${tensor}" holds ${value} at index ${index}`, { details: { tensor } });
  }
}

/**
 * One outer step over all workers at once (tests, small models).
 * @example outerStep(global, [local0, local1], { kind: 'nesterov', lr: 0.7, momentum: 0.9 })
 */
export function outerStep(global: Weights, locals: Weights[], cfg: OuterOptimConfig, momentum?: Weights): OuterResult {
  const agg = new OuterAggregator(global);
  locals.forEach((l, i) => agg.add(l, `worker ${i}`));
  return agg.apply(cfg, momentum);
}
