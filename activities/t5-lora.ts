// LoRA on a T5 seq2seq model (a `seq2seq` run's pipeline `lora` stage), PEFT SEQ_2_SEQ_LM style:
// adapters on the target Linear layers under Hugging Face's T5 names (q, k, v, o, wi / wi_0, wi_1,
// wo; PEFT's default q and v), everything else frozen, trained on the run's source/target pairs.
//
//   trainT5Lora  gpu  one chunk of steps from the previous chunk (or fresh adapters), resumable
//                     snapshots through runHeartbeatingShard → finetunes/<id>/chunks/cNNNNNN/final
//                     (adapters + optimizer state)
//   mergeT5Lora  cpu  base + s·BA → finetunes/<id>/merged (a T5 checkpoint that exports as
//                     T5ForConditionalGeneration), the PEFT files (engine/hf/peft.ts
//                     hfT5AdapterFiles) → finetunes/<id>/adapter, and the merged model's target
//                     loss over every validation example and exact match of its greedy answers

import { Context } from '@temporalio/activity';
import { hfT5AdapterFiles } from '../engine/hf/peft';
import { initAdapters, mergeWeights, saveAdapter, trainableReport, type LoraConfig, type LoraPlan } from '../engine/lora';
import { countParams } from '../engine/models/blocks';
import { t5Params, type T5Config } from '../engine/models/t5';
import type { OptimConfig } from '../engine/optim';
import { sampleSeq2seqBatch } from '../engine/data/seq2seq';
import { compileT5TrainStep, planT5Lora, type Seq2seqTrainSetup } from '../engine/train/seq2seq';
import { zeroState, type CompiledTrainStep } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import type { TrainingSpec } from '../spec/training';
import { failure } from '../spec/errors';
import { checkpointWeightsAnyFamily, commitCheckpoint, fromTensors, readCheckpoint, toTensors, type CheckpointRef } from '../artifacts/checkpoints';
import { ShardCache, type DatasetRef } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { ftKeys } from '../artifacts/keys';
import { cachedPromise } from './cache';
import { familyTraining } from './model-family';
import { whileBeating } from './heartbeat';
import { fromPreviousChunk, runHeartbeatingShard, type HeartbeatDetails } from './shard-loop';
import { fittingPairs, t5Geometry } from './t5-training';

/** The LoRA stage's settings, as the pipeline spec gives them (its `lora` section). */
export interface T5LoraSettings {
  lora: LoraConfig;
  train: { steps: number; stepsPerActivity: number; batchSize: number; contextLength: number; optimizer: OptimConfig; checkpoint: { everySteps: number; everySeconds: number }; seed: number; threads: number; stepsPerRun?: number };
}

export interface TrainT5LoraInput {
  /** The fine-tune's id (`<pipeline>-lora`): names its keys. */
  runId: string;
  spec: TrainingSpec;
  settings: T5LoraSettings;
  base: CheckpointRef;
  dataset: DatasetRef;
  chunk: number;
  /** The previous chunk's result (null for the first). */
  previous: CheckpointRef | null;
}

export interface TrainT5LoraResult {
  checkpoint: CheckpointRef;
  chunk: number;
  steps: number;
  /** Train loss of the chunk's first step this attempt ran, its mean and its last. */
  firstLoss: number;
  meanLoss: number;
  lastLoss: number;
  resumedFrom: number | null;
  trainMs: number;
}

export interface MergeT5LoraInput {
  runId: string;
  spec: TrainingSpec;
  settings: T5LoraSettings;
  base: CheckpointRef;
  dataset: DatasetRef;
  final: CheckpointRef;
}

export interface T5LoraOutcome {
  merged: CheckpointRef;
  adapterPrefix: string;
  /** Adapter parameters, and every parameter of the model with adapters. */
  trainable: number;
  total: number;
  /** The merged model on the validation split: target loss and perplexity over every example, exact match over `examples`. */
  lossAfter: number;
  perplexityAfter: number;
  exactMatchAfter: number;
  examples: number;
  /** HF leaf names of the adapted Linear layers (q, v, ...). */
  targetModules: string[];
}

/** The run's spec with the LoRA stage's batch geometry: the encoder length is lora.train.contextLength, the decoder's the run's targetLength. */
function loraSpec(spec: TrainingSpec, s: T5LoraSettings): TrainingSpec {
  if (spec.model.family !== 't5' || spec.model.task !== 'seq2seq') throw failure('InvalidConfig', `spec.lora: LoRA tunes T5 seq2seq models here; the run trains a ${spec.model.family} ${spec.model.task} model`);
  return { ...spec, batchSize: s.train.batchSize, contextLength: s.train.contextLength, targetLength: spec.targetLength ?? spec.contextLength };
}

function setupOf(spec: TrainingSpec, s: T5LoraSettings, plan: LoraPlan): Seq2seqTrainSetup {
  const { srcLen, tgtLen } = t5Geometry(spec);
  return { model: spec.model.config as T5Config, optim: s.train.optimizer, batchSize: s.train.batchSize, srcLen, tgtLen, lora: plan, stepsPerRun: s.train.stepsPerRun ?? 1 };
}

const planOf = (spec: TrainingSpec, s: T5LoraSettings): LoraPlan => planT5Lora(spec.model.config as T5Config, s.lora);

export function createT5LoraActivities(deps: { store: ArtifactStore; ep: 'cpu' | 'cuda'; deviceId: number }) {
  const steps = new Map<string, Promise<CompiledTrainStep>>();
  const shards = new ShardCache();
  const compiled = (input: TrainT5LoraInput, spec: TrainingSpec): Promise<CompiledTrainStep> =>
    cachedPromise(steps, JSON.stringify([input.base.prefix, input.base.files, spec.model.config, input.settings, 't5-lora']), 4, async () => {
      const base = await checkpointWeightsAnyFamily(deps.store, input.base.prefix);
      const plan = planOf(spec, input.settings);
      return compileT5TrainStep(setupOf(spec, input.settings, plan), { ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: input.settings.train.threads }, base.weights);
    });
  return {
    trainT5Lora: (input: TrainT5LoraInput) => trainT5Lora(deps.store, shards, compiled, input),
    // Beats every second for the whole attempt (the CPU stage's 60 s heartbeat timeout).
    mergeT5Lora: (input: MergeT5LoraInput) => whileBeating(`mergeT5Lora ${input.runId}`, () => mergeT5Lora(deps.store, shards, input)),
  };
}

async function trainT5Lora(store: ArtifactStore, shards: ShardCache, compiled: (i: TrainT5LoraInput, spec: TrainingSpec) => Promise<CompiledTrainStep>, input: TrainT5LoraInput): Promise<TrainT5LoraResult> {
  const { runId, chunk, settings } = input;
  const who = `trainT5Lora chunk ${chunk}`;
  const finalPrefix = ftKeys.chunkFinal(runId, chunk);
  const done = await store.readManifest(finalPrefix);
  if (done?.meta.result) return done.meta.result as TrainT5LoraResult;
  const per = settings.train.stepsPerActivity;
  const [startStep, endStep] = [chunk * per, Math.min((chunk + 1) * per, settings.train.steps)];
  Context.current().heartbeat({ step: startStep, checkpointKey: null } satisfies HeartbeatDetails);
  const spec = loraSpec(input.spec, settings);
  const c = await failingAs(who, () => compiled(input, spec));
  const cfg = spec.model.config as T5Config;
  const { srcLen, tgtLen } = t5Geometry(spec);
  const dataset = input.dataset;
  if (!dataset.pairs) throw failure('InvalidInput', `${who}: dataset ${dataset.prefix} holds no source/target pairs`);
  return runHeartbeatingShard<TrainT5LoraResult>(store, {
    who,
    span: 'chunk',
    startStep,
    endStep,
    snapshots: ftKeys.chunk(runId, chunk),
    snapshotKey: (step) => ftKeys.chunkProgress(runId, chunk, step),
    finalPrefix,
    compiled: c,
    fresh: async () => (input.previous ? fromPreviousChunk(store, input.previous, startStep) : { step: startStep, params: Object.fromEntries(initAdapters(planOf(spec, settings))), state: zeroState(c.step) }),
    ids: () => shards.get(store, dataset, dataset.train[0].file),
    batch: async () => {
      const pairs = await fittingPairs(store, shards, dataset, dataset.train[0], spec);
      if (pairs.length === 0) throw failure('InvalidInput', `${who}: the train split of ${dataset.prefix} holds no examples`);
      return (step) => sampleSeq2seqBatch(pairs, { seed: settings.train.seed, shard: 0, step, batchSize: settings.train.batchSize }, cfg, srcLen, tgtLen);
    },
    batches: { seed: settings.train.seed, shard: 0, batchSize: settings.train.batchSize, contextLength: settings.train.contextLength },
    policy: settings.train.checkpoint,
    ckptState: (step) => ({ family: 't5', modelConfig: { ...cfg }, runConfig: { lora: settings.lora, runId, chunk, adapterChunk: true }, step, round: 0, bestValLoss: null, dataCursor: { shard: 0, step, seed: settings.train.seed }, rng: [] }),
    nonFinite: { what: 'adapters', initial: input.previous?.prefix ?? input.base.prefix, details: { chunk } },
    result: (run) => {
      const losses = run.history.map((m) => m.loss);
      return {
        chunk,
        steps: endStep - startStep,
        firstLoss: losses.length ? losses[0] : NaN,
        meanLoss: losses.length ? losses.reduce((a, b) => a + b, 0) / losses.length : NaN,
        lastLoss: losses.length ? losses[losses.length - 1] : NaN,
        resumedFrom: run.resumedFrom,
        trainMs: run.trainMs,
      };
    },
  });
}

async function mergeT5Lora(store: ArtifactStore, shards: ShardCache, input: MergeT5LoraInput): Promise<T5LoraOutcome> {
  const mergedPrefix = ftKeys.merged(input.runId);
  const done = await store.readManifest(mergedPrefix);
  if (done?.meta.outcome) return done.meta.outcome as T5LoraOutcome;
  const spec = loraSpec(input.spec, input.settings);
  const cfg = spec.model.config as T5Config;
  const base = await checkpointWeightsAnyFamily(store, input.base.prefix);
  const trained = fromTensors((await readCheckpoint(store, input.final.prefix)).weights, input.final.prefix);
  const plan = await failingAs('mergeT5Lora', async () => planOf(spec, input.settings));
  const merged = mergeWeights(base.weights, plan, trained);
  // The adapter names the model it was imported from (an HF id or folder), when there is one.
  const importedFrom = (await readCheckpoint(store, input.base.prefix)).state.runConfig.from as string | undefined;
  const adapterPrefix = ftKeys.adapter(input.runId);
  const files = await failingAs('mergeT5Lora: PEFT files', async () => hfT5AdapterFiles(cfg, saveAdapter(plan, trained), importedFrom ?? null));
  await store.commit(adapterPrefix, Object.fromEntries(files), { base: input.base.prefix });
  // Evaluated as the run's own evaluations are (the run's batch geometry and evalBatches), so the figures compare.
  const evaluation = await familyTraining(input.spec).evaluate(store, shards, input.dataset, merged, { intraOpThreads: input.settings.train.threads });
  const params = t5Params(cfg);
  const report = trainableReport(plan, countParams(params));
  const outcome: T5LoraOutcome = {
    merged: { prefix: mergedPrefix, files: {} },
    adapterPrefix,
    trainable: report.trainable,
    total: report.total,
    lossAfter: evaluation.loss,
    perplexityAfter: evaluation.perplexity,
    exactMatchAfter: evaluation.exactMatch!,
    examples: evaluation.examples!,
    targetModules: [...new Set(plan.modules.map((m) => m.module.split('.').pop()!))].sort(),
  };
  const shapes = new Map(params.map((s) => [s.name, s.shape]));
  outcome.merged = await commitCheckpoint(
    store,
    mergedPrefix,
    {
      weights: toTensors(merged, shapes),
      optimizer: new Map(),
      state: { family: 't5', modelConfig: { ...cfg }, runConfig: { lora: input.settings.lora, base: input.base.prefix, ...(importedFrom ? { from: importedFrom } : {}) }, step: input.settings.train.steps, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
    },
    (ref) => ({ outcome: { ...outcome, merged: ref } }),
  );
  return outcome;
}

export type T5LoraActivities = ReturnType<typeof createT5LoraActivities>;
