// `stepsPerRun`: K optimizer steps per session.run (engine/train/ksteps.ts), a field of training
// specs and of a fine-tune's `train`. A snapshot can only be taken between runs, so the count
// policy must land on run boundaries; the result is the same bits whatever K is.

import { z } from 'zod';

/** Most steps one run may make: the stacked batch of a run is K × batchSize × contextLength tokens. */
export const MAX_STEPS_PER_RUN = 1024;

export const StepsPerRunSchema = z.number().int().min(1).max(MAX_STEPS_PER_RUN).default(1);

/**
 * Issues on `stepsPerRun` when it does not divide `checkpoint.everySteps` or exceeds the steps one
 * activity makes (`span`: innerSteps, stepsPerActivity).
 */
export function checkStepsPerRun(s: { stepsPerRun: number; checkpoint: { everySteps: number } }, span: { field: string; value: number }, ctx: z.RefinementCtx, path: PropertyKey[] = []): void {
  const K = s.stepsPerRun;
  // Out of range: the field's own issue says so (the refinement still runs after it).
  if (K === 1 || !Number.isInteger(K) || K < 1 || K > MAX_STEPS_PER_RUN) return;
  if (s.checkpoint.everySteps % K !== 0) {
    ctx.addIssue({ code: 'custom', path: [...path, 'stepsPerRun'], message: `must divide checkpoint.everySteps (${s.checkpoint.everySteps} % ${K} = ${s.checkpoint.everySteps % K}): a snapshot can only be taken between runs of ${K} steps` });
  }
  if (K > span.value) {
    ctx.addIssue({ code: 'custom', path: [...path, 'stepsPerRun'], message: `must not exceed ${span.field} (${K} > ${span.value}): one run never makes more steps than the activity` });
  }
}
