// Fine-tune activities (thin: resolve refs → one engine call → store → return refs and metrics).
//
//   prepareFineTuneDataset  cpu  DatasetSpec → committed dataset (training's prepareDataset, reused)
//   resolveFineTuneDataset  cpu  a dataset prefix, or the newest version under a prefix
//   lastFineTune            cpu  the newest success recorded for a lineage
//   evaluateFineTune        cpu  val loss of base (+ adapter, unmerged and merged)
//   trainAdapter            gpu  one chunk of adapter steps; resumable snapshots, heartbeats
//   exportFineTune          cpu  PEFT adapter files + merged model
//   recordFineTune          cpu  the lineage's record of a success
//
// Outputs are written under keys derived from (run id, chunk, step) with the manifest last, so a
// retry returns the committed result or redoes the work into the same keys.

import { Context } from '@temporalio/activity';
import { initAdapters, saveAdapter, trainableReport } from '../engine/lora';
import type { SessionConfig } from '../engine/runtime';
import { zeroState } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { FineTuneSpecSchema, type DatasetSource, type FineTuneSpec } from '../spec/lora';
import { formatIssues, TrainingSpecSchema } from '../spec/training';
import { cachedPromise } from './cache';
import { type CheckpointRef, commitCheckpoint, fromTensors, readCheckpoint, refOf, toTensors } from '../artifacts/checkpoints';
import { datasetAt, type DatasetRef, newestDataset, ShardCache } from '../artifacts/datasets';
import { ftKeys } from '../artifacts/keys';
import { lastSuccessful, type LineageRecord, recordSuccess } from '../artifacts/lineages';
import { type BaseRef, loadBase, readAdapter } from '../artifacts/models';
import { GptBase, OnnxBase, type CompiledLoraStep, type EvalOut, type LoraBase } from './fine-tune-models';
import { runHeartbeatingShard, type HeartbeatDetails } from './shard-loop';
import { createTrainingActivities } from './training';


export interface FineTuneDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
}

export interface FineTuneRunRef {
  runId: string;
  spec: FineTuneSpec;
}

export interface EvaluateFineTuneInput {
  spec: FineTuneSpec;
  dataset: DatasetRef;
  /** Prefix of committed PEFT adapter files; null scores the base alone. */
  adapter: string | null;
}

export interface EvaluateFineTuneResult extends EvalOut {
  base: BaseRef;
  /** The same adapter folded into the base weights; null when `adapter` was null. */
  merged: EvalOut | null;
}

export interface TrainAdapterInput extends FineTuneRunRef {
  chunk: number;
  dataset: DatasetRef;
  /** The previous chunk's committed adapters and optimizer state. */
  previous: CheckpointRef | null;
  /** First chunk only: PEFT adapter files to start from (null: the fresh B = 0 init). */
  initAdapter: string | null;
}

export interface TrainAdapterResult {
  checkpoint: CheckpointRef;
  chunk: number;
  /** The step after this chunk's last one. */
  endStep: number;
  /** Train loss per step of this chunk, every step (chunks are short). */
  losses: { step: number; loss: number }[];
  resumedFrom: number | null;
  checkpointsWritten: number;
  trainable: number;
  total: number;
  trainableFraction: number;
  trainMs: number;
}

export interface ExportFineTuneResult {
  adapter: CheckpointRef;
  merged: CheckpointRef;
}

function checkSpec(spec: FineTuneSpec): FineTuneSpec {
  const r = FineTuneSpecSchema.safeParse(spec);
  if (!r.success) throw failure('InvalidConfig', `invalid fine-tune spec: ${formatIssues(r.error)}`);
  return r.data;
}

export function createFineTuneActivities(deps: FineTuneDeps) {
  const { store } = deps;
  const training = createTrainingActivities(deps);
  const shards = new ShardCache();
  const bases = new Map<string, Promise<{ lb: LoraBase; ref: BaseRef }>>();
  const steps = new Map<string, Promise<CompiledLoraStep>>();
  const sessionConfig = (spec: FineTuneSpec): SessionConfig => ({ ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.train.threads });

  /** The base with its adapter plan, cached per (base, lora, geometry): committed bases never change. */
  function loraBase(spec: FineTuneSpec): Promise<{ lb: LoraBase; ref: BaseRef }> {
    const geo = { batchSize: spec.train.batchSize, contextLength: spec.train.contextLength };
    const key = JSON.stringify([spec.base, spec.lora, geo, spec.train.seed]);
    return cachedPromise(bases, key, 4, async () => {
      const loaded = await loadBase(store, spec.base);
      try {
        const lb = loaded.kind === 'checkpoint' ? new GptBase(loaded.config, loaded.weights, spec.lora, geo) : new OnnxBase(loaded.bytes, spec.base as Extract<FineTuneSpec['base'], { kind: 'onnx' }>, spec.lora, spec.train.seed);
        return { lb, ref: loaded.ref };
      } catch (err) {
        // Plan and model-shape problems are deterministic: no retry will fix them.
        throw failure('InvalidConfig', `spec.lora / spec.base (${loaded.ref.location}): ${(err as Error).message}`);
      }
    });
  }

  function compiled(spec: FineTuneSpec, lb: LoraBase): Promise<CompiledLoraStep> {
    const key = JSON.stringify([spec.base, spec.lora, spec.train.optimizer, spec.train.batchSize, spec.train.contextLength, spec.train.threads]);
    return cachedPromise(steps, key, 4, () => lb.compile(spec.train.optimizer, spec.train, sessionConfig(spec)));
  }

  function checkData(spec: FineTuneSpec, lb: LoraBase, ds: DatasetRef, ref: BaseRef): void {
    if (ds.vocabSize > lb.vocabSize) {
      throw failure('InvalidConfig', `spec.dataset: ${ds.prefix} has ${ds.vocabSize} token ids, more than the base model's vocabulary (${lb.vocabSize}, ${ref.location})`);
    }
    for (const split of ['train', 'val'] as const) {
      const tokens = ds[split].reduce((n, s) => n + s.tokens, 0);
      if (tokens < spec.train.contextLength + 1) {
        throw failure('InvalidConfig', `spec.train.contextLength: the ${split} split of ${ds.prefix} has ${tokens} tokens, fewer than contextLength + 1 (${spec.train.contextLength + 1})`);
      }
    }
  }

  return {
    /** Prepares (or reuses) a dataset through training's prepareDataset: one train and one val shard. */
    async prepareFineTuneDataset(input: { runId: string; dataset: Extract<DatasetSource, { kind: 'spec' }>['spec'] }): Promise<DatasetRef> {
      // prepareDataset reads only the dataset and the shard count (= workers) of a TrainingSpec;
      // the other fields are placeholders that pass its validation.
      const parsed = TrainingSpecSchema.safeParse({ model: { preset: 'tiny-gpt' }, dataset: input.dataset, workers: 1, rounds: 1, innerSteps: 1, batchSize: 1, contextLength: 2 });
      if (!parsed.success) throw failure('InvalidConfig', `invalid dataset spec: ${formatIssues(parsed.error, 'spec.dataset.spec')}`);
      return training.prepareDataset({ runId: input.runId, spec: parsed.data });
    },

    /** A dataset by its prefix, or the newest one under a prefix (null: none committed yet). */
    async resolveFineTuneDataset(input: { source: { kind: 'ref' | 'newest'; prefix: string } }): Promise<DatasetRef | null> {
      return input.source.kind === 'ref' ? datasetAt(store, input.source.prefix) : newestDataset(store, input.source.prefix);
    },

    async lastFineTune(input: { lineage: string }): Promise<LineageRecord | null> {
      return lastSuccessful(store, input.lineage);
    },

    /** Validation loss of the base, or of base + adapter both unmerged and merged. */
    async evaluateFineTune(input: EvaluateFineTuneInput): Promise<EvaluateFineTuneResult> {
      const spec = checkSpec(input.spec);
      const { lb, ref } = await loraBase(spec);
      checkData(spec, lb, input.dataset, ref);
      const ids = await shards.split(store, input.dataset, 'val');
      const o = { batchSize: spec.train.batchSize, contextLength: spec.train.contextLength, maxBatches: spec.train.evalBatches, seed: spec.train.seed, session: sessionConfig(spec) };
      if (!input.adapter) return { ...(await lb.evaluate(null, ids, o)), base: ref, merged: null };
      const adapters = await readAdapter(store, input.adapter, lb.plan);
      const unmerged = await lb.evaluate(adapters, ids, o);
      Context.current().heartbeat();
      return { ...unmerged, base: ref, merged: await lb.evaluateMerged(adapters, ids, o) };
    },

    /** Steps [chunk·S, min((chunk+1)·S, steps)) on the adapters, resumable from the last snapshot. */
    async trainAdapter(input: TrainAdapterInput): Promise<TrainAdapterResult> {
      const spec = checkSpec(input.spec);
      const { runId, chunk } = input;
      const who = `trainAdapter ${runId} chunk ${chunk}`;
      const ctx = Context.current();
      const finalPrefix = ftKeys.chunkFinal(runId, chunk);
      const done = await store.readManifest(finalPrefix);
      if (done?.meta.result) return done.meta.result as TrainAdapterResult;

      const S = spec.train.stepsPerActivity;
      const [startStep, endStep] = [chunk * S, Math.min((chunk + 1) * S, spec.train.steps)];
      ctx.heartbeat({ step: startStep, checkpointKey: null } satisfies HeartbeatDetails);
      const { lb, ref } = await loraBase(spec);
      checkData(spec, lb, input.dataset, ref);
      const c = await compiled(spec, lb);
      return runHeartbeatingShard<TrainAdapterResult>(store, {
        who,
        span: 'chunk',
        startStep,
        endStep,
        snapshots: ftKeys.chunk(runId, chunk),
        snapshotKey: (step) => ftKeys.chunkProgress(runId, chunk, step),
        finalPrefix,
        compiled: c,
        fresh: async () => {
          if (input.previous) {
            const ck = await readCheckpoint(store, input.previous.prefix);
            return { step: startStep, params: Object.fromEntries(fromTensors(ck.weights, input.previous.prefix)), state: Object.fromEntries(fromTensors(ck.optimizer, input.previous.prefix)) };
          }
          const adapters = input.initAdapter ? await readAdapter(store, input.initAdapter, lb.plan) : initAdapters(lb.plan);
          return { step: startStep, params: Object.fromEntries(adapters), state: zeroState(c.step) };
        },
        ids: () => shards.split(store, input.dataset, 'train'),
        batches: { seed: spec.train.seed, shard: 0, batchSize: spec.train.batchSize, contextLength: spec.train.contextLength },
        policy: spec.train.checkpoint,
        ckptState: (step) => ({
          modelConfig: { base: ref.location, lora: spec.lora },
          runConfig: { name: spec.name, runId, chunk },
          step,
          round: chunk,
          bestValLoss: null,
          dataCursor: { shard: 0, step, seed: spec.train.seed },
          rng: [],
        }),
        nonFinite: { what: 'adapters', initial: input.previous?.prefix ?? 'the initial adapters', details: { chunk } },
        result: (run) => {
          const report = trainableReport(lb.plan, lb.baseParamCount);
          return {
            chunk,
            endStep,
            losses: run.history.map((m) => ({ step: m.step, loss: m.loss })),
            resumedFrom: run.resumedFrom,
            checkpointsWritten: run.checkpointsWritten,
            trainable: report.trainable,
            total: report.total,
            trainableFraction: report.fraction,
            trainMs: run.trainMs,
          };
        },
      });
    },

    /** The trained adapters as PEFT files, and the base with them merged in. */
    async exportFineTune(input: FineTuneRunRef & { trained: CheckpointRef }): Promise<ExportFineTuneResult> {
      const spec = checkSpec(input.spec);
      const { lb, ref } = await loraBase(spec);
      const ck = await readCheckpoint(store, input.trained.prefix);
      const adapters = fromTensors(ck.weights, input.trained.prefix);
      const adapterPrefix = ftKeys.adapter(input.runId);
      const mergedPrefix = ftKeys.merged(input.runId);
      const doneA = await store.readManifest(adapterPrefix);
      const adapter = doneA ? refOf(doneA) : refOf(await store.commit(adapterPrefix, Object.fromEntries(saveAdapter(lb.plan, adapters, { baseModelNameOrPath: ref.location })), { base: ref }));
      const doneM = await store.readManifest(mergedPrefix);
      if (doneM) return { adapter, merged: refOf(doneM) };
      let merged: CheckpointRef;
      if (lb instanceof GptBase) {
        const weights = lb.merge(adapters);
        merged = await commitCheckpoint(store, mergedPrefix, {
          weights: toTensors(weights, lb.shapes),
          optimizer: new Map(),
          state: { modelConfig: lb.cfg, runConfig: { name: spec.name, runId: input.runId, mergedFrom: { base: ref.location, adapter: adapterPrefix } }, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
        });
      } else {
        merged = refOf(await store.commit(mergedPrefix, { 'model.onnx': Buffer.from((lb as OnnxBase).mergedModel(adapters)) }, { base: ref, adapter: adapterPrefix }));
      }
      return { adapter, merged };
    },

    async recordFineTune(input: { lineage: string; record: Omit<LineageRecord, 'committedAt'> }): Promise<LineageRecord> {
      return recordSuccess(store, input.lineage, input.record);
    },
  };
}

export type FineTuneActivities = ReturnType<typeof createFineTuneActivities>;
