// PipelineSpec: the whole flow in one object — model, dataset, training, optional LoRA, optional
// quantization, evaluation. The SDK parses it once before anything starts (errors name the path,
// `spec.training.rounds: ...`); the parsed form carries a resolved TrainingSpec so the training
// child workflow gets exactly what `truthgpt run` would give it.
//
// Workflows `import type` from here only: the schema pulls in engine modules.

import { z } from 'zod';
import { DatasetSpecSchema } from '../engine/data/dataset';
import { t5LinearModules } from '../engine/hf/peft';
import type { T5Config } from '../engine/models/t5';
import { PipelineLoraSpecSchema } from './lora';
import { isHalfPrecision } from './precision';
import { PostTrainingSpecSchema, type EvalSpecInput, type QuantSpecInput } from './post-training';
import { issueLines, relocateIssues } from './issues';
import { DEFAULT_SPEC_LIMITS, type SpecLimits } from './limits';
import { contextLimitOf, trainingSpecSchema, type TrainingSpec, type TrainingSpecInput } from './training';

/**
 * The pipeline's LoRA stage: a FineTuneSpec whose base is the trained checkpoint. `dataset` is a
 * DatasetSpec of its own (another corpus, e.g. other Brown genres) or, left out, the training
 * dataset; `name` defaults to the pipeline's.
 */
export const PipelineLoraSchema = PipelineLoraSpecSchema.extend({
  dataset: DatasetSpecSchema.omit({ shards: true }).nullish(),
  name: PipelineLoraSpecSchema.shape.name.unwrap().optional(),
});
export type PipelineLora = Omit<z.output<typeof PipelineLoraSchema>, 'name' | 'dataset'> & { name: string; dataset: TrainingSpec['dataset'] | null };
export type PipelineLoraInput = z.input<typeof PipelineLoraSchema>;

/** Keys of a TrainingSpec that live at the top of a PipelineSpec rather than under `training`. */
const TOP_LEVEL = ['name', 'model', 'dataset'] as const;

const PipelineFields = z
  .strictObject({
    /** Names the run (`pipeline-<name>-<time>`), its artifacts and the TruthgptPipeline search attribute. */
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes'),
    /** `{ family: 'gpt', preset?, config? }`, as in a TrainingSpec. */
    model: z.unknown(),
    /** The corpus and tokenizer (DatasetSpec without `shards`: one shard per training worker). */
    dataset: z.unknown(),
    /** Workers, rounds, inner steps, optimizer, schedule, ...: every other TrainingSpec field. */
    training: z.record(z.string(), z.unknown()),
    /** LoRA fine-tune of the trained model (PipelineLoraSchema); its merged model is what post-training quantizes and evaluates. */
    lora: z.unknown().nullish(),
    /** Quantized variants (QuantSpec: a QuantConfig and a variant name) built and evaluated beside fp32; omitted: fp32 only. */
    quantization: z.array(z.unknown()).default([]),
    /** EvalSpec: perplexity batches, latency runs, samples. */
    evaluation: z.unknown().optional(),
  });

/**
 * The PipelineSpec schema, its training checked against `limits` (the worker memory a step may use).
 * @example pipelineSpecSchema({ workerMemoryBytes: 64 * 2 ** 30 }).safeParse(spec)
 */
export function pipelineSpecSchema(limits: SpecLimits = DEFAULT_SPEC_LIMITS) {
  const training = trainingSpecSchema(limits);
  return PipelineFields.transform((p, ctx) => {
    for (const k of TOP_LEVEL) {
      if (k in p.training) ctx.addIssue({ code: 'custom', path: ['training', k], message: `belongs at the top of the spec (spec.${k}), not under training` });
    }
    const trainingInput = { ...p.training, name: p.name, model: p.model, dataset: p.dataset };
    const r = training.safeParse(trainingInput);
    if (!r.success) {
      const top = (head: string | undefined) => head !== undefined && (TOP_LEVEL as readonly string[]).includes(head);
      relocateIssues(ctx, r.error, training, trainingInput, (path) => (top(path[0]) ? path : ['training', ...path]), { hideAtRoot: TOP_LEVEL });
    }
    const postInput = { quant: p.quantization, eval: p.evaluation };
    const post = PostTrainingSpecSchema.safeParse(postInput);
    if (!post.success) relocateIssues(ctx, post.error, PostTrainingSpecSchema, postInput, ([head, ...rest]) => [head === 'quant' ? 'quantization' : 'evaluation', ...rest]);
    // LoRA and post-training (quantization, the evaluation table, the report) run on GPT models so far.
    const model = r.success ? r.data.model : null;
    if (model && model.family !== 'gpt') {
      let refused = false;
      // A BERT classifier's LoRA stage (PEFT SEQ_CLS: adapters + the head) trains on the training
      // dataset, a T5 seq2seq model's (PEFT SEQ_2_SEQ_LM) on the training dataset's pairs.
      const seq2seq = model.family === 't5' && model.task === 'seq2seq';
      if (p.lora != null && model.task !== 'classification' && !seq2seq) {
        ctx.addIssue({ code: 'custom', path: ['lora'], message: `the pipeline's LoRA stage tunes GPT models, BERT classifiers and T5 seq2seq models so far, and this is a ${model.family} ${model.task} model; leave lora out` });
        refused = true;
      } else if (p.lora != null && typeof p.lora === 'object' && (p.lora as Record<string, unknown>).dataset != null) {
        const what = seq2seq ? "a T5 seq2seq model's LoRA stage trains on the training dataset (its source/target pairs)" : "a classifier's LoRA stage trains on the training dataset (its labels)";
        ctx.addIssue({ code: 'custom', path: ['lora', 'dataset'], message: `${what}; leave lora.dataset out` });
        refused = true;
      }
      // A classifier's variants are int8-dynamic, gated on accuracy (engine/quant/classifier-gate.ts);
      // a T5 seq2seq model's on exact match (engine/quant/seq2seq-gate.ts).
      post.data?.quant.forEach((q, i) => {
        const gate = model.task === 'classification' ? 'maxAccuracyDrop' : model.task === 'seq2seq' ? 'maxExactMatchDrop' : null;
        const kind = model.task === 'classification' ? 'a classifier' : 'a seq2seq model';
        if (gate === null) ctx.addIssue({ code: 'custom', path: ['quantization', i], message: `post-training quantization of a ${model.family} ${model.task} model is not wired yet; leave quantization out` });
        else if (q.method !== 'int8-dynamic') ctx.addIssue({ code: 'custom', path: ['quantization', i, 'method'], message: `${kind} quantizes int8-dynamic so far, not ${q.method}` });
        else if (gate !== 'maxAccuracyDrop' && q.maxAccuracyDrop !== undefined) ctx.addIssue({ code: 'custom', path: ['quantization', i, 'maxAccuracyDrop'], message: `gates a classifier; ${kind} is gated on ${gate}` });
        else if (gate !== 'maxExactMatchDrop' && q.maxExactMatchDrop !== undefined) ctx.addIssue({ code: 'custom', path: ['quantization', i, 'maxExactMatchDrop'], message: `gates a T5 seq2seq model; ${kind} is gated on ${gate}` });
        else return;
        refused = true;
      });
      if (refused) return z.NEVER;
    } else if (model?.variant && (p.lora != null || model.variant.kind !== 'memory')) {
      // A memory-augmented GPT trains, and GPT's post-training exports, quantizes and evaluates it
      // (engine/models/export.ts reads its slots; its gates are a language model's, below); a LoRA
      // base reads a plain GPT (artifacts/checkpoints.ts refuseGptVariant).
      // A domain-head GPT (a classifier) is judged by its training evaluations and the classifier's report.
      const what = model.variant.kind === 'memory' ? 'a memory-augmented GPT' : model.variant.kind === 'domain-head' ? 'a GPT domain-head classifier' : 'an image-prefix GPT';
      const why = (stage: string) => `${stage} of ${what} (model.variant) is not wired yet; leave ${stage === 'LoRA' ? 'lora' : stage} out`;
      if (p.lora != null) ctx.addIssue({ code: 'custom', path: ['lora'], message: why('LoRA') });
      if (model.variant.kind === 'memory') return z.NEVER;
      // A domain-head GPT is a classifier: int8-dynamic variants gated on accuracy, as BERT's (activities/classifier-post.ts).
      const classifier = model.variant.kind === 'domain-head';
      let badQuant = false;
      if (p.quantization.length && !classifier) ctx.addIssue({ code: 'custom', path: ['quantization'], message: why('quantization') });
      if (classifier) {
        post.data?.quant.forEach((q, i) => {
          const issue = (path: (string | number)[], message: string) => {
            ctx.addIssue({ code: 'custom', path: ['quantization', i, ...path], message });
            badQuant = true;
          };
          if (q.method !== 'int8-dynamic') issue(['method'], `a classifier quantizes int8-dynamic so far, not ${q.method}`);
          else if (q.maxExactMatchDrop !== undefined) issue(['maxExactMatchDrop'], 'gates a T5 seq2seq model; a classifier is gated on maxAccuracyDrop');
        });
      }
      const reports = model.variant.kind === 'domain-head' ? 'accuracy and macro F1 over every val document' : model.variant.kind === 'image-prefix' ? 'its caption perplexity over every val caption' : 'its val perplexity';
      if (p.evaluation !== undefined) ctx.addIssue({ code: 'custom', path: ['evaluation'], message: `${why('evaluation')} (the training workflow reports ${reports})` });
      if (p.lora != null || (p.quantization.length && !classifier) || badQuant || p.evaluation !== undefined) return z.NEVER;
    } else if (model) {
      post.data?.quant.forEach((q, i) => {
        if (q.maxAccuracyDrop !== undefined) ctx.addIssue({ code: 'custom', path: ['quantization', i, 'maxAccuracyDrop'], message: 'gates a classifier; a language model variant is gated on maxPplIncrease' });
        if (q.maxExactMatchDrop !== undefined) ctx.addIssue({ code: 'custom', path: ['quantization', i, 'maxExactMatchDrop'], message: 'gates a T5 seq2seq model; a language model variant is gated on maxPplIncrease' });
      });
      if (post.data?.quant.some((q) => q.maxAccuracyDrop !== undefined || q.maxExactMatchDrop !== undefined)) return z.NEVER;
    }
    const lora = p.lora == null ? null : parseLora(p.lora, p.name, r.success ? r.data : null, ctx);
    if (!r.success || !post.success || lora === undefined) return z.NEVER;
    for (const k of TOP_LEVEL) if (k in p.training) return z.NEVER;
    return { name: p.name, training: r.data, lora, quantization: post.data.quant, evaluation: post.data.eval };
  });
}

export const PipelineSpecSchema = pipelineSpecSchema();

/** The LoRA section checked against the training it follows; undefined (issues added) when bad. */
function parseLora(raw: unknown, name: string, training: TrainingSpec | null, ctx: z.RefinementCtx): PipelineLora | undefined {
  const r = PipelineLoraSchema.safeParse(raw);
  if (!r.success) {
    relocateIssues(ctx, r.error, PipelineLoraSchema, raw, (path) => ['lora', ...path]);
    return undefined;
  }
  const lora: PipelineLora = { ...r.data, name: r.data.name ?? name, dataset: r.data.dataset ?? null };
  let ok = true;
  if (training?.model.family === 't5') ok = checkT5Targets(lora, training.model.config, ctx);
  if (training && training.model.family !== 'gpt' && isHalfPrecision(lora.train.precision)) {
    ctx.addIssue({ code: 'custom', path: ['lora', 'train', 'precision'], message: `${lora.train.precision} LoRA is wired for GPT bases so far, and this is a ${training.model.family} model; use fp32` });
    ok = false;
  }
  if (training) {
    const limit = contextLimitOf(training.model);
    if (lora.train.contextLength > limit.value) {
      ctx.addIssue({ code: 'custom', path: ['lora', 'train', 'contextLength'], message: `must not exceed model ${limit.field} (${lora.train.contextLength} > ${limit.value})` });
      ok = false;
    }
    // Token ids must mean what they meant in pretraining: a BPE is learned from its own corpus.
    const mine = lora.dataset?.tokenizer;
    const theirs = training.dataset.tokenizer;
    if (mine && JSON.stringify(mine) !== JSON.stringify(theirs)) {
      ctx.addIssue({ code: 'custom', path: ['lora', 'dataset', 'tokenizer'], message: `must be the training dataset's tokenizer (${JSON.stringify(theirs)}), got ${JSON.stringify(mine)}` });
      ok = false;
    } else if (mine && (mine.kind === 'bpe' || mine.kind === 'wordpiece' || mine.kind === 'unigram')) {
      ctx.addIssue({ code: 'custom', path: ['lora', 'dataset', 'tokenizer'], message: `a ${mine.kind === 'bpe' ? 'BPE' : mine.kind} tokenizer is learned from its own corpus, so a second dataset would get different token ids; use byte or gpt2, or leave lora.dataset out to fine-tune on the training dataset` });
      ok = false;
    }
  }
  return ok ? lora : undefined;
}

/**
 * A T5's LoRA targets must name its Linear layers as Hugging Face's T5ForConditionalGeneration does
 * (q, k, v, o, wi or wi_0/wi_1, wo, or a longer suffix such as EncDecAttention.k; a regular
 * expression must match one full module name); each bad entry is an issue naming it.
 */
function checkT5Targets(lora: PipelineLora, config: T5Config, ctx: z.RefinementCtx): boolean {
  const targets = lora.lora.target_modules;
  if (targets === undefined || targets === 'all-linear') return true;
  const modules = [...t5LinearModules(config)];
  const leaves = [...new Set(modules.map((m) => m.split('.').pop()!))].join(', ');
  if (typeof targets === 'string') {
    if (modules.some((m) => new RegExp(`^(?:${targets})$`).test(m))) return true;
    ctx.addIssue({ code: 'custom', path: ['lora', 'lora', 'target_modules'], message: `the regular expression /${targets}/ matches no Linear layer of this T5 (e.g. ${modules[0]}); its layers are ${leaves}` });
    return false;
  }
  let ok = true;
  targets.forEach((t, i) => {
    if (modules.some((m) => m === t || m.endsWith(`.${t}`))) return;
    ctx.addIssue({ code: 'custom', path: ['lora', 'lora', 'target_modules', i], message: `${JSON.stringify(t)} is not a Linear layer of this T5; HF T5ForConditionalGeneration names them ${leaves}` });
    ok = false;
  });
  return ok;
}

export type PipelineSpec = z.output<typeof PipelineSpecSchema>;
/** What a user writes (YAML, JSON or a TS object); every field typed by the schema that checks it. */
export interface PipelineSpecInput {
  name: string;
  model: TrainingSpecInput['model'];
  dataset: TrainingSpecInput['dataset'];
  training: Omit<TrainingSpecInput, 'name' | 'model' | 'dataset'>;
  lora?: PipelineLoraInput | null;
  quantization?: QuantSpecInput[];
  evaluation?: EvalSpecInput;
}
export type { TrainingSpec };

/** A spec that failed validation; `issues` are `spec.<path>: message` lines. */
export class InvalidSpecError extends Error {
  override name = 'InvalidSpecError';
  /** The error vocabulary's type for a bad field (spec/errors.ts). */
  readonly type = 'InvalidConfig';
  constructor(readonly issues: string[]) {
    super(`invalid pipeline spec: ${issues.join('; ')}`);
  }
}

/**
 * Parses a PipelineSpec, throwing an InvalidSpecError whose message names every bad field;
 * `limits` defaults to DEFAULT_SPEC_LIMITS (the SDK and the CLI pass the configured worker memory).
 * @example parsePipelineSpec({ name: 'brown', model: { preset: 'tiny-gpt' }, dataset: { name: 'brown', corpus: { kind: 'brown' } }, training: { rounds: 2, innerSteps: 50, batchSize: 8, contextLength: 64 } })
 */
export function parsePipelineSpec(input: unknown, limits: SpecLimits = DEFAULT_SPEC_LIMITS): PipelineSpec {
  const schema = limits === DEFAULT_SPEC_LIMITS ? PipelineSpecSchema : pipelineSpecSchema(limits);
  const r = schema.safeParse(input);
  if (!r.success) throw new InvalidSpecError(issueLines(r.error, 'spec', PipelineFields, input));
  return r.data;
}

/** True when a parsed YAML/JSON document looks like a PipelineSpec rather than a bare TrainingSpec. */
export function isPipelineSpecInput(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && 'training' in raw;
}
