// QuantConfig: the one schema for post-training quantization (docs/ARCHITECTURE.md: one zod schema per
// concept). A discriminated union on `method`, plus the options every method shares.

import { z } from 'zod';

/**
 * Weights that stay float unless the caller says otherwise: token/position embeddings and the LM
 * head (their error lands directly on every logit, and tied heads share the embedding matrix).
 * Regexes matched against both the weight's initializer name and the consuming node's name.
 */
export const DEFAULT_EXCLUDE = ['^wte$', '^wpe$', '^lm_head', 'lm_head$', 'embeddings', '^shared\\b'];

const common = {
  /** Regexes over weight and node names that stay float. */
  exclude: z.array(z.string()).default(DEFAULT_EXCLUDE),
  /**
   * Largest accepted relative rise of validation perplexity, (ppl_q − ppl_fp32) / ppl_fp32: a
   * fraction, at most 1 (a doubled perplexity), so that a percentage written by mistake (5 for 5%)
   * is refused instead of disabling the gate.
   */
  maxPplIncrease: z.number().positive().max(1, 'a fraction of fp32 perplexity, at most 1 (0.05 is 5%)').default(0.02),
};

export const Int8DynamicSchema = z.strictObject({
  method: z.literal('int8-dynamic'),
  /**
   * 'dynamic-quantize-matmul': one com.microsoft.DynamicQuantizeMatMul per Linear (the faster on
   * our CPU, see bench/quant.ts); 'matmul-integer': standard ONNX DynamicQuantizeLinear +
   * MatMulInteger + rescale, for runtimes without the contrib op.
   */
  kernel: z.enum(['dynamic-quantize-matmul', 'matmul-integer']).default('dynamic-quantize-matmul'),
  /**
   * 7-bit weights. x86 cores without VNNI (AVX2, and AVX-512 without VNNI) multiply u8 × s8 pairs
   * into saturating int16 sums, so full 8-bit weights can overflow: on an AVX2 EPYC a Linear with
   * K = 80 came out 16% of its output range off, against 1.5% with 7-bit weights. The default is
   * the choice that is right on every CPU a quantized model may be deployed to; set false only for
   * VNNI (or ARM) targets, for one more bit of weight precision.
   */
  reduceRange: z.boolean().default(true),
  ...common,
});

export const CalibrationSchema = z.strictObject({
  /** Calibration batches the caller supplies are cut to this many. */
  batches: z.number().int().positive().default(8),
  method: z.enum(['minmax', 'percentile']).default('minmax'),
  /** For 'percentile': the kept central mass in percent (each tail loses (100 − p) / 2). */
  percentile: z.number().gt(90).max(100).default(99.99),
});

export const Int8StaticSchema = z.strictObject({
  method: z.literal('int8-static'),
  calibration: CalibrationSchema.default({ batches: 8, method: 'minmax', percentile: 99.99 }),
  /** S8S8 (int8 activations and weights) is what ORT's guide recommends on CPU; U8S8 is the older form. */
  activationType: z.enum(['int8', 'uint8']).default('int8'),
  /** 7-bit weights and activations: see Int8DynamicSchema.reduceRange. */
  reduceRange: z.boolean().default(true),
  ...common,
});

export const Int4Schema = z.strictObject({
  method: z.literal('int4'),
  blockSize: z.union([z.literal(32), z.literal(64), z.literal(128)]).default(32),
  /** Symmetric: codes −8..7 around an implicit zero point 8; otherwise a zero point per block. */
  symmetric: z.boolean().default(true),
  /** MatMulNBits accuracy_level: 0 = kernel default, 4 = int8 activations (fastest on CPU). */
  accuracyLevel: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3), z.literal(4)]).default(0),
  ...common,
});

export const QuantConfigSchema = z.discriminatedUnion('method', [Int8DynamicSchema, Int8StaticSchema, Int4Schema]);
export type QuantConfig = z.infer<typeof QuantConfigSchema>;
export type QuantConfigInput = z.input<typeof QuantConfigSchema>;
export type QuantMethod = QuantConfig['method'];
