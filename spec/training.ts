// TrainingSpec: everything a sharded training run needs, parsed once where a run starts (the SDK,
// the CLI). The parsed form is plain JSON (model config resolved from its preset), small enough to
// travel in every activity input; the workflow and its activities take it as it is.
//
// Every object is strict (an unknown key is an error that suggests the nearest known one), sizes
// have ranges, and the model must fit the worker's memory at the spec's batch (spec/limits.ts).
//
// Workflows `import type` from here only: the schema pulls in engine modules.

import { z } from 'zod';
import { DatasetSpecSchema } from '../engine/data/dataset';
import { BertConfigSchema, bertMemoryEquivalent } from '../engine/models/bert';
import { GptConfigSchema, gptOptionFields, type GptConfig } from '../engine/models/gpt';
import { BertHeadSchema, type BertModelConfig } from '../engine/hf/bert';
import { MemoryGptConfigSchema, MemoryVariantSchema, type MemoryVariant } from '../engine/models/memory-slots';
import { DomainGptConfigSchema, DomainHeadVariantSchema, type DomainHeadVariant } from '../engine/models/classification-head';
import { ImagePrefixVariantSchema, MultimodalGptConfigSchema, type ImagePrefixVariant } from '../engine/models/image-prefix';
import { getPreset } from '../engine/models/presets';
import { T5ConfigSchema, t5MemoryEquivalent, type T5Config } from '../engine/models/t5';
import { OptimConfigSchema } from '../engine/optim';
import { DEFAULT_OUTER, OuterOptimSchema } from '../engine/train/outer';
import { ActivationCheckpointingSchema } from '../engine/train/checkpointing';
import { CheckpointPolicySchema } from '../engine/train/shard';
import { corpusIsLabelled, corpusIsPaired, MODEL_FAMILIES, resolveTask, TASK_DATASET, TASKS, type ModelFamily } from './family';
import { formatIssues, relocateIssues } from './issues';
import { checkStepsPerRun, StepsPerRunSchema } from './steps-per-run';
import { OrtMemorySchema } from './ort-memory';
import { checkLossScale, isHalfPrecision, LossScaleSchema, PrecisionSchema } from './precision';
import { StoreKeySchema } from './store-key';
import { checkTokensPerStep, DEFAULT_SPEC_LIMITS, LOOP_LIMITS, trainingMemoryIssue, type SpecLimits } from './limits';

export { formatIssues } from './issues';

/** Overrides of a preset's fields; GptConfigSchema checks the merged config (ranges, divisibility). */
const GptFields = z.strictObject({
  vocab_size: z.number(),
  block_size: z.number(),
  n_layer: z.number(),
  n_head: z.number(),
  n_embd: z.number(),
  bias: z.boolean(),
  // RoPE, RMSNorm, SwiGLU, GQA, dropout, untied head: all optional, GPT-2 when absent.
  ...gptOptionFields,
});

/**
 * What a run started from a stored model (`model.from`) may set beyond its stored config: training
 * settings that change no weight and no shape. A BERT run may also set `head` (a classifier head on
 * an imported encoder or masked-LM model: the head is new, the encoder keeps its weights).
 */
export const FROM_OVERRIDABLE = ['dropout', 'dropout_seed', 'attention'] as const;
export const FROM_OVERRIDABLE_BY_FAMILY: Record<ModelFamily, readonly string[]> = { gpt: FROM_OVERRIDABLE, bert: ['head'], t5: [] };

/** BERT's encoder fields and its head (`{ kind: classification, num_labels }` or `{ kind: mlm }`). */
const BertFields = z.strictObject({ ...BertConfigSchema.shape, head: BertHeadSchema });

/**
 * A GPT's variant (`model.variant`): the seed's advanced models. `memory` (learned memory slots read
 * by cross-attention in chosen layers, engine/models/memory-slots.ts) trains for lm; `domain-head`
 * (a classification head on the last real token, joint LM + class loss,
 * engine/models/classification-head.ts) trains for classification on a labelled corpus;
 * `image-prefix` (image feature vectors projected into prefix tokens, engine/models/image-prefix.ts)
 * trains for lm on the captions of an image-captions corpus.
 */
const GptVariantSchema = z.discriminatedUnion('kind', [MemoryVariantSchema, DomainHeadVariantSchema, ImagePrefixVariantSchema]);

/** The task a GPT variant trains for. */
const VARIANT_TASK = { memory: 'lm', 'domain-head': 'classification', 'image-prefix': 'lm' } as const;

/** A model spec's parsed form: the family, the task it trains for, and its complete config. */
export type ModelSpec = { preset: string | null; from: string | null; fromFiles: Record<string, string> | null } & (
  | { family: 'gpt'; task: 'lm'; config: GptConfig; variant?: MemoryVariant | ImagePrefixVariant }
  | { family: 'gpt'; task: 'classification'; config: GptConfig; variant: DomainHeadVariant }
  | { family: 'bert'; task: 'classification' | 'mlm'; config: BertModelConfig }
  | { family: 't5'; task: 'seq2seq' | 'span-corruption'; config: T5Config }
);

/**
 * A preset, a full config, a preset with some fields overridden, or a committed checkpoint to start
 * from (`from`), of a family (gpt, bert, t5) trained for a task (spec/family.ts: lm for GPT,
 * classification or mlm for BERT, seq2seq or span-corruption for T5).
 */
const ModelSpecSchema = z
  .strictObject({
    family: z.enum(MODEL_FAMILIES).default('gpt'),
    /** What the run trains for; default the family's first task (gpt: lm, bert: classification). */
    task: z.enum(TASKS).nullish(),
    preset: z.string().nullish(),
    /**
     * Start from a committed checkpoint instead of a seeded init: an imported model
     * (`models/<name>`) or any run's checkpoint (`runs/<id>/global/r000004`). Its config lives in
     * the store, so the SDK and the CLI read it when the run starts (sdk/model-from.ts) and fill
     * `config` and `fromFiles` before the spec is parsed.
     */
    from: StoreKeySchema.nullish(),
    /** sha256 of each file of `from` when the run was started: the run refuses a checkpoint that changed since. */
    fromFiles: z.record(z.string(), z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 (64 hex digits)')).nullish(),
    /** Fields of the family's config (GPT: n_layer, n_embd, ...; BERT: hidden_size, ..., head). */
    config: z.record(z.string(), z.unknown()).default({}),
    /**
     * GPT only: `{ kind: memory, n_memory, memory_layers }` adds learned memory slots;
     * `{ kind: domain-head, n_classes }` a classification head (task classification);
     * `{ kind: image-prefix, image_dim, n_image_tokens }` image features as prefix tokens (GptVariantSchema).
     */
    variant: GptVariantSchema.nullish(),
  })
  .transform((m, ctx): ModelSpec => {
    const from = m.from ?? null;
    // A GPT variant names its task (domain-head: classification); a task given must agree.
    const variantTask = m.family === 'gpt' && m.variant ? VARIANT_TASK[m.variant.kind] : null;
    if (m.family === 'gpt' && m.task === 'classification' && m.variant?.kind !== 'domain-head') {
      ctx.addIssue({ code: 'custom', path: ['task'], message: 'a GPT classifies with a domain head: add variant { kind: domain-head, n_classes: <labels> } (or train a classifier with family bert)' });
      return z.NEVER;
    }
    if (variantTask !== null && m.task != null && m.task !== variantTask) {
      ctx.addIssue({ code: 'custom', path: ['task'], message: `a ${m.variant!.kind} GPT trains for ${variantTask}, not ${m.task}` });
      return z.NEVER;
    }
    const t = resolveTask(m.family, m.task ?? variantTask);
    if ('message' in t) {
      ctx.addIssue({ code: 'custom', path: [t.field], message: t.message });
      return z.NEVER;
    }
    if (from !== null && m.preset != null) {
      ctx.addIssue({ code: 'custom', path: ['preset'], message: `cannot be combined with from: the model's config is ${from}'s` });
      return z.NEVER;
    }
    if (from !== null && m.fromFiles == null) {
      ctx.addIssue({
        code: 'custom',
        path: ['from'],
        message: `the config of ${from} is read from the store when the run starts: start it with TruthGPT.startPipeline or \`truthgpt run\` (or resolve it with resolveModelFrom) rather than parsing the spec alone`,
      });
      return z.NEVER;
    }
    const source = { preset: m.preset ?? null, from, fromFiles: m.fromFiles ?? null };
    const variant = m.variant ?? null;
    if (variant !== null) {
      const why =
        m.family !== 'gpt'
          ? { path: ['variant'], message: `variants are GPT models (memory, domain-head, image-prefix); this is a ${m.family} model` }
          : from !== null
              ? { path: ['variant'], message: `cannot be combined with from: a stored model keeps its own architecture (starting from a ${variant.kind} checkpoint is not wired yet)` }
              : null;
      if (why) {
        ctx.addIssue({ code: 'custom', ...why });
        return z.NEVER;
      }
    }
    let base: Record<string, unknown> = {};
    if (m.preset != null) {
      try {
        const p = getPreset(m.preset);
        if (p.family !== m.family) throw new Error(`preset "${m.preset}" is a ${p.family} model, but model.family is ${m.family}`);
        base = p.config;
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['preset'], message: (err as Error).message });
        return z.NEVER;
      }
    }
    if (m.family === 'bert') {
      const fields = BertFields.partial().safeParse(m.config);
      if (!fields.success) {
        relocateIssues(ctx, fields.error, BertFields.partial(), m.config, (path) => ['config', ...path]);
        return z.NEVER;
      }
      const task = t.task as 'classification' | 'mlm';
      // Only the keys the spec gave: the schema's defaults must not override the preset's values.
      const given = Object.fromEntries(Object.entries(fields.data).filter(([k]) => k in m.config));
      const { head: givenHead, ...enc } = { ...base, ...given } as Record<string, unknown> & { head?: BertModelConfig['head'] };
      const head: BertModelConfig['head'] | undefined = givenHead ?? (task === 'mlm' ? { kind: 'mlm' } : undefined);
      if (!head || (task === 'classification' && head.kind !== 'classification') || (task === 'mlm' && head.kind !== 'mlm')) {
        const want = task === 'classification' ? '{ kind: classification, num_labels: <labels> }' : '{ kind: mlm }';
        ctx.addIssue({ code: 'custom', path: ['config', 'head'], message: `a ${task} run needs the head ${want}${head ? `, not ${head.kind}` : ''}` });
        return z.NEVER;
      }
      // BertForMaskedLM has no pooler: a masked-LM run trains (and exports) the model without it.
      if (task === 'mlm') enc.add_pooling_layer = false;
      const parsed = BertConfigSchema.safeParse(enc);
      if (!parsed.success) {
        relocateIssues(ctx, parsed.error, BertConfigSchema, enc, (path) => ['config', ...path]);
        return z.NEVER;
      }
      return { family: 'bert', task, ...source, config: { ...parsed.data, head } };
    }
    if (m.family === 't5') {
      const merged = { ...base, ...m.config };
      const parsed = T5ConfigSchema.safeParse(merged);
      if (!parsed.success) {
        relocateIssues(ctx, parsed.error, T5ConfigSchema, merged, (path) => ['config', ...path]);
        return z.NEVER;
      }
      return { family: 't5', task: t.task as 'seq2seq' | 'span-corruption', ...source, config: parsed.data };
    }
    if (m.family !== 'gpt') return z.NEVER; // resolveTask refused it above
    const fields = GptFields.partial().safeParse(m.config);
    if (!fields.success) {
      relocateIssues(ctx, fields.error, GptFields.partial(), m.config, (path) => ['config', ...path]);
      return z.NEVER;
    }
    const merged = { ...base, ...fields.data };
    const parsed = GptConfigSchema.safeParse(merged);
    if (!parsed.success) {
      // Sizes above their ranges only: the spec fails either way, but the checks that need the
      // whole spec (context vs block_size, the memory estimate) still report on the merged config.
      const tooBig = parsed.error.issues.every((i) => i.code === 'too_big');
      relocateIssues(ctx, parsed.error, GptConfigSchema, merged, (path) => ['config', ...path], { continue: tooBig });
      return tooBig ? { family: 'gpt', task: 'lm', ...source, config: merged as GptConfig } : z.NEVER;
    }
    if (variant?.kind === 'memory') {
      const mem = MemoryGptConfigSchema.safeParse({ gpt: parsed.data, n_memory: variant.n_memory, memory_layers: variant.memory_layers });
      if (!mem.success) {
        for (const i of mem.error.issues) ctx.addIssue({ code: 'custom', path: ['variant', ...i.path.map((k) => k as string | number)], message: i.message });
        return z.NEVER;
      }
      return { family: 'gpt', task: 'lm', ...source, config: parsed.data, variant };
    }
    if (variant?.kind === 'domain-head') {
      const dom = DomainGptConfigSchema.safeParse({ gpt: parsed.data, n_classes: variant.n_classes, lm_weight: variant.lm_weight, cls_weight: variant.cls_weight });
      if (!dom.success) {
        for (const i of dom.error.issues) ctx.addIssue({ code: 'custom', path: ['variant', ...i.path.map((k) => k as string | number)], message: i.message });
        return z.NEVER;
      }
      return { family: 'gpt', task: 'classification', ...source, config: parsed.data, variant };
    }
    if (variant?.kind === 'image-prefix') {
      const mm = MultimodalGptConfigSchema.safeParse({ gpt: parsed.data, image_dim: variant.image_dim, n_image_tokens: variant.n_image_tokens, projector_hidden: variant.projector_hidden });
      if (!mm.success) {
        for (const i of mm.error.issues) ctx.addIssue({ code: 'custom', path: ['variant', ...i.path.map((k) => k as string | number)], message: i.message });
        return z.NEVER;
      }
      return { family: 'gpt', task: 'lm', ...source, config: parsed.data, variant };
    }
    return { family: 'gpt', task: 'lm', ...source, config: parsed.data };
  });

/** The longest sequence the model takes: GPT's block_size, BERT's max_position_embeddings; T5's relative positions set none. */
export function contextLimitOf(model: ModelSpec): { field: string; value: number } {
  if (model.family === 't5') return { field: 'positions (relative: no limit)', value: Infinity };
  return model.family === 'gpt' ? { field: 'block_size', value: model.config.block_size } : { field: 'max_position_embeddings', value: model.config.max_position_embeddings };
}

/** What the worker-memory check estimates: GPT's own config, or the GPT a BERT's or T5's layers match. */
function memoryConfigOf(model: ModelSpec, contextLength: number): GptConfig {
  if (model.family === 't5') return t5MemoryEquivalent(model.config, contextLength);
  return model.family === 'gpt' ? model.config : bertMemoryEquivalent(model.config);
}

const TrainingFields = z.strictObject({
  /** Names the run's artifacts and the default workflow id. */
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes').default('train'),
  model: ModelSpecSchema,
  /** The corpus and tokenizer; it is split into one train shard per worker. */
  dataset: DatasetSpecSchema.omit({ shards: true }),
  /** W: parallel trainShard activities per round, each on its own data shard. */
  workers: z.number().int().min(1).max(256).default(1),
  /** DiLoCo rounds; 0 (only with `model.from`) trains nothing: the stored model is evaluated as it is, for a LoRA or post-training stage. */
  rounds: z.number().int().min(0).max(LOOP_LIMITS.rounds),
  /** H: inner AdamW steps per worker per round. */
  innerSteps: z.number().int().min(1).max(LOOP_LIMITS.innerSteps),
  batchSize: z.number().int().min(1).max(LOOP_LIMITS.batchSize),
  contextLength: z.number().int().min(2).max(LOOP_LIMITS.contextLength),
  /**
   * T5 seq2seq runs: the decoder length, the longest target in tokens with its EOS (default
   * contextLength, which is the longest source). A longer example is an error naming it.
   */
  targetLength: z.number().int().min(2).max(LOOP_LIMITS.contextLength).optional(),
  optimizer: OptimConfigSchema.default(() => OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } })),
  outer: OuterOptimSchema.default(DEFAULT_OUTER),
  /** E: evaluate every E rounds (and before the first and after the last). */
  evalEvery: z.number().int().min(1).default(1),
  /** Validation batches per evaluation (the same first ones each time). */
  evalBatches: z.number().int().min(1).default(16),
  checkpoint: CheckpointPolicySchema.default({ everySteps: 25, everySeconds: 60 }),
  seed: z.number().int().default(0),
  /** ORT intra-op threads per training session; fixed so results are identical on every worker. */
  threads: z.number().int().min(1).max(256).default(1),
  /** A worker silent for this long is presumed dead and its shard retried elsewhere. */
  heartbeatTimeoutSeconds: z.number().int().min(2).default(60),
  /** Upper bound on one trainShard attempt. */
  shardTimeoutMinutes: z.number().int().min(1).default(120),
  /** Continue-as-new after this many rounds (Temporal also suggests it when history grows). */
  roundsPerRun: z.number().int().min(1).default(100),
  /**
   * Recompute transformer blocks in the backward instead of keeping their activations: 'off',
   * 'block' (each block) or k (k blocks per recomputed segment). Less memory, more compute; the
   * weights come out the same (engine/train/checkpointing.ts).
   */
  activationCheckpointing: ActivationCheckpointingSchema.default('off'),
  /**
   * K: optimizer steps per session.run, as one ONNX Loop over K batches (engine/train/ksteps.ts).
   * The same weights bit for bit as K = 1; weights and optimizer state stay inside the session
   * between the K steps. Must divide checkpoint.everySteps.
   */
  stepsPerRun: StepsPerRunSchema,
  /** ORT's memory pattern and arena for the step session (spec/ort-memory.ts); absent: both on, as ORT defaults. */
  ortMemory: OrtMemorySchema,
  /** fp32 (default), or fp16 / bf16 compute over fp32 master weights (spec/precision.ts); needs a CUDA worker. */
  precision: PrecisionSchema,
  /** fp16's dynamic loss scaling (spec/precision.ts); absent: growthInterval 2000. */
  lossScale: LossScaleSchema,
});

/**
 * The TrainingSpec schema checked against `limits` (the worker memory a step may use).
 * @example trainingSpecSchema({ workerMemoryBytes: 64 * 2 ** 30 }).safeParse(spec)
 */
export function trainingSpecSchema(limits: SpecLimits = DEFAULT_SPEC_LIMITS) {
  return TrainingFields.superRefine((s, ctx) => {
    const limit = contextLimitOf(s.model);
    if (s.contextLength > limit.value) {
      ctx.addIssue({ code: 'custom', path: ['contextLength'], message: `must not exceed model ${limit.field} (${s.contextLength} > ${limit.value})` });
    }
    if (s.targetLength !== undefined && s.model.task !== 'seq2seq') {
      ctx.addIssue({ code: 'custom', path: ['targetLength'], message: `sets a seq2seq run's decoder length; this run trains a ${s.model.family} model for ${s.model.task}` });
    }
    if (TASK_DATASET[s.model.task] === 'pairs' && !corpusIsPaired(s.dataset.corpus)) {
      const c = s.dataset.corpus;
      ctx.addIssue({ code: 'custom', path: ['dataset', 'corpus', ...(c.kind === 'jsonl' ? ['targetField'] : [])], message: `a ${s.model.task} run needs source/target pairs: a jsonl corpus with textField (the source) and targetField (the target), not ${c.kind === 'jsonl' ? 'jsonl without targetField' : c.kind}` });
    }
    if (TASK_DATASET[s.model.task] === 'labelled' && !corpusIsLabelled(s.dataset.corpus)) {
      ctx.addIssue({ code: 'custom', path: ['dataset', 'corpus'], message: `a ${s.model.task} run needs a labelled corpus (spam-assassin, brown (its genres), or jsonl with labelField), not ${s.dataset.corpus.kind}${s.dataset.corpus.kind === 'jsonl' ? ' without labelField' : ''}` });
    }
    // An image-prefix GPT reads an image-captions corpus of its dims; no other model reads one.
    const c = s.dataset.corpus;
    const image = s.model.family === 'gpt' && s.model.variant?.kind === 'image-prefix' ? s.model.variant : null;
    if (image && c.kind !== 'image-captions') {
      ctx.addIssue({ code: 'custom', path: ['dataset', 'corpus', 'kind'], message: `an image-prefix GPT trains on image features with their captions: corpus kind image-captions, not ${c.kind}` });
    } else if (image && c.kind === 'image-captions') {
      if (c.imageTokens !== image.n_image_tokens) ctx.addIssue({ code: 'custom', path: ['dataset', 'corpus', 'imageTokens'], message: `must equal model.variant.n_image_tokens (${c.imageTokens} != ${image.n_image_tokens})` });
      if (c.imageDim !== image.image_dim) ctx.addIssue({ code: 'custom', path: ['dataset', 'corpus', 'imageDim'], message: `must equal model.variant.image_dim (${c.imageDim} != ${image.image_dim})` });
      const block = contextLimitOf(s.model).value;
      if (s.contextLength + image.n_image_tokens > block) {
        ctx.addIssue({ code: 'custom', path: ['contextLength'], message: `with the ${image.n_image_tokens} image tokens must not exceed model block_size (${s.contextLength} + ${image.n_image_tokens} > ${block})` });
      }
    } else if (c.kind === 'image-captions') {
      ctx.addIssue({ code: 'custom', path: ['dataset', 'corpus', 'kind'], message: `image-captions carries image features, which a GPT reads with model.variant { kind: image-prefix, image_dim, n_image_tokens }; this is a ${s.model.family} ${s.model.task} model without it` });
    }
    if (s.model.family === 'gpt' && s.model.variant && s.activationCheckpointing !== 'off') {
      ctx.addIssue({ code: 'custom', path: ['activationCheckpointing'], message: `recomputing blocks of a ${s.model.variant.kind === 'memory' ? 'memory-augmented' : s.model.variant.kind} GPT (model.variant) is not wired yet; leave activationCheckpointing off` });
    }
    if (isHalfPrecision(s.precision) && (s.model.family !== 'gpt' || s.model.variant)) {
      ctx.addIssue({ code: 'custom', path: ['precision'], message: `${s.precision} training is wired for plain GPT models so far, and this is a ${s.model.family === 'gpt' ? 'memory-augmented GPT (model.variant)' : `${s.model.family} model`}; use fp32` });
    }
    checkLossScale(s, ctx);
    if (s.rounds === 0 && s.model.from === null) {
      ctx.addIssue({ code: 'custom', path: ['rounds'], message: 'must be at least 1 for a new model (0 rounds trains nothing; start from a stored model with model.from to evaluate or fine-tune it without pretraining)' });
    }
    checkTokensPerStep(s, ctx);
    checkStepsPerRun(s, { field: 'innerSteps', value: s.innerSteps }, ctx);
    const memory = trainingMemoryIssue(memoryConfigOf(s.model, s.contextLength), s.batchSize, s.contextLength, s.optimizer.optimizer, limits, { activationCheckpointing: s.activationCheckpointing, ortMemory: s.ortMemory });
    if (memory) ctx.addIssue({ code: 'custom', path: ['model'], message: memory });
  });
}

export const TrainingSpecSchema = trainingSpecSchema();

export type TrainingSpec = z.output<typeof TrainingSpecSchema>;
export type TrainingSpecInput = z.input<typeof TrainingSpecSchema>;

/**
 * Parses a spec, throwing an Error whose message names every bad field; `limits` defaults to
 * DEFAULT_SPEC_LIMITS (the SDK and the CLI pass the configured worker memory).
 * @example parseTrainingSpec({ model: { preset: 'tiny-gpt' }, dataset: { name: 'brown', corpus: { kind: 'brown' } }, rounds: 2, innerSteps: 50, batchSize: 8, contextLength: 64 })
 */
export function parseTrainingSpec(input: unknown, limits: SpecLimits = DEFAULT_SPEC_LIMITS): TrainingSpec {
  const schema = limits === DEFAULT_SPEC_LIMITS ? TrainingSpecSchema : trainingSpecSchema(limits);
  const r = schema.safeParse(input);
  if (!r.success) throw new Error(`invalid training spec: ${formatIssues(r.error, 'spec', schema, input)}`);
  return r.data;
}

/** What a task asks of its dataset beyond the tokens: labels (classification) or pairs (seq2seq); nothing for a text task. */
export function datasetNeedsOf(task: TrainingSpec['model']['task']): { labels?: true; pairs?: true } {
  const kind = TASK_DATASET[task];
  return kind === 'labelled' ? { labels: true } : kind === 'pairs' ? { pairs: true } : {};
}

/** The dataset spec a run prepares: one train (and val) shard per worker. */
export function datasetSpecOf(spec: TrainingSpec) {
  return { ...spec.dataset, shards: spec.workers, ...datasetNeedsOf(spec.model.task) };
}
