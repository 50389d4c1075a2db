// FineTuneSpec: one LoRA fine-tune of a base model on a dataset, parsed once where a run starts
// (the SDK, a schedule). The parsed form is plain JSON that the workflow and its activities take as
// it is; what only the stored base can tell (its vocabulary, its block_size) is checked when it loads.
//
//   base      our committed checkpoint (its store prefix) or an .onnx file in the store
//   dataset   a committed dataset prefix, a DatasetSpec to prepare, or "the newest version under
//             a prefix" (what a schedule uses)
//   lora      engine/lora's LoraConfig (PEFT keys)
//   train     steps, batch geometry, optimizer, snapshots
//
// Workflows `import type` from here only: the schema pulls in engine modules.

import { z } from 'zod';
import { DatasetSpecSchema } from '../engine/data/dataset';
import { ImportedObjectiveSchema } from '../engine/finetune/imported';
import { LoraConfigSchema } from '../engine/lora/config';
import { OptimConfigSchema } from '../engine/optim';
import { ActivationCheckpointingSchema } from '../engine/train/checkpointing';
import { CheckpointPolicySchema } from '../engine/train/shard';
import { formatIssues } from './issues';
import { checkStepsPerRun, StepsPerRunSchema } from './steps-per-run';
import { OrtMemorySchema } from './ort-memory';
import { checkLossScale, LossScaleSchema, PrecisionSchema } from './precision';
import { checkTokensPerStep, LOOP_LIMITS } from './limits';
import { StoreKeySchema } from './store-key';

const Key = StoreKeySchema;

export const BaseModelSchema = z.discriminatedUnion('kind', [
  /** A checkpoint committed by trainingWorkflow (or a merged fine-tune): its prefix in the store. */
  z.strictObject({ kind: z.literal('checkpoint'), prefix: Key }),
  /**
   * An imported .onnx file (our export or a torch.onnx export of a Hugging Face model), trained
   * with the loss its objective names (engine/finetune/imported.ts).
   */
  z.strictObject({
    kind: z.literal('onnx'),
    key: Key,
    objective: ImportedObjectiveSchema,
    /** Name of the token-id input; an `attention_mask` input, when the model has one, is fed ones. */
    inputName: z.string().default('input_ids'),
  }),
]);
export type BaseModel = z.output<typeof BaseModelSchema>;

export const DatasetSourceSchema = z.discriminatedUnion('kind', [
  /** A dataset committed by prepareDataset, by its prefix. */
  z.strictObject({ kind: z.literal('ref'), prefix: Key }),
  /** Prepared (or reused when already there) before training. One train and one val shard. */
  z.strictObject({ kind: z.literal('spec'), spec: DatasetSpecSchema.omit({ shards: true }) }),
  /** The most recently committed dataset whose prefix starts with `prefix` (scheduled runs). */
  z.strictObject({ kind: z.literal('newest'), prefix: Key }),
]);
export type DatasetSource = z.output<typeof DatasetSourceSchema>;

export const FineTuneTrainSchema = z
  .strictObject({
    /** Total optimizer steps on the adapters. */
    steps: z.number().int().min(1).max(LOOP_LIMITS.steps),
    /** Steps per trainAdapter activity: progress, pause and cancel act between these chunks. */
    stepsPerActivity: z.number().int().min(1).default(100),
    batchSize: z.number().int().min(1).max(LOOP_LIMITS.batchSize),
    contextLength: z.number().int().min(2).max(LOOP_LIMITS.contextLength),
    optimizer: OptimConfigSchema.default(() => OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3, weight_decay: 0 } })),
    /** Validation batches for the before/after losses (the same first ones both times). */
    evalBatches: z.number().int().min(1).default(16),
    checkpoint: CheckpointPolicySchema.default({ everySteps: 25, everySeconds: 60 }),
    seed: z.number().int().default(0),
    /** ORT intra-op threads; fixed so a resumed run ends bit-identical on any worker. */
    threads: z.number().int().min(1).max(256).default(1),
    /** Recompute the base's transformer blocks in the backward (as training's `activationCheckpointing`); GPT bases only. */
    activationCheckpointing: ActivationCheckpointingSchema.default('off'),
    /** K: optimizer steps per session.run (as training's `stepsPerRun`). Must divide checkpoint.everySteps. */
    stepsPerRun: StepsPerRunSchema,
    /** ORT's memory pattern and arena for the step session (as training's `ortMemory`, spec/ort-memory.ts). */
    ortMemory: OrtMemorySchema,
    /** fp32 (default), or fp16 / bf16 compute over fp32 weights (as training's `precision`, spec/precision.ts); GPT bases, CUDA workers. */
    precision: PrecisionSchema,
    /** fp16's dynamic loss scaling (as training's `lossScale`). */
    lossScale: LossScaleSchema,
  })
  .superRefine((t, ctx) => {
    checkLossScale(t, ctx);
    checkTokensPerStep(t, ctx);
    checkStepsPerRun(t, { field: 'stepsPerActivity', value: t.stepsPerActivity }, ctx);
  });
export type FineTuneTrain = z.output<typeof FineTuneTrainSchema>;

/** The fields of a FineTuneSpec, before the cross-field checks. */
const FineTuneFields = z.strictObject({
  /** Names the run's artifacts, the default workflow id and the TruthgptPipeline attribute. */
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes').default('finetune'),
  base: BaseModelSchema,
  dataset: DatasetSourceSchema,
  lora: LoraConfigSchema.default(() => LoraConfigSchema.parse({})),
  train: FineTuneTrainSchema,
  /**
   * Start from an adapter instead of the fresh (B = 0) init: `true` = the last successful
   * fine-tune of this lineage, a string = the prefix of a committed adapter (PEFT files).
   */
  continueFromAdapter: z.union([z.boolean(), Key]).default(false),
  /**
   * Skip the run ("no new data") when the last successful fine-tune of this lineage used the same
   * dataset content. Default: on for `newest` datasets (schedules), off otherwise.
   */
  skipIfSeen: z.boolean().nullish(),
  /**
   * Names a series of fine-tunes (a schedule sets its id): each success is recorded under it, so
   * the next run knows which data it already used and which adapter it may continue from.
   */
  lineage: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits and . _ -').nullish(),
  heartbeatTimeoutSeconds: z.number().int().min(2).default(60),
  activityTimeoutMinutes: z.number().int().min(1).default(120),
});

export const FineTuneSpecSchema = FineTuneFields.superRefine((s, ctx) => {
  if (s.continueFromAdapter === true && !s.lineage) {
    ctx.addIssue({ code: 'custom', path: ['continueFromAdapter'], message: 'true needs a lineage (the series whose last adapter to continue from)' });
  }
  if ((s.skipIfSeen ?? s.dataset.kind === 'newest') && !s.lineage) {
    ctx.addIssue({ code: 'custom', path: ['lineage'], message: 'required to skip already-seen data (set skipIfSeen: false, or name the lineage)' });
  }
}).transform((s) => ({ ...s, skipIfSeen: s.skipIfSeen ?? s.dataset.kind === 'newest', lineage: s.lineage ?? null }));
export type FineTuneSpec = z.output<typeof FineTuneSpecSchema>;
export type FineTuneSpecInput = z.input<typeof FineTuneSpecSchema>;

/**
 * A pipeline's LoRA stage: a FineTuneSpec without base and dataset, which the pipeline fills in
 * from its training stage. The workflow then passes
 * `{ ...lora, base: { kind: 'checkpoint', prefix: trained.checkpoint.prefix }, dataset: { kind: 'ref', prefix: trained.dataset.prefix }, continueFromAdapter: false, skipIfSeen: false, lineage: null }`
 * to fineTuneWorkflow: a valid parsed FineTuneSpec (parsePipelineSpec checked contextLength against the trained model).
 */
export const PipelineLoraSpecSchema = FineTuneFields.omit({ base: true, dataset: true, continueFromAdapter: true, skipIfSeen: true, lineage: true });
export type PipelineLoraSpec = z.output<typeof PipelineLoraSpecSchema>;

/**
 * Parses a spec, throwing an Error whose message names every bad field.
 * @example parseFineTuneSpec({ base: { kind: 'checkpoint', prefix: 'runs/pre/global/r000002' }, dataset: { kind: 'newest', prefix: 'datasets/fiction-' }, train: { steps: 200, batchSize: 8, contextLength: 32 } })
 */
export function parseFineTuneSpec(input: unknown): FineTuneSpec {
  const r = FineTuneSpecSchema.safeParse(input);
  if (!r.success) throw new Error(`invalid fine-tune spec: ${formatIssues(r.error, 'spec', FineTuneSpecSchema, input)}`);
  return r.data;
}
