// PipelineSpec: the whole flow in one object — model, dataset, training, optional LoRA, optional
// quantization, evaluation. The SDK parses it once before anything starts (errors name the path,
// `spec.training.rounds: ...`); the parsed form carries a resolved TrainingSpec so the training
// child workflow gets exactly what `truthgpt run` would give it.
//
// Workflows `import type` from here only: the schema pulls in engine modules.

import { z } from 'zod';
import { PostTrainingSpecSchema, type EvalSpecInput, type QuantSpecInput } from './post-training';
import { formatIssues, TrainingSpecSchema, type TrainingSpec, type TrainingSpecInput } from './training';

/** Keys of a TrainingSpec that live at the top of a PipelineSpec rather than under `training`. */
const TOP_LEVEL = ['name', 'model', 'dataset'] as const;

const PipelineFields = z
  .object({
    /** Names the run (`pipeline-<name>-<time>`), its artifacts and the TruthgptPipeline search attribute. */
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes'),
    /** `{ family: 'gpt', preset?, config? }`, as in a TrainingSpec. */
    model: z.unknown(),
    /** The corpus and tokenizer (DatasetSpec without `shards`: one shard per training worker). */
    dataset: z.unknown(),
    /** Workers, rounds, inner steps, optimizer, schedule, ...: every other TrainingSpec field. */
    training: z.record(z.string(), z.unknown()),
    /** LoRA fine-tune of the trained model; waits for the fine-tune workflow (refused until then). */
    lora: z.record(z.string(), z.unknown()).nullish(),
    /** Quantized variants (QuantSpec: a QuantConfig and a variant name) built and evaluated beside fp32; omitted: fp32 only. */
    quantization: z.array(z.unknown()).default([]),
    /** EvalSpec: perplexity batches, latency runs, samples. */
    evaluation: z.unknown().optional(),
  })
  .strict();

export const PipelineSpecSchema = PipelineFields.transform((p, ctx) => {
  for (const k of TOP_LEVEL) {
    if (k in p.training) ctx.addIssue({ code: 'custom', path: ['training', k], message: `belongs at the top of the spec (spec.${k}), not under training` });
  }
  if (p.lora != null) {
    ctx.addIssue({ code: 'custom', path: ['lora'], message: 'LoRA fine-tuning is not available in pipelines yet (the fine-tune workflow has not landed); remove spec.lora' });
  }
  const r = TrainingSpecSchema.safeParse({ ...p.training, name: p.name, model: p.model, dataset: p.dataset });
  if (!r.success) {
    for (const issue of r.error.issues) {
      const [head, ...rest] = issue.path.map(String);
      const path = (TOP_LEVEL as readonly string[]).includes(head) ? [head, ...rest] : ['training', head, ...rest].filter((s) => s !== undefined);
      ctx.addIssue({ code: 'custom', path, message: issue.message });
    }
  }
  const post = PostTrainingSpecSchema.safeParse({ quant: p.quantization, eval: p.evaluation });
  if (!post.success) {
    for (const issue of post.error.issues) {
      const [head, ...rest] = issue.path;
      ctx.addIssue({ code: 'custom', path: [head === 'quant' ? 'quantization' : 'evaluation', ...rest.map(String)], message: issue.message });
    }
  }
  if (!r.success || !post.success || p.lora != null) return z.NEVER;
  for (const k of TOP_LEVEL) if (k in p.training) return z.NEVER;
  return { name: p.name, training: r.data, lora: null, quantization: post.data.quant, evaluation: post.data.eval };
});

export type PipelineSpec = z.output<typeof PipelineSpecSchema>;
/** What a user writes (YAML, JSON or a TS object); every field typed by the schema that checks it. */
export interface PipelineSpecInput {
  name: string;
  model: TrainingSpecInput['model'];
  dataset: TrainingSpecInput['dataset'];
  training: Omit<TrainingSpecInput, 'name' | 'model' | 'dataset'>;
  lora?: Record<string, unknown> | null;
  quantization?: QuantSpecInput[];
  evaluation?: EvalSpecInput;
}
export type { TrainingSpec };

/** A spec that failed validation; `issues` are `spec.<path>: message` lines. */
export class InvalidSpecError extends Error {
  override name = 'InvalidSpecError';
  /** The error vocabulary's type for a bad field (sdk/errors.ts). */
  readonly type = 'InvalidConfig';
  constructor(readonly issues: string[]) {
    super(`invalid pipeline spec: ${issues.join('; ')}`);
  }
}

/**
 * Parses a PipelineSpec, throwing an InvalidSpecError whose message names every bad field.
 * @example parsePipelineSpec({ name: 'brown', model: { preset: 'tiny-gpt' }, dataset: { name: 'brown', corpus: { kind: 'brown' } }, training: { rounds: 2, innerSteps: 50, batchSize: 8, contextLength: 64 } })
 */
export function parsePipelineSpec(input: unknown): PipelineSpec {
  const r = PipelineSpecSchema.safeParse(input);
  if (!r.success) throw new InvalidSpecError(r.error.issues.map((i) => formatIssues(new z.ZodError([i]))));
  return r.data;
}

/** True when a parsed YAML/JSON document looks like a PipelineSpec rather than a bare TrainingSpec. */
export function isPipelineSpecInput(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && 'training' in raw;
}
