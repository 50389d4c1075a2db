// LoRA on a BERT classifier (a `classification` run's pipeline `lora` stage), PEFT SEQ_CLS style:
// adapters on the target linear layers, the classifier head trained in full, the rest frozen.
//
//   trainClassifierLora  gpu  one chunk of steps from the previous chunk (or fresh adapters and the
//                             base's head), resumable snapshots through runHeartbeatingShard →
//                             finetunes/<id>/chunks/cNNNNNN/final (adapters + head + optimizer state)
//   mergeClassifierLora  cpu  base + s·BA, the trained head → finetunes/<id>/merged (a BERT
//                             checkpoint that exports as BertForSequenceClassification), the PEFT
//                             files → finetunes/<id>/adapter, and the merged model's accuracy and
//                             macro F1 over every validation document

import { Context } from '@temporalio/activity';
import type { BertModelConfig } from '../engine/hf/bert';
import { initAdapters, mergeWeights, trainableReport, type LoraConfig } from '../engine/lora';
import { countParams } from '../engine/models/blocks';
import type { OptimConfig } from '../engine/optim';
import { bertLoraPlan, bertSeqClsAdapterFiles, bertTokensOf, classificationBatch, compileBertLoraStep, isBertLoraTrainable, labelledDocs, labelMapOf, type BertTrainSetup } from '../engine/train/bert';
import { zeroState, type CompiledTrainStep } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import type { TrainingSpec } from '../spec/training';
import { failure } from '../spec/errors';
import { checkpointWeightsAnyFamily, commitCheckpoint, fromTensors, readCheckpoint, toTensors, type CheckpointRef } from '../artifacts/checkpoints';
import { readTokenizer, ShardCache, type DatasetRef } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { ftKeys } from '../artifacts/keys';
import { loadStoredTokenizer } from '../artifacts/tokenizers';
import { cachedPromise } from './cache';
import { familyTraining } from './model-family';
import { whileBeating } from './heartbeat';
import { adapterChunk, fromPreviousChunk, runHeartbeatingShard, type HeartbeatDetails } from './shard-loop';

/** The LoRA stage's settings, as the pipeline spec gives them (its `lora` section). */
export interface ClassifierLoraSettings {
  lora: LoraConfig;
  train: { steps: number; stepsPerActivity: number; batchSize: number; contextLength: number; optimizer: OptimConfig; checkpoint: { everySteps: number; everySeconds: number }; seed: number; threads: number };
}

export interface TrainClassifierLoraInput {
  /** The fine-tune's id (`<pipeline>-lora`): names its keys. */
  runId: string;
  spec: TrainingSpec;
  settings: ClassifierLoraSettings;
  base: CheckpointRef;
  dataset: DatasetRef;
  chunk: number;
  /** The previous chunk's result (null for the first). */
  previous: CheckpointRef | null;
}

export interface TrainClassifierLoraResult {
  checkpoint: CheckpointRef;
  chunk: number;
  steps: number;
  /** Train loss of the chunk's first step this attempt ran (absent in results recorded before it was). */
  firstLoss?: number;
  meanLoss: number;
  lastLoss: number;
  resumedFrom: number | null;
  trainMs: number;
}

export interface MergeClassifierLoraInput {
  runId: string;
  spec: TrainingSpec;
  settings: ClassifierLoraSettings;
  base: CheckpointRef;
  dataset: DatasetRef;
  final: CheckpointRef;
}

export interface ClassifierLoraOutcome {
  merged: CheckpointRef;
  adapterPrefix: string;
  /** Adapters + head, and every parameter of the model with adapters. */
  trainable: number;
  total: number;
  accuracyAfter: number;
  macroF1After: number;
  lossAfter: number;
  examples: number;
  targetModules: string[];
}

const setupOf = (spec: TrainingSpec, s: ClassifierLoraSettings): BertTrainSetup => {
  if (spec.model.family !== 'bert' || spec.model.task !== 'classification') throw failure('InvalidConfig', `spec.lora: LoRA tunes BERT classifiers here; the run trains a ${spec.model.family} ${spec.model.task} model`);
  return { model: spec.model.config, task: 'classification', optim: s.train.optimizer, batchSize: s.train.batchSize, contextLength: s.train.contextLength };
};

export function createClassifierLoraActivities(deps: { store: ArtifactStore; ep: 'cpu' | 'cuda'; deviceId: number; memoryLimitBytes?: number }) {
  const steps = new Map<string, Promise<CompiledTrainStep>>();
  const shards = new ShardCache();
  const compiled = (input: TrainClassifierLoraInput): Promise<CompiledTrainStep> => {
    const setup = setupOf(input.spec, input.settings);
    return cachedPromise(steps, JSON.stringify([input.base.prefix, input.base.files, setup, input.settings.lora, input.settings.train.threads]), 4, async () => {
      const base = await checkpointWeightsAnyFamily(deps.store, input.base.prefix);
      const plan = bertLoraPlan(setup, input.settings.lora);
      return compileBertLoraStep(setup, plan, base.weights, { ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: input.settings.train.threads }, { memoryLimitBytes: deps.memoryLimitBytes });
    });
  };
  return {
    trainClassifierLora: (input: TrainClassifierLoraInput) => trainClassifierLora(deps.store, shards, compiled, input),
    mergeClassifierLora: (input: MergeClassifierLoraInput) => mergeClassifierLora(deps.store, shards, input),
  };
}

async function trainClassifierLora(store: ArtifactStore, shards: ShardCache, compiled: (i: TrainClassifierLoraInput) => Promise<CompiledTrainStep>, input: TrainClassifierLoraInput): Promise<TrainClassifierLoraResult> {
  const { runId, chunk, settings, spec } = input;
  const who = `trainClassifierLora chunk ${chunk}`;
  const at = adapterChunk(runId, chunk, settings.train);
  const done = await store.readManifest(at.finalPrefix);
  if (done?.meta.result) return done.meta.result as TrainClassifierLoraResult;
  const { startStep, endStep } = at;
  Context.current().heartbeat({ step: startStep, checkpointKey: null } satisfies HeartbeatDetails);
  const c = await failingAs(who, () => compiled(input));
  const setup = setupOf(spec, settings);
  const cfg = spec.model.config as BertModelConfig;
  const dataset = input.dataset;
  if (!dataset.labelNames) throw failure('InvalidInput', `${who}: dataset ${dataset.prefix} has no document labels`);
  return runHeartbeatingShard<TrainClassifierLoraResult>(store, {
    ...at,
    who,
    compiled: c,
    fresh: async () => {
      if (input.previous) return fromPreviousChunk(store, input.previous, startStep);
      const base = await checkpointWeightsAnyFamily(store, input.base.prefix);
      const plan = bertLoraPlan(setup, settings.lora);
      const params: Record<string, Float32Array> = Object.fromEntries(initAdapters(plan));
      for (const [n, w] of base.weights) if (isBertLoraTrainable(n)) params[n] = Float32Array.from(w);
      return { step: startStep, params, state: zeroState(c.step) };
    },
    ids: () => shards.get(store, dataset, dataset.train[0].file),
    batch: async (ids) => {
      const tok = bertTokensOf(await loadStoredTokenizer(store, await readTokenizer(store, dataset)));
      const { docs } = await shards.labelled(store, dataset, dataset.train[0]);
      const examples = labelledDocs(ids, docs, labelMapOf(cfg, dataset.labelNames!), `${dataset.prefix}/${dataset.train[0].file}`);
      return (step) => classificationBatch(ids, examples, { seed: settings.train.seed, shard: 0, step, batchSize: settings.train.batchSize, contextLength: settings.train.contextLength }, tok);
    },
    batches: { seed: settings.train.seed, shard: 0, batchSize: settings.train.batchSize, contextLength: settings.train.contextLength },
    policy: settings.train.checkpoint,
    ckptState: (step) => ({ family: 'bert', modelConfig: { ...cfg }, runConfig: { lora: settings.lora, runId, chunk, adapterChunk: true }, step, round: 0, bestValLoss: null, dataCursor: { shard: 0, step, seed: settings.train.seed }, rng: [] }),
    nonFinite: { what: 'adapters', initial: input.previous?.prefix ?? input.base.prefix, details: { chunk } },
    result: (run) => {
      const losses = run.history.map((m) => m.loss);
      return { chunk, steps: endStep - startStep, firstLoss: losses.length ? losses[0] : NaN, meanLoss: losses.length ? losses.reduce((a, b) => a + b, 0) / losses.length : NaN, lastLoss: losses.length ? losses[losses.length - 1] : NaN, resumedFrom: run.resumedFrom, trainMs: run.trainMs };
    },
  });
}

// Reads, a merge, an evaluation over every validation document and commits: no units to beat
// between, so the whole attempt heartbeats every second (its proxy has a 60 s heartbeat timeout).
function mergeClassifierLora(store: ArtifactStore, shards: ShardCache, input: MergeClassifierLoraInput): Promise<ClassifierLoraOutcome> {
  return whileBeating(`mergeClassifierLora ${input.runId}`, () => mergeAndEvaluate(store, shards, input));
}

async function mergeAndEvaluate(store: ArtifactStore, shards: ShardCache, input: MergeClassifierLoraInput): Promise<ClassifierLoraOutcome> {
  const mergedPrefix = ftKeys.merged(input.runId);
  const done = await store.readManifest(mergedPrefix);
  if (done?.meta.outcome) return done.meta.outcome as ClassifierLoraOutcome;
  const setup = setupOf(input.spec, input.settings);
  const base = await checkpointWeightsAnyFamily(store, input.base.prefix);
  const trained = fromTensors((await readCheckpoint(store, input.final.prefix)).weights, input.final.prefix);
  const plan = await failingAs('mergeClassifierLora', async () => bertLoraPlan(setup, input.settings.lora));
  const merged = mergeWeights(base.weights, plan, trained);
  for (const n of ['classifier.weight', 'classifier.bias']) merged.set(n, trained.get(n)!);
  const importedFrom = (await readCheckpoint(store, input.base.prefix)).state.runConfig.from as string | undefined;
  const adapterPrefix = ftKeys.adapter(input.runId);
  await store.commit(adapterPrefix, Object.fromEntries(bertSeqClsAdapterFiles(plan, trained, importedFrom ?? null)), { base: input.base.prefix });
  const evaluation = await familyTraining(input.spec).evaluate(store, shards, input.dataset, merged, { intraOpThreads: input.settings.train.threads });
  const shapes = new Map(familyTraining(input.spec).params.map((s) => [s.name, s.shape]));
  const report = trainableReport(plan, countParams(familyTraining(input.spec).params));
  const trainable = report.trainable + (trained.get('classifier.weight')?.length ?? 0) + (trained.get('classifier.bias')?.length ?? 0);
  const outcome: ClassifierLoraOutcome = {
    merged: { prefix: mergedPrefix, files: {} },
    adapterPrefix,
    trainable,
    total: report.total,
    accuracyAfter: evaluation.accuracy!,
    macroF1After: evaluation.macroF1!,
    lossAfter: evaluation.loss,
    examples: evaluation.examples!,
    targetModules: [...new Set(plan.modules.map((m) => m.module.split('.').pop()!))].sort(),
  };
  outcome.merged = await commitCheckpoint(
    store,
    mergedPrefix,
    {
      weights: toTensors(merged, shapes),
      optimizer: new Map(),
      state: { family: 'bert', modelConfig: { ...(input.spec.model.config as BertModelConfig) }, runConfig: { lora: input.settings.lora, base: input.base.prefix, ...(importedFrom ? { from: importedFrom } : {}) }, step: input.settings.train.steps, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
    },
    (ref) => ({ outcome: { ...outcome, merged: ref } }),
  );
  return outcome;
}

export type ClassifierLoraActivities = ReturnType<typeof createClassifierLoraActivities>;
