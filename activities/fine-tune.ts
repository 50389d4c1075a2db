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
import { beat, whileBeating } from './heartbeat';
import type { DatasetSpec } from '../engine/data/dataset';
import { GptBase, OnnxBase, type CompiledLoraStep, type EvalOpts, type EvalOut, type LoraBase } from '../engine/finetune';
import { initAdapters, saveAdapter, trainableReport } from '../engine/lora';
import { explicitGptConfig } from '../engine/models/gpt';
import { zeroState } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import type { FineTuneSpec } from '../spec/lora';
import { ortMemoryKey, ortMemorySession } from '../spec/ort-memory';
import { precisionKey } from '../spec/precision';
import { mixedPrecisionFor } from '../engine/train/precision';
import { cachedPromise } from './cache';
import { prepareDataset } from './datasets';
import { type CheckpointRef, commitCheckpoint, fromTensors, readCheckpoint, refOf, toTensors } from '../artifacts/checkpoints';
import { datasetAt, type DatasetRef, newestDataset, ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { ftKeys } from '../artifacts/keys';
import { lastSuccessful, type LineageRecord, recordSuccess } from '../artifacts/lineages';
import { type BaseRef, loadBase, readAdapter } from '../artifacts/models';
import { peftBaseName } from '../artifacts/hf-models';
import { adapterChunk, fromPreviousChunk, runHeartbeatingShard, type HeartbeatDetails } from './shard-loop';


export interface FineTuneDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
  /** Run fp16/bf16 steps emulated on a CPU worker (TRUTHGPT_HALF_EMULATION) instead of refusing them. */
  halfEmulation?: boolean;
}

/** A run and its spec, parsed once where the run was started (the SDK, a schedule, a test). */
export interface FineTuneRunRef {
  runId: string;
  spec: FineTuneSpec;
}

export interface PrepareFineTuneDatasetInput {
  runId: string;
  /** A DatasetSpec without `shards`: a fine-tune reads one train and one val shard. */
  dataset: Omit<DatasetSpec, 'shards'>;
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

interface FineTuneContext {
  store: ArtifactStore;
  shards: ShardCache;
  evalOpts(spec: FineTuneSpec): EvalOpts;
  /** The base with its adapter plan, checked against the dataset it will train or score on. */
  loraBase(spec: FineTuneSpec, ds: DatasetRef | null): Promise<{ lb: LoraBase; ref: BaseRef }>;
  compiled(spec: FineTuneSpec, lb: LoraBase): Promise<CompiledLoraStep>;
}

export function createFineTuneActivities(deps: FineTuneDeps) {
  const { store } = deps;
  const bases = new Map<string, Promise<{ lb: LoraBase; ref: BaseRef }>>();
  const steps = new Map<string, Promise<CompiledLoraStep>>();
  const session = (spec: FineTuneSpec) => ({ ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.train.threads });
  const f: FineTuneContext = {
    store,
    shards: new ShardCache(),
    evalOpts: (spec) => ({ batchSize: spec.train.batchSize, contextLength: spec.train.contextLength, maxBatches: spec.train.evalBatches, seed: spec.train.seed, session: session(spec), onBatch: (n) => beat(`evaluate batch ${n}`) }),
    // Cached per (base, lora, geometry, seed): committed bases never change.
    loraBase: async (spec, ds) => {
      const key = JSON.stringify([spec.base, spec.lora, spec.train.batchSize, spec.train.contextLength, spec.train.seed]);
      const base = await cachedPromise(bases, key, 4, () => planBase(store, spec));
      if (ds) checkData(spec, base.lb, ds, base.ref);
      return base;
    },
    compiled: (spec, lb) => {
      // stepsPerRun (absent from specs started before it existed: 1) is named only above 1, so cached keys stay as they were.
      const k = spec.train.stepsPerRun ?? 1;
      const key = JSON.stringify([spec.base, spec.lora, spec.train.optimizer, spec.train.batchSize, spec.train.contextLength, spec.train.threads, spec.train.activationCheckpointing ?? 'off', ...(k > 1 ? [k] : [])]);
      // ortMemory and precision are named in the key only when they are not the defaults: existing keys stay.
      return cachedPromise(steps, precisionKey(ortMemoryKey(key, spec.train.ortMemory), spec.train), 4, () => {
        const mixed = mixedPrecisionFor(spec.train.precision, spec.train.lossScale, deps.ep, deps.halfEmulation ?? false, 'train.precision');
        return lb.compile(spec.train.optimizer, { ...spec.train, mixed }, { ...session(spec), ...ortMemorySession(spec.train.ortMemory) });
      });
    },
  };
  return {
    /** Prepares (or reuses) a dataset as training's prepareDataset does: one train and one val shard. */
    prepareFineTuneDataset: (input: PrepareFineTuneDatasetInput): Promise<DatasetRef> => prepareDataset(store, { ...input.dataset, shards: 1 }),
    /** A dataset by its prefix, or the newest one under a prefix (null: none committed yet). */
    resolveFineTuneDataset: async (input: { source: { kind: 'ref' | 'newest'; prefix: string } }): Promise<DatasetRef | null> =>
      input.source.kind === 'ref' ? datasetAt(store, input.source.prefix) : newestDataset(store, input.source.prefix),
    lastFineTune: (input: { lineage: string }): Promise<LineageRecord | null> => lastSuccessful(store, input.lineage),
    evaluateFineTune: (input: EvaluateFineTuneInput) => evaluateFineTune(f, input),
    trainAdapter: (input: TrainAdapterInput) => trainAdapter(f, input),
    // Reads the base, writes the adapter and the merged model: store waits, heartbeating meanwhile.
    exportFineTune: (input: FineTuneRunRef & { trained: CheckpointRef }) => whileBeating(`exportFineTune ${input.runId}`, () => exportFineTune(f, input)),
    recordFineTune: (input: { lineage: string; record: Omit<LineageRecord, 'committedAt'> }): Promise<LineageRecord> => recordSuccess(store, input.lineage, input.record),
  };
}

/** Loads the base and plans its adapters; a plan or model-shape problem names spec.lora / spec.base. */
async function planBase(store: ArtifactStore, spec: FineTuneSpec): Promise<{ lb: LoraBase; ref: BaseRef }> {
  const loaded = await loadBase(store, spec.base);
  const geo = { batchSize: spec.train.batchSize, contextLength: spec.train.contextLength };
  const lb = await failingAs(`spec.lora / spec.base (${loaded.ref.location})`, (): LoraBase => {
    // A quantized base drops its float linear weights while training and reads them again after.
    if (loaded.kind === 'checkpoint') return new GptBase(loaded.config, loaded.weights, spec.lora, geo, () => reloadFloat(store, spec));
    const b = spec.base as Extract<FineTuneSpec['base'], { kind: 'onnx' }>;
    return new OnnxBase(loaded.bytes, { name: b.key, objective: b.objective, inputName: b.inputName }, spec.lora, spec.train.seed);
  });
  return { lb, ref: loaded.ref };
}

async function reloadFloat(store: ArtifactStore, spec: FineTuneSpec): Promise<Map<string, Float32Array>> {
  const again = await loadBase(store, spec.base);
  if (again.kind !== 'checkpoint') throw new Error(`spec.base: ${again.ref.location} is no longer a checkpoint`);
  return again.weights;
}

/** The dataset's token ids must exist in the base's vocabulary, and each split must fill one window. */
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

/** Validation loss of the base, or of base + adapter both unmerged and merged. */
async function evaluateFineTune(f: FineTuneContext, input: EvaluateFineTuneInput): Promise<EvaluateFineTuneResult> {
  const { spec } = input;
  // Reading the base and the val split were most of a 64 s silence on an 85M-parameter base under
  // load (measured; the heartbeat timeout is 60 s): heartbeat through them.
  const { lb, ref } = await whileBeating('evaluateFineTune: reading the base', () => f.loraBase(spec, input.dataset));
  const ids = await whileBeating('evaluateFineTune: reading the val split', () => f.shards.split(f.store, input.dataset, 'val'));
  const o = f.evalOpts(spec);
  const what = `evaluate ${ref.location} on ${input.dataset.prefix}`;
  if (!input.adapter) return { ...(await failingAs(what, () => lb.evaluate(null, ids, o))), base: ref, merged: null };
  const adapters = await whileBeating('evaluateFineTune: reading the adapter', () => readAdapter(f.store, input.adapter!, lb.plan));
  const unmerged = await failingAs(what, () => lb.evaluate(adapters, ids, o));
  beat('evaluated unmerged');
  return { ...unmerged, base: ref, merged: await failingAs(what, () => lb.evaluateMerged(adapters, ids, o)) };
}

/** Steps [chunk·S, min((chunk+1)·S, steps)) on the adapters, resumable from the last snapshot. */
async function trainAdapter(f: FineTuneContext, input: TrainAdapterInput): Promise<TrainAdapterResult> {
  const { spec, runId, chunk } = input;
  const at = adapterChunk(runId, chunk, spec.train);
  const done = await f.store.readManifest(at.finalPrefix);
  if (done?.meta.result) return done.meta.result as TrainAdapterResult;

  const { startStep, endStep } = at;
  const started = { step: startStep, checkpointKey: null } satisfies HeartbeatDetails;
  Context.current().heartbeat(started);
  const { lb, ref } = await whileBeating(started, () => f.loraBase(spec, input.dataset));
  const c = await failingAs(`spec.lora / spec.base (${ref.location})`, () => f.compiled(spec, lb));
  return runHeartbeatingShard<TrainAdapterResult>(f.store, {
    ...at,
    who: `trainAdapter ${runId} chunk ${chunk}`,
    compiled: c,
    fresh: async () => {
      if (input.previous) return fromPreviousChunk(f.store, input.previous, startStep);
      const adapters = input.initAdapter ? await readAdapter(f.store, input.initAdapter, lb.plan) : initAdapters(lb.plan);
      return { step: startStep, params: Object.fromEntries(adapters), state: zeroState(c.step) };
    },
    ids: () => f.shards.split(f.store, input.dataset, 'train'),
    batches: { seed: spec.train.seed, shard: 0, batchSize: spec.train.batchSize, contextLength: spec.train.contextLength },
    policy: spec.train.checkpoint,
    ckptState: (step) => ({ modelConfig: { base: ref.location, lora: spec.lora }, runConfig: { name: spec.name, runId, chunk }, step, round: chunk, bestValLoss: null, dataCursor: { shard: 0, step, seed: spec.train.seed }, rng: [] }),
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
}

/** The trained adapters as PEFT files, and the base with them merged in. */
async function exportFineTune(f: FineTuneContext, input: FineTuneRunRef & { trained: CheckpointRef }): Promise<ExportFineTuneResult> {
  const { spec, runId } = input;
  const { lb, ref } = await f.loraBase(spec, null);
  const ck = await readCheckpoint(f.store, input.trained.prefix);
  const adapters = fromTensors(ck.weights, input.trained.prefix);
  const adapterPrefix = ftKeys.adapter(runId);
  const mergedPrefix = ftKeys.merged(runId);
  const doneA = await f.store.readManifest(adapterPrefix);
  const adapter = doneA ? refOf(doneA) : refOf(await f.store.commit(adapterPrefix, Object.fromEntries(saveAdapter(lb.plan, adapters, { baseModelNameOrPath: await peftBaseName(f.store, ref.location) })), { base: ref }));
  const doneM = await f.store.readManifest(mergedPrefix);
  if (doneM) return { adapter, merged: refOf(doneM) };
  if (lb instanceof OnnxBase) {
    return { adapter, merged: refOf(await f.store.commit(mergedPrefix, { 'model.onnx': Buffer.from(lb.mergedModel(adapters)) }, { base: ref, adapter: adapterPrefix })) };
  }
  const gpt = lb as GptBase;
  const merged = await commitCheckpoint(f.store, mergedPrefix, {
    weights: toTensors(await gpt.merge(adapters), gpt.shapes),
    optimizer: new Map(),
    state: { family: 'gpt', modelConfig: explicitGptConfig(gpt.cfg), runConfig: { name: spec.name, runId, mergedFrom: { base: ref.location, adapter: adapterPrefix } }, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
  });
  return { adapter, merged };
}

export type FineTuneActivities = ReturnType<typeof createFineTuneActivities>;
