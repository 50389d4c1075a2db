// Learning-rate schedules computed inside the training graph from its `step` input, so one
// graph serves the whole run (no re-export when the LR changes).

import { z } from 'zod';
import type { Value } from '../graph/ir';
import { add, cos, mul, sub } from '../graph/ops';

export const ScheduleSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('constant') }),
  z
    .strictObject({
      kind: z.literal('warmup_cosine'),
      /** Steps of linear warmup: lr·(t+1)/(warmup_steps+1) for t < warmup_steps (nanoGPT). */
      warmup_steps: z.number().int().nonnegative(),
      /** Step at which the cosine reaches min_lr; constant min_lr afterwards. */
      decay_steps: z.number().int().positive(),
      min_lr: z.number().nonnegative(),
    })
    .refine((s) => s.decay_steps > s.warmup_steps, { path: ['decay_steps'], message: 'must be greater than warmup_steps' }),
]);
export type Schedule = z.infer<typeof ScheduleSchema>;

/**
 * Scalar learning rate for 0-based float32 `step`. Warmup-cosine is written branch-free:
 *   lr(t) = min(1, (t+1)/(W+1)) · (min_lr + ½(1 + cos(π·clamp((t−W)/(D−W), 0, 1)))·(lr − min_lr))
 * which equals nanoGPT's get_lr piecewise form on every step.
 */
export function scheduledLr(step: Value, baseLr: number, schedule: Schedule): Value {
  const g = step.graph;
  const c = (x: number) => g.scalar(x);
  if (schedule.kind === 'constant') return c(baseLr);
  const { warmup_steps: W, decay_steps: D, min_lr: minLr } = schedule;
  const minOf = (a: Value, b: Value) => g.op('Min', [a, b])[0];
  const maxOf = (a: Value, b: Value) => g.op('Max', [a, b])[0];
  const warm = minOf(c(1), mul(add(step, c(1)), c(1 / (W + 1))));
  const ratio = maxOf(c(0), minOf(c(1), mul(sub(step, c(W)), c(1 / (D - W)))));
  const coeff = mul(c(0.5), add(c(1), cos(mul(ratio, c(Math.PI)))));
  return mul(warm, add(c(minLr), mul(coeff, c(baseLr - minLr))));
}
