// `precision` and `lossScale`: mixed-precision training (engine/train/precision.ts), fields of a
// training spec's top level and of a fine-tune's `train`.
//   precision  fp32 (default) | fp16 | bf16: the forward and backward compute in half precision
//              over fp32 master weights; the optimizer (AdamW, clipping) stays fp32.
//   lossScale  fp16 only: dynamic loss scaling as torch's GradScaler (start 2^16, halve and skip the
//              update on an overflow, double after `growthInterval` finite steps in a row).
// A half-precision step needs a CUDA worker; a CPU worker refuses it, unless the worker was started
// with TRUTHGPT_HALF_EMULATION=1, which rounds every half value on CPU to verify numerics (slower
// than fp32, never a speed-up). GPT models only so far.

import { z } from 'zod';

export const PrecisionSchema = z.enum(['fp32', 'fp16', 'bf16']).optional();
export type PrecisionOption = z.output<typeof PrecisionSchema>;

export const LossScaleSchema = z
  .strictObject({
    /** Consecutive finite steps before the scale doubles (torch GradScaler's growth_interval). */
    growthInterval: z.number().int().min(1).max(1_000_000).default(2000),
  })
  .optional();
export type LossScale = z.output<typeof LossScaleSchema>;

/** True when the spec asks for half precision (fp16 or bf16). */
export const isHalfPrecision = (p: PrecisionOption): p is 'fp16' | 'bf16' => p === 'fp16' || p === 'bf16';

/** Issues on `lossScale` without fp16 (bf16 has fp32's range and trains unscaled). */
export function checkLossScale(s: { precision?: PrecisionOption; lossScale?: LossScale }, ctx: z.RefinementCtx, path: PropertyKey[] = []): void {
  if (s.lossScale !== undefined && s.precision !== 'fp16') {
    ctx.addIssue({ code: 'custom', path: [...path, 'lossScale'], message: `scales fp16 losses; this run's precision is ${s.precision ?? 'fp32'}${s.precision === 'bf16' ? ' (bf16 trains without loss scaling)' : ''}` });
  }
}

/**
 * A compiled-step cache key with the precision appended only for fp16/bf16, so keys of existing
 * specs (and of fp32 ones) stay as they were.
 */
export const precisionKey = (key: string, s: { precision?: PrecisionOption; lossScale?: LossScale }): string =>
  isHalfPrecision(s.precision) ? `${key}|precision:${s.precision}${s.precision === 'fp16' ? `,growth:${s.lossScale?.growthInterval ?? 2000}` : ''}` : key;
