// AdamW (Loshchilov & Hutter), written as graph ops with torch.optim.AdamW's exact arithmetic:
//   m ← β₁m + (1−β₁)g          v ← β₂v + (1−β₂)g²
//   p ← p·(1 − lr·λ) − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)      with t = step + 1.
// Bias corrections are computed in-graph from the `step` input (Pow), once per graph; every
// per-parameter op is elementwise with scalar coefficients folded in where possible.

import { z } from 'zod';
import { add, div, mul, pow, sqrt, sub } from '../graph/ops';
import type { OptimizerImpl, SharedScalars, StepTarget } from './types';

export const AdamWSchema = z.strictObject({
  kind: z.literal('adamw'),
  lr: z.number().positive(),
  beta1: z.number().min(0).lt(1).default(0.9),
  beta2: z.number().min(0).lt(1).default(0.999),
  eps: z.number().positive().default(1e-8),
  weight_decay: z.number().nonnegative().default(0.01),
});
export type AdamWConfig = z.infer<typeof AdamWSchema>;

export function adamw(cfg: AdamWConfig): OptimizerImpl {
  return {
    slots: ['m', 'v'],
    coupledDecay: false,
    prepare({ lr, step, gradScale }): SharedScalars {
      const g = step.graph;
      const c = (x: number) => g.scalar(x);
      const t = add(step, c(1));
      const bc1 = sub(c(1), pow(c(cfg.beta1), t));
      const sqrtBc2 = sqrt(sub(c(1), pow(c(cfg.beta2), t)));
      const s = gradScale;
      return {
        // Clipping folds into the moment coefficients: (1−β₁)·s·g and (1−β₂)·s²·g².
        c1: s ? mul(c(1 - cfg.beta1), s) : c(1 - cfg.beta1),
        c2: s ? mul(c(1 - cfg.beta2), mul(s, s)) : c(1 - cfg.beta2),
        // m / (√v/√bc2 + ε) = √bc2 · m / (√v + ε√bc2): the per-element divide by √bc2 moves
        // into two scalars, saving a full pass per parameter.
        stepSize: div(mul(lr, sqrtBc2), bc1),
        epsHat: mul(c(cfg.eps), sqrtBc2),
        decayFactor: sub(c(1), mul(lr, c(cfg.weight_decay))),
      };
    },
    step(k: SharedScalars, u: StepTarget) {
      const g = u.grad.graph;
      const c = (x: number) => g.scalar(x);
      const { m, v } = u.state;
      const m2 = g.op('Add', [mul(m, c(cfg.beta1)), mul(u.grad, k.c1)], {}, { outputNames: [u.stateOut.m] })[0];
      const v2 = g.op('Add', [mul(v, c(cfg.beta2)), mul(u.gradSquared, k.c2)], {}, { outputNames: [u.stateOut.v] })[0];
      return { delta: mul(div(m2, add(sqrt(v2), k.epsHat)), k.stepSize), state: { m: m2, v: v2 } };
    },
    apply(k, param, delta, decay, outName) {
      // Decoupled decay scales p itself, so it is applied here, per tensor, never to a flat buffer.
      const decayed = decay && cfg.weight_decay > 0 ? mul(param, k.decayFactor) : param;
      return param.graph.op('Sub', [decayed, delta], {}, { outputNames: [outName] })[0];
    },
  };
}
