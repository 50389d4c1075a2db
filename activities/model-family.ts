// What the training activities do differently per model family and task: the parameters a
// checkpoint holds, the checkpoint's family and config, the compiled step, the feeds of each step
// and the evaluation. trainShard, createModel, aggregateRound and evaluate stay family-blind.
//
//   gpt  lm              LM windows of the token stream (engine/train/shard.ts), LmEvaluator; with
//                        model.variant memory, the memory-augmented GPT (engine/models/memory-slots.ts)
//   gpt  classification  model.variant domain-head: labelled documents padded on the right, the head on
//                        the last real token (activities/variant-training.ts); accuracy, macro F1
//   gpt  lm              model.variant image-prefix: captions with their image features
//                        (activities/variant-training.ts); caption loss and perplexity
//   bert classification  labelled documents framed [CLS] … [SEP] (engine/train/bert.ts); accuracy, macro F1
//   bert mlm             masked windows of the token stream; MLM loss and perplexity
//   t5   seq2seq, span-corruption   activities/t5-training.ts: loss, perplexity, exact match
//
// A new family adds its branch to `familyTraining` (and its tasks to spec/family.ts).

import { BertEvaluator, bertTokensOf, bertTrainParams, classificationBatch, compileBertTrainStep, concatLabelled, labelledDocs, labelMapOf, mlmBatch, type LabelledDoc } from '../engine/train/bert';
import type { TensorData } from '../engine/graph/ir';
import type { BertModelConfig } from '../engine/hf/bert';
import type { ParamSpec } from '../engine/models/blocks';
import { explicitGptConfig, gptParams } from '../engine/models/gpt';
import { memoryConfigOf, memoryGptParams } from '../engine/models/memory-slots';
import type { SessionConfig } from '../engine/runtime';
import { LmEvaluator } from '../engine/train/evaluate';
import { mixedPrecisionFor } from '../engine/train/precision';
import { compileLmTrainStep, type CompiledTrainStep } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import type { TrainingSpec } from '../spec/training';
import { failure } from '../spec/errors';
import { type DatasetRef, type ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { datasetTokenizerMemo } from '../artifacts/tokenizers';
import { t5Training } from './t5-training';
import { domainTraining, imagePrefixTraining } from './variant-training';

export interface EvaluateResult {
  /** Validation loss: next-token (lm), masked-token (mlm) or label (classification) cross-entropy. */
  loss: number;
  /** exp(loss); for classification the label cross-entropy's, which `accuracy` outranks. */
  perplexity: number;
  /** Tokens scored (lm: every window token; mlm: masked positions; classification: framed tokens of every document). */
  tokens: number;
  /** Classification only: accuracy and macro F1 over `examples` validation documents (all of them). */
  accuracy?: number;
  macroF1?: number;
  examples?: number;
  majorityBaseline?: number;
  confusion?: number[][];
  /** Seq2seq only: the share of `examples` validation examples whose greedy answer is exactly the target (EOS included). */
  exactMatch?: number;
}

export interface FamilyTraining {
  /** What checkpoint.json records: the family and its config with every option explicit. */
  state: { family: 'gpt' | 'bert' | 't5'; modelConfig: Record<string, unknown> };
  params: ParamSpec[];
  /** Cache key of the compiled step (model, optimizer, geometry, threads). */
  stepKey: string;
  /** `halfEmulation`: a CPU worker emulates a fp16/bf16 spec instead of refusing it (engine/train/precision.ts). */
  compile(session: SessionConfig, memoryLimitBytes?: number, halfEmulation?: boolean): Promise<CompiledTrainStep>;
  /** Feeds per step, when not GPT's LM windows of `ids`. */
  batch?(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, shard: number, ids: Uint16Array | Uint32Array): Promise<(step: number) => Record<string, TensorData>>;
  /** `onBatch` is called after each evaluation batch (a heartbeat that throws when the activity is cancelled). */
  evaluate(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, weights: Map<string, Float32Array>, session: SessionConfig, onBatch?: (n: number) => void): Promise<EvaluateResult>;
}

const lmEvaluators = new Map<string, LmEvaluator>();
const bertEvaluators = new Map<string, BertEvaluator>();
/** BERT's framing ids from the dataset's tokenizer (fetched once per dataset content). */
const bertTokens = datasetTokenizerMemo(bertTokensOf);

function labelMap(cfg: BertModelConfig, dataset: DatasetRef): number[] {
  if (!dataset.labelNames) throw failure('InvalidInput', `dataset ${dataset.prefix}: prepared without document labels; a classification run prepares its dataset with dataset.labels`);
  try {
    return labelMapOf(cfg, dataset.labelNames);
  } catch (err) {
    throw failure('InvalidConfig', `spec.model.config.head: ${(err as Error).message}`);
  }
}

/** The family- and task-specific parts of a training run. */
export function familyTraining(spec: TrainingSpec): FamilyTraining {
  const m = spec.model;
  // stepsPerRun is absent from specs of runs started before it existed: 1. Keys name it only above
  // 1, so a worker's cached one-step sessions keep the keys they always had.
  const stepsPerRun = spec.stepsPerRun ?? 1;
  const geometry = { optim: spec.optimizer, batchSize: spec.batchSize, contextLength: spec.contextLength, stepsPerRun };
  const kKey = stepsPerRun > 1 ? [stepsPerRun] : [];
  const stepKey = JSON.stringify([m.family, m.task, m.config, spec.optimizer, spec.batchSize, spec.contextLength, spec.threads, ...kKey]);
  if (m.family === 'gpt' && m.task === 'classification') return domainTraining(spec, m.config, m.variant, stepsPerRun);
  if (m.family === 'gpt' && m.variant?.kind === 'image-prefix') return imagePrefixTraining(spec, m.config, m.variant, stepsPerRun);
  if (m.family === 'gpt') {
    const cfg = m.config;
    // A memory-augmented GPT (model.variant) records its variant beside the GPT config; readers that
    // export or fine-tune a plain GPT refuse such a checkpoint (artifacts/checkpoints.ts refuseVariant).
    const memory = m.variant?.kind === 'memory' ? m.variant : undefined;
    const vKey = memory ? [memory] : [];
    return {
      state: { family: 'gpt', modelConfig: { ...explicitGptConfig(cfg), ...(memory ? { variant: memory } : {}) } },
      params: memory ? memoryGptParams(memoryConfigOf(cfg, memory)) : gptParams(cfg),
      // The key GPT steps always had, so a worker's cache behaves as before.
      stepKey: JSON.stringify([cfg, spec.optimizer, spec.batchSize, spec.contextLength, spec.threads, spec.activationCheckpointing ?? 'off', ...kKey, ...vKey]),
      // activationCheckpointing is absent from specs of runs started before it existed: off.
      compile: (session, memoryLimitBytes, halfEmulation = false) => {
        const precision = mixedPrecisionFor(spec.precision, spec.lossScale, session.ep ?? 'cpu', halfEmulation);
        return compileLmTrainStep({ model: cfg, ...geometry, activationCheckpointing: spec.activationCheckpointing, memory, precision }, session, { memoryLimitBytes });
      },
      evaluate: async (store, shards, dataset, weights, session, onBatch) => {
        const key = JSON.stringify([cfg, ...vKey]);
        if (!lmEvaluators.has(key)) lmEvaluators.set(key, new LmEvaluator(cfg, session, memory));
        const ids = await shards.split(store, dataset, 'val');
        const r = await failingAs('evaluate', () => lmEvaluators.get(key)!.evaluate(weights, ids, { batchSize: spec.batchSize, contextLength: spec.contextLength, maxBatches: spec.evalBatches, onBatch }));
        return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
      },
    };
  }
  if (m.family === 't5') return t5Training(spec, m.config, m.task);
  const cfg = m.config;
  const task = m.task;
  const evaluator = (session: SessionConfig) => {
    const key = JSON.stringify([cfg, spec.threads]);
    if (!bertEvaluators.has(key)) bertEvaluators.set(key, new BertEvaluator(cfg, session));
    return bertEvaluators.get(key)!;
  };
  return {
    state: { family: 'bert', modelConfig: { ...cfg } },
    params: bertTrainParams(cfg),
    stepKey,
    compile: (session, memoryLimitBytes) => compileBertTrainStep({ model: cfg, task, ...geometry }, session, { memoryLimitBytes }),
    batch: async (store, shards, dataset, shard, ids) => {
      const tok = await bertTokens(store, dataset);
      const req = { seed: spec.seed, shard, batchSize: spec.batchSize, contextLength: spec.contextLength };
      if (task === 'mlm') return (step) => mlmBatch(ids, { ...req, step }, tok);
      const { docs } = await shards.labelled(store, dataset, dataset.train[shard]);
      const examples = await failingAs(`dataset ${dataset.prefix}`, async () => labelledDocs(ids, docs, labelMap(cfg, dataset), `${dataset.prefix}/${dataset.train[shard].file}`));
      return (step) => classificationBatch(ids, examples, { ...req, step }, tok);
    },
    evaluate: async (store, shards, dataset, weights, session) => {
      const tok = await bertTokens(store, dataset);
      const ev = evaluator(session);
      if (task === 'mlm') {
        const ids = await shards.split(store, dataset, 'val');
        const r = await failingAs('evaluate', () => ev.mlm(weights, ids, { batchSize: spec.batchSize, contextLength: spec.contextLength, maxBatches: spec.evalBatches, seed: spec.seed }, tok));
        return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
      }
      const map = labelMap(cfg, dataset);
      const parts: { ids: Uint16Array | Uint32Array; docs: LabelledDoc[] }[] = [];
      for (const s of dataset.val.filter((v) => v.tokens > 0)) {
        const { ids, docs } = await shards.labelled(store, dataset, s);
        parts.push({ ids, docs: labelledDocs(ids, docs, map, `${dataset.prefix}/${s.file}`) });
      }
      // One pass over every val document.
      const { ids, docs } = concatLabelled(parts);
      const r = await failingAs('evaluate', () => ev.classify(weights, ids, docs, { batchSize: spec.batchSize, contextLength: spec.contextLength }, tok));
      return { loss: r.loss, perplexity: Math.exp(r.loss), tokens: r.count * spec.contextLength, accuracy: r.accuracy, macroF1: r.macroF1, examples: r.count, majorityBaseline: r.majorityBaseline, confusion: r.confusion };
    },
  };
}
