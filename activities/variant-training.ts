// The GPT variant branches of familyTraining (activities/model-family.ts) that read documents, not
// LM windows. trainShard, createModel, aggregateRound and evaluate drive them as GPT's LM step.
//
//   domain-head   a GPT with a classification head (`model.variant: { kind: domain-head, n_classes }`,
//                 task classification) on a labelled dataset (spam-assassin, brown genres, jsonl with
//                 labelField) prepared with its document labels, as a BERT classifier is
//     batch       documents drawn by (seed, shard, step), padded on the right (engine/train/domain.ts)
//     evaluate    every val document once: class cross-entropy, accuracy, macro F1, confusion
//   image-prefix  a GPT reading image features (`model.variant: { kind: image-prefix, ... }`, task
//                 lm) on an image-captions dataset (features in each shard's `.img` file)
//     batch       captions with their images drawn by (seed, shard, step) (engine/train/image-prefix.ts)
//     evaluate    every val caption once: caption-token loss and perplexity

import { concatLabelled, type LabelledDoc } from '../engine/train/bert';
import { labelledDocs } from '../engine/train/bert';
import { compileDomainTrainStep, domainBatch, DomainEvaluator, domainLabelMap, domainTrainParams } from '../engine/train/domain';
import type { DomainHeadVariant } from '../engine/models/classification-head';
import { explicitGptConfig, type GptConfig } from '../engine/models/gpt';
import { imagePrefixConfigOf, multimodalGptParams, type ImagePrefixVariant } from '../engine/models/image-prefix';
import { captionDocs, compileImagePrefixTrainStep, imageCaptionBatch, ImagePrefixEvaluator } from '../engine/train/image-prefix';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import type { TrainingSpec } from '../spec/training';
import { type DatasetRef, type ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { datasetTokenizerMemo } from '../artifacts/tokenizers';
import type { FamilyTraining } from './model-family';

const evaluators = new Map<string, DomainEvaluator>();
const imageEvaluators = new Map<string, ImagePrefixEvaluator>();
/** The dataset tokenizer's end-of-text id, the padding of a row (fetched once per dataset content). */
const eotOf = datasetTokenizerMemo((t) => t.eot);

/** Dataset label index → class id, refused naming the spec field when n_classes does not match the labels. */
function labelMap(head: DomainHeadVariant, dataset: DatasetRef): number[] {
  if (!dataset.labelNames) throw failure('InvalidInput', `dataset ${dataset.prefix}: prepared without document labels; a classification run prepares its dataset with dataset.labels`);
  try {
    return domainLabelMap(head.n_classes, dataset.labelNames);
  } catch (err) {
    throw failure('InvalidConfig', `${(err as Error).message} in ${dataset.prefix}`);
  }
}

/** The documents of one labelled shard with the model's class ids. */
async function shardDocs(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, shard: { file: string; docs?: string }, map: number[]) {
  const { ids, docs } = await shards.labelled(store, dataset, shard);
  const where = `${dataset.prefix}/${shard.file}`;
  return { ids, docs: await failingAs(`dataset ${dataset.prefix}`, () => labelledDocs(ids, docs, map, where)) };
}

export function domainTraining(spec: TrainingSpec, cfg: GptConfig, head: DomainHeadVariant, stepsPerRun: number): FamilyTraining {
  const geometry = { optim: spec.optimizer, batchSize: spec.batchSize, contextLength: spec.contextLength, stepsPerRun };
  return {
    // The variant is recorded beside the GPT config: plain-GPT readers (export, LoRA, model.from) refuse it.
    state: { family: 'gpt', modelConfig: { ...explicitGptConfig(cfg), variant: head } },
    params: domainTrainParams(cfg, head),
    stepKey: JSON.stringify(['gpt', 'classification', cfg, head, spec.optimizer, spec.batchSize, spec.contextLength, spec.threads, stepsPerRun]),
    compile: (session, memoryLimitBytes) => compileDomainTrainStep({ model: cfg, head, ...geometry }, session, { memoryLimitBytes }),
    batch: async (store, shards, dataset, shard, ids) => {
      const eot = await eotOf(store, dataset);
      const { docs } = await shardDocs(store, shards, dataset, dataset.train[shard], labelMap(head, dataset));
      const req = { seed: spec.seed, shard, batchSize: spec.batchSize, contextLength: spec.contextLength };
      return (step) => domainBatch(ids, docs, { ...req, step }, eot);
    },
    evaluate: async (store, shards, dataset, weights, session, onBatch) => {
      const eot = await eotOf(store, dataset);
      const map = labelMap(head, dataset);
      // One pass over every val document.
      const parts: { ids: Uint16Array | Uint32Array; docs: LabelledDoc[] }[] = [];
      for (const s of dataset.val.filter((v) => v.tokens > 0)) parts.push(await shardDocs(store, shards, dataset, s, map));
      const { ids, docs } = concatLabelled(parts);
      const key = JSON.stringify([cfg, head, spec.contextLength, spec.threads]);
      if (!evaluators.has(key)) evaluators.set(key, new DomainEvaluator(cfg, head, spec.contextLength, session));
      const r = await failingAs('evaluate', () => evaluators.get(key)!.classify(weights, ids, docs, spec.batchSize, eot, onBatch));
      return { loss: r.loss, perplexity: Math.exp(r.loss), tokens: r.count * spec.contextLength, accuracy: r.accuracy, macroF1: r.macroF1, examples: r.count, majorityBaseline: r.majorityBaseline, confusion: r.confusion };
    },
  };
}

/** The captions of one image-captions shard with its feature vectors. */
async function shardCaptions(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, shard: { file: string; docs?: string; images?: string }, image: ImagePrefixVariant) {
  const { ids, docs } = await shards.labelled(store, dataset, shard);
  const features = await shards.images(store, dataset, shard);
  const size = image.n_image_tokens * image.image_dim;
  const where = `${dataset.prefix}/${shard.file}`;
  if (features.length % size !== 0) throw failure('CorruptCheckpoint', `dataset ${where}: its image file holds ${features.length} floats, not a whole number of images of n_image_tokens ${image.n_image_tokens} × image_dim ${image.image_dim}`);
  return { ids, features, docs: await failingAs(`dataset ${dataset.prefix}`, () => captionDocs(ids, docs, features.length / size, where)) };
}

export function imagePrefixTraining(spec: TrainingSpec, cfg: GptConfig, image: ImagePrefixVariant, stepsPerRun: number): FamilyTraining {
  const geometry = { optim: spec.optimizer, batchSize: spec.batchSize, contextLength: spec.contextLength, stepsPerRun };
  return {
    // The variant is recorded beside the GPT config: plain-GPT readers (export, LoRA, model.from) refuse it.
    state: { family: 'gpt', modelConfig: { ...explicitGptConfig(cfg), variant: image } },
    params: multimodalGptParams(imagePrefixConfigOf(cfg, image)),
    stepKey: JSON.stringify(['gpt', 'image-prefix', cfg, image, spec.optimizer, spec.batchSize, spec.contextLength, spec.threads, stepsPerRun]),
    compile: (session, memoryLimitBytes) => compileImagePrefixTrainStep({ model: cfg, image, ...geometry }, session, { memoryLimitBytes }),
    batch: async (store, shards, dataset, shard, ids) => {
      const eot = await eotOf(store, dataset);
      const { features, docs } = await shardCaptions(store, shards, dataset, dataset.train[shard], image);
      const req = { seed: spec.seed, shard, batchSize: spec.batchSize, contextLength: spec.contextLength };
      return (step) => imageCaptionBatch(ids, features, docs, { ...req, step }, eot, image);
    },
    evaluate: async (store, shards, dataset, weights, session, onBatch) => {
      const eot = await eotOf(store, dataset);
      const parts: Awaited<ReturnType<typeof shardCaptions>>[] = [];
      for (const s of dataset.val.filter((v) => v.tokens > 0)) parts.push(await shardCaptions(store, shards, dataset, s, image));
      const key = JSON.stringify([cfg, image, spec.contextLength, spec.threads]);
      if (!imageEvaluators.has(key)) imageEvaluators.set(key, new ImagePrefixEvaluator(cfg, image, spec.contextLength, session));
      const r = await failingAs('evaluate', () => imageEvaluators.get(key)!.evaluate(weights, parts, spec.batchSize, eot, onBatch));
      return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
    },
  };
}
