// Post-training specs: which quantized variants to build (QuantSpec = engine QuantConfig + a
// variant name) and how to evaluate them side by side with fp32 (EvalSpec). Parsed once, where a
// run starts (the SDK, the CLI); the workflow and its activities take the parsed form as it is.
//
// Workflows `import type` from here only: the schemas pull in engine modules.

import { z } from 'zod';
import { Int4Schema, Int8DynamicSchema, Int8StaticSchema, type QuantConfig } from '../engine/quant/config';
import { formatIssues } from './issues';

const name = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes')
  .refine((n) => n !== 'fp32', 'fp32 names the float model; choose another name')
  .optional();
/** A failed gate fails the whole workflow (type QuantRejected) after the report is written. */
const required = z.boolean().default(false);
/**
 * The gate of a classifier's variant (a `classification` run): the most its validation accuracy may
 * fall below fp32's, absolute (0.01 is one point; default 0.01). Language models are gated on
 * maxPplIncrease instead.
 */
const maxAccuracyDrop = z.number().min(0).max(1, 'a fraction, at most 1 (0.01 is one point of accuracy)').optional();
/**
 * The gate of a T5 seq2seq variant: the most its validation exact match (greedy answers of the
 * quantized encoder/decoder pair) may fall below fp32's, absolute (default 0.02, two points).
 */
const maxExactMatchDrop = z.number().min(0).max(1, 'a fraction, at most 1 (0.01 is one point of exact match)').optional();

/** One quantized variant: a QuantConfig (engine/quant/config.ts) with the name it is published under. */
export const QuantSpecSchema = z
  .discriminatedUnion('method', [
    Int8DynamicSchema.extend({ name, required, maxAccuracyDrop, maxExactMatchDrop }),
    Int8StaticSchema.extend({ name, required, maxAccuracyDrop, maxExactMatchDrop }),
    Int4Schema.extend({ name, required, maxAccuracyDrop, maxExactMatchDrop }),
  ])
  .transform((q) => ({ ...q, name: q.name ?? defaultName(q.method) }));
export type QuantSpec = z.output<typeof QuantSpecSchema>;
export type QuantSpecInput = z.input<typeof QuantSpecSchema>;

/** The engine's QuantConfig of a variant: the spec without its name and gate flag (the config schema is strict). */
export function quantConfigOf(q: QuantSpec): QuantConfig {
  const { name: _name, required: _required, maxAccuracyDrop: _drop, maxExactMatchDrop: _emDrop, ...config } = q;
  return config;
}

function defaultName(method: 'int8-dynamic' | 'int8-static' | 'int4'): string {
  return method === 'int8-dynamic' ? 'int8' : method === 'int8-static' ? 'int8-static' : 'int4';
}

/** The issue's bounds: int8 within 2% of fp32 perplexity, int4 within 5%. */
export const DEFAULT_QUANT: QuantSpecInput[] = [
  { method: 'int8-dynamic', maxPplIncrease: 0.02 },
  { method: 'int4', blockSize: 32, maxPplIncrease: 0.05 },
];

/**
 * The report's generation samples: for every prompt, a greedy continuation (unless `greedy` is
 * false) and a seeded sample with the settings a user would pick (temperature 0.8, top-k 40,
 * top-p 0.95), the same seed for every model, so a rerun writes the same text. `temperature: 0`
 * leaves only the greedy one.
 */
export const SamplesSchema = z.strictObject({
  prompts: z.array(z.string().min(1, 'a prompt must hold at least one character')).default(['The ']),
  /** New tokens per sample; past block_size the context slides (engine/eval/generate.ts). */
  maxNewTokens: z.number().int().min(1).max(4096).default(48),
  /** Also decode greedily (argmax), beside the seeded sample. */
  greedy: z.boolean().default(true),
  /** Of the seeded sample; 0: no seeded sample, greedy only. */
  temperature: z.number().min(0).default(0.8),
  /** 0: every token. */
  topK: z.number().int().min(0).default(40),
  topP: z.number().gt(0).max(1).default(0.95),
  seed: z.number().int().default(0),
});

export const EvalSpecSchema = z.strictObject({
  /**
   * Validation batches scored for perplexity (the same ones for every variant and for the gate).
   * null (default): the whole split, in non-overlapping windows, the last shorter one included; a
   * number caps it at that many first batches, and every figure then says how many tokens it covers.
   */
  batches: z.number().int().min(1).nullable().default(null),
  batchSize: z.number().int().min(1).default(8),
  /** Tokens per row; null: the model's block_size. */
  contextLength: z.number().int().min(2).nullable().default(null),
  /** Timed forward passes per variant for latency (after `warmup` untimed ones). */
  speedRuns: z.number().int().min(1).default(10),
  warmup: z.number().int().min(0).default(2),
  /** Batches of the train split used to calibrate int8-static. */
  calibrationBatches: z.number().int().min(1).default(8),
  samples: SamplesSchema.default(() => SamplesSchema.parse({})),
  /** ORT intra-op threads of every evaluation session (fixed, so variants compare fairly). */
  threads: z.number().int().min(1).max(256).default(1),
});
export type EvalSpec = z.output<typeof EvalSpecSchema>;
export type EvalSpecInput = z.input<typeof EvalSpecSchema>;

export const PostTrainingSpecSchema = z
  .strictObject({
    quant: z.array(QuantSpecSchema).default(() => DEFAULT_QUANT.map((q) => QuantSpecSchema.parse(q))),
    eval: EvalSpecSchema.default(() => EvalSpecSchema.parse({})),
  })
  .superRefine((s, ctx) => {
    if (!s.eval.samples.greedy && s.eval.samples.temperature === 0) {
      ctx.addIssue({ code: 'custom', path: ['eval', 'samples', 'greedy'], message: 'greedy: false with temperature: 0 leaves no sample to write; set a temperature above 0 or leave greedy on' });
    }
    const seen = new Set<string>();
    s.quant.forEach((q, i) => {
      if (seen.has(q.name)) ctx.addIssue({ code: 'custom', path: ['quant', i, 'name'], message: `"${q.name}" names two variants; give each a distinct name` });
      seen.add(q.name);
    });
  });
export type PostTrainingSpec = z.output<typeof PostTrainingSpecSchema>;
export type PostTrainingSpecInput = z.input<typeof PostTrainingSpecSchema>;

/**
 * Parses quant + eval specs, throwing an Error whose message names every bad field.
 * @example parsePostTrainingSpec({ quant: [{ method: 'int8-dynamic' }, { method: 'int4', maxPplIncrease: 0.05 }], eval: { batches: 4 } })
 */
export function parsePostTrainingSpec(input: unknown): PostTrainingSpec {
  const r = PostTrainingSpecSchema.safeParse(input ?? {});
  if (!r.success) throw new Error(`invalid post-training spec: ${formatIssues(r.error, 'postTraining', PostTrainingSpecSchema, input ?? {})}`);
  return r.data;
}
