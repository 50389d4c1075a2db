// Training activities (thin: resolve refs → one engine call → store → return refs and metrics).
//
//   prepareDataset   cpu  corpus → shards in S3; reused when spec and content are already there
//   createModel      cpu  seeded init, or the weights of model.from → global checkpoint r0
//   trainShard       gpu  H inner steps on one shard; resumable snapshots every N steps / T s,
//                         heartbeats { step, checkpointKey }, resumes after a crash
//   aggregateRound   cpu  outer optimizer over the shard results → global checkpoint r+1
//   evaluate         cpu  val loss + perplexity of a global checkpoint
//
// Every output is written under a key derived from (run id, round, shard, step) and committed with
// its manifest last, so a retry either finds the committed result and returns it, or redoes the
// work into the same keys.

import { CancelledFailure, Context, log } from '@temporalio/activity';
import { beat, whileBeating, yieldThenBeat } from './heartbeat';
import { DatasetSpecSchema, type DatasetSpec } from '../engine/data/dataset';
import { OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE } from '../engine/checkpoint/checkpoint';
import { initParams, type ParamSpec } from '../engine/models/blocks';
import type { SessionConfig } from '../engine/runtime';
import { OuterAggregator } from '../engine/train/outer';
import { compressDelta, decodeDelta } from '../engine/train/compress';
import { writeSafetensors } from '../engine/checkpoint/safetensors';
import { zeroState, type CompiledTrainStep } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import { datasetSpecOf, type TrainingSpec } from '../spec/training';
import { familyTraining, type EvaluateResult } from './model-family';
import { runHeartbeatingShard, type HeartbeatDetails, type ShardIo } from './shard-loop';
import { cachedPromise } from './cache';
import { prepareDataset } from './datasets';
import { type CheckpointRef, commitCheckpoint, DELTA_FILE, fromTensors, readCheckpoint, readTensorFile, refOf, streamTensorFile, toTensors } from '../artifacts/checkpoints';
import { type DatasetRef, ShardCache } from '../artifacts/datasets';
import { tensorCache } from '../artifacts/tensor-cache';
import { failingAs } from '../artifacts/errors';
import { keys } from '../artifacts/keys';
import { failure } from '../spec/errors';
import { ortMemoryKey, ortMemorySession } from '../spec/ort-memory';
import { precisionKey } from '../spec/precision';


export interface TrainingDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
  /** What one training step may use (TRUTHGPT_WORKER_MEMORY_GB); the engine also holds it to 80 % of the machine's memory. */
  memoryLimitBytes?: number;
  /** Run fp16/bf16 steps emulated on a CPU worker (TRUTHGPT_HALF_EMULATION) instead of refusing them. */
  halfEmulation?: boolean;
}

/** A run and its spec, parsed once where the run was started (the SDK or the CLI). */
export interface RunRef {
  runId: string;
  spec: TrainingSpec;
}

export interface PrepareDatasetInput {
  runId: string;
  /** The training dataset with one shard per worker. */
  dataset: DatasetSpec;
}

/**
 * What workflows started before the spec was parsed once sent (the whole run): a run in flight
 * during an upgrade retries its prepareDataset with this, and must still get its dataset.
 */
export interface LegacyPrepareDatasetInput {
  runId: string;
  spec: TrainingSpec;
}

const datasetOfInput = (input: PrepareDatasetInput | LegacyPrepareDatasetInput): DatasetSpec =>
  'dataset' in input ? input.dataset : DatasetSpecSchema.parse(datasetSpecOf(input.spec));

export interface TrainShardInput extends RunRef {
  round: number;
  shard: number;
  dataset: DatasetRef;
  global: CheckpointRef;
  /** This shard's result of the previous round: its inner optimizer state carries over. */
  previous: CheckpointRef | null;
  /**
   * Sent by trainingWorkflow (absent in activities scheduled before it was): the shard that finds
   * every other shard of its round committed, and committed last, runs the round's aggregation
   * (aggregateRound, the same code and bytes) in its own process, where its weights, the global
   * checkpoint and, on a worker that ran every shard, all the shards' weights already are, and
   * returns it as `aggregate`; the next round's first shard there then reads nothing either. Not
   * where the round would not fit the tensor cache (aggregationFits).
   */
  aggregate?: { bestValLoss: number | null };
}

export interface TrainShardResult {
  checkpoint: CheckpointRef;
  shard: number;
  round: number;
  steps: number;
  /** Mean train loss over the round's steps (those run by this attempt and any it resumed from are equal). */
  meanLoss: number;
  lastLoss: number;
  tokens: number;
  /** The step this attempt resumed from (null: started at the round's first step). */
  resumedFrom: number | null;
  checkpointsWritten: number;
  trainMs: number;
  /** Where this attempt's time outside the loop went (absent when a committed result was returned). */
  io?: ShardIo;
  /** The round's aggregation, when this shard ran it (TrainShardInput.aggregate). */
  aggregate?: AggregateResult;
}

export interface AggregateInput extends RunRef {
  round: number;
  global: CheckpointRef;
  shards: CheckpointRef[];
  bestValLoss: number | null;
}

export interface AggregateResult {
  checkpoint: CheckpointRef;
  round: number;
  pseudoGradNorm: number;
  /** Where this attempt's time went (absent when a committed result was returned). */
  io?: AggregateIo;
}

/** The aggregation's time by part, ms, and the bytes it moved. */
export interface AggregateIo {
  /** Reading the global checkpoint and every shard's weights (in parallel with the outer step). */
  readMs: number;
  bytesRead: number;
  /** The outer step over the tensors (accumulating the shards, then the update). */
  outerMs: number;
  packMs: number;
  uploadMs: number;
  bytesWritten: number;
}

export interface EvaluateInput extends RunRef {
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
}

export type { EvaluateResult } from './model-family';

export type { HeartbeatDetails } from './shard-loop';

interface TrainingContext {
  store: ArtifactStore;
  shards: ShardCache;
  /** One compiled step per (model, optimizer, geometry, threads): later rounds reuse the session. */
  compiled(spec: TrainingSpec): Promise<CompiledTrainStep>;
  session(spec: TrainingSpec): SessionConfig;
}

export function createTrainingActivities(deps: TrainingDeps) {
  const steps = new Map<string, Promise<CompiledTrainStep>>();
  const session = (spec: TrainingSpec): SessionConfig => ({ ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.threads });
  const t: TrainingContext = {
    store: deps.store,
    shards: new ShardCache(),
    compiled: (spec) => {
      const f = familyTraining(spec);
      // ortMemory is named in the key only when it is not ORT's defaults: existing keys stay.
      // precision is named in the key only for fp16/bf16: fp32 keys stay.
      const key = precisionKey(ortMemoryKey(f.stepKey, spec.ortMemory), spec);
      return cachedPromise(steps, key, Infinity, () => f.compile({ ...session(spec), ...ortMemorySession(spec.ortMemory) }, deps.memoryLimitBytes, deps.halfEmulation ?? false));
    },
    session,
  };
  return {
    /** Tokenizes the corpus into one train/val shard per worker; reuses a committed copy of the same spec. */
    prepareDataset: (input: PrepareDatasetInput | LegacyPrepareDatasetInput): Promise<DatasetRef> => prepareDataset(t.store, datasetOfInput(input)),
    createModel: (input: RunRef) => createModel(t, input),
    trainShard: (input: TrainShardInput) => trainShard(t, input),
    aggregateRound: (input: AggregateInput) => aggregateRound(t, input),
    evaluate: (input: EvaluateInput) => evaluate(t, input),
  };
}

/**
 * Global checkpoint r0: seeded initial weights, or the weights of `spec.model.from` (an imported
 * model or another run's checkpoint) with a fresh optimizer — its files must still be the ones the
 * run was started with (`fromFiles`), and every tensor must have the shape the config gives it.
 */
async function createModel({ store }: TrainingContext, input: RunRef): Promise<CheckpointRef> {
  const { spec } = input;
  const prefix = keys.global(input.runId, 0);
  const done = await store.readManifest(prefix);
  if (done) return refOf(done);
  const f = familyTraining(spec);
  const specs = f.params;
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  // Reading a large `model.from` and committing r0 are long waits on the store: heartbeat meanwhile.
  const weights = spec.model.from ? await whileBeating(`createModel: reading ${spec.model.from}`, () => weightsFrom(store, spec.model.from!, spec.model.fromFiles ?? {}, specs, spec.seed)) : await initParamsBeating(specs, spec.seed);
  return whileBeating(`createModel: committing ${prefix}`, () => commitCheckpoint(store, prefix, {
    weights: toTensors(weights, shapes),
    optimizer: new Map(),
    state: {
      ...f.state,
      runConfig: { name: spec.name, seed: spec.seed, ...(spec.model.from ? { from: spec.model.from } : {}) },
      step: 0,
      round: 0,
      bestValLoss: null,
      dataCursor: null,
      rng: [],
    },
  }, undefined, undefined, { cache: tensorCache }));
}

/**
 * initParams one tensor at a time with a heartbeat between: each tensor's values depend only on
 * (seed, name), so the result is the same, but the longest silence is the largest tensor's init
 * (0.2 s for a 768 x 3072 one) instead of the whole model's (10.5 s for 85M parameters, measured).
 */
async function initParamsBeating(specs: ParamSpec[], seed: number): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [i, s] of specs.entries()) {
    for (const [name, data] of initParams([s], seed)) out.set(name, data);
    await yieldThenBeat(`createModel: initialized ${i + 1} of ${specs.length} tensors`);
  }
  return out;
}

/**
 * The weights of a stored model, pinned by the sha256s the run was started with. A BERT task head the
 * stored model lacks (a classifier on an imported encoder, an MLM head on a classifier) gets a seeded
 * init; the stored model's other head is left behind.
 */
async function weightsFrom(store: ArtifactStore, from: string, pins: Record<string, string>, specs: ParamSpec[], seed: number): Promise<Map<string, Float32Array>> {
  const manifest = await store.readManifest(from);
  if (!manifest) throw failure('MissingArtifact', `model.from ${from}: nothing is committed there any more`);
  for (const [name, sha] of Object.entries(pins)) {
    const now = manifest.files.find((f) => f.name === name)?.sha256;
    if (now !== sha) throw failure('InvalidInput', `model.from ${from}: ${name} has sha256 ${now ?? '(gone)'}, but the run was started with ${sha}; start a new run to use the new files`);
  }
  const ck = await readCheckpoint(store, from);
  const all = fromTensors(ck.weights, from);
  const out = new Map<string, Float32Array>();
  const newHead = specs.filter((s) => (s.name.startsWith('classifier.') || s.name.startsWith('cls.')) && !ck.weights.has(s.name));
  const init = initParams(newHead, seed);
  for (const s of specs) {
    const t = ck.weights.get(s.name);
    if (!t && init.has(s.name)) {
      out.set(s.name, init.get(s.name)!);
      continue;
    }
    if (!t) throw failure('InvalidInput', `model.from ${from}: tensor "${s.name}" is missing from ${WEIGHTS_FILE}`);
    if (t.dims.join() !== s.shape.join()) throw failure('InvalidInput', `model.from ${from}: tensor "${s.name}" is [${t.dims.join(', ')}], the config needs [${s.shape.join(', ')}]`);
    out.set(s.name, all.get(s.name)!);
  }
  return out;
}

/** H inner steps of shard `shard` in round `round`, resumable from its last snapshot; then the round's aggregation if it is the last shard and was asked to. */
async function trainShard(t: TrainingContext, input: TrainShardInput): Promise<TrainShardResult> {
  // Only where the round's results fit the cache beside the states it keeps (below); otherwise the
  // CPU pool aggregates, as without `aggregate`.
  const local = input.aggregate !== undefined && aggregationFits(input.spec);
  const result = await trainShardSteps(t, input, local);
  return local ? aggregateIfLast(t, input, result) : result;
}

/**
 * Whether W shards' results (weights + AdamW moments, 3 × the weights each) and the global
 * checkpoint (weights + outer momentum) fit this process's tensor cache: if they did not, keeping
 * the shards' weights would push the moments the next round reads out of it (bench/RESULTS.md,
 * "A round's I/O at gpt2-small size"): 2 gpt2-small shards fit a 6 GiB cache, 4 do not.
 */
function aggregationFits(spec: TrainingSpec): boolean {
  const weightBytes = familyTraining(spec).params.reduce((n, p) => n + 4 * p.shape.reduce((a, b) => a * b, 1), 0);
  return (3 * spec.workers + 2) * weightBytes <= tensorCache.maxBytes;
}

/**
 * The round's aggregation in this process, if every other shard of the round is committed (this
 * one finished last); `result` unchanged otherwise, and also when the aggregation fails here: the
 * workflow then runs aggregateRound on the CPU pool, which retries it and reports its error.
 */
async function aggregateIfLast(t: TrainingContext, input: TrainShardInput, result: TrainShardResult): Promise<TrainShardResult> {
  const { spec, runId, round } = input;
  const manifests = await Promise.all(Array.from({ length: spec.workers }, (_, k) => t.store.readManifest(keys.shardFinal(runId, k, round))));
  if (manifests.some((m) => !m?.meta.result)) return result;
  // Of shards that end together and each find the other committed, the last to commit aggregates
  // (equal times: the higher shard), so the work is not done twice. Clocks of different hosts may
  // make neither take it; the CPU pool then does, as it always could.
  const mine = manifests[input.shard]!.committedAt;
  if (manifests.some((m, k) => k !== input.shard && (m!.committedAt > mine || (m!.committedAt === mine && k > input.shard)))) return result;
  const refs = manifests.map((m) => (m!.meta.result as TrainShardResult).checkpoint);
  let aggregate: AggregateResult;
  try {
    aggregate = await aggregateRound(t, { runId, spec, round, global: input.global, shards: refs, bestValLoss: input.aggregate!.bestValLoss });
  } catch (err) {
    if (err instanceof CancelledFailure || Context.current().cancellationSignal.aborted) throw err;
    log.warn(`trainShard shard ${input.shard} round ${round}: aggregating here failed, the CPU pool will: ${err instanceof Error ? err.message : String(err)}`);
    return result;
  }
  // The shards' weights are folded into the new global: no one reads them here again.
  const kept = aggregate.checkpoint.files[WEIGHTS_FILE]?.sha256;
  for (const r of refs) {
    const w = r.files[WEIGHTS_FILE];
    if (w && w.sha256 !== kept) tensorCache.drop(w.sha256);
  }
  return { ...result, aggregate };
}

async function trainShardSteps(t: TrainingContext, input: TrainShardInput, keepWeights: boolean): Promise<TrainShardResult> {
  const { spec, runId, round, shard } = input;
  const who = `trainShard shard ${shard} round ${round}`;
  const finalPrefix = keys.shardFinal(runId, shard, round);
  const done = await t.store.readManifest(finalPrefix);
  if (done?.meta.result) return done.meta.result as TrainShardResult;

  const H = spec.innerSteps;
  const [startStep, endStep] = [round * H, (round + 1) * H];
  Context.current().heartbeat({ step: startStep, checkpointKey: null } satisfies HeartbeatDetails);
  const c = await failingAs(who, () => t.compiled(spec));
  const io = { readMs: 0, bytesRead: 0 };
  const compression = spec.outer.compression && spec.outer.compression !== 'none' ? spec.outer.compression : null;
  const family = familyTraining(spec);
  return runHeartbeatingShard<TrainShardResult>(t.store, {
    cache: tensorCache,
    keepWeights,
    io,
    ...(compression ? { finalFiles: async (params: Record<string, Float32Array>) => {
      const g = await readCheckpoint(t.store, input.global.prefix, { cache: tensorCache, weightsOnly: true });
      const global = fromTensors(g.weights, input.global.prefix);
      const d = await failingAs(who, async () => compressDelta(global, new Map(Object.entries(params)), compression, who));
      return { weights: new Map(), extra: new Map([[DELTA_FILE, writeSafetensors(d.tensors)]]) };
    } } : {}),
    who,
    span: 'round',
    startStep,
    endStep,
    snapshots: keys.shardRound(runId, shard, round),
    snapshotKey: (step) => keys.shardProgress(runId, shard, round, step),
    finalPrefix,
    compiled: c,
    fresh: async () => {
      // Weights and carried state this process already holds (by sha256) are not read again.
      io.bytesRead += unheld(input.global, [WEIGHTS_FILE, STATE_FILE]) + (input.previous ? unheld(input.previous, [OPTIMIZER_FILE, STATE_FILE]) : 0);
      const [g, prev] = await Promise.all([
        readCheckpoint(t.store, input.global.prefix, { cache: tensorCache, weightsOnly: true }),
        input.previous ? readCheckpoint(t.store, input.previous.prefix, { cache: tensorCache, optimizerOnly: true }) : null,
      ]);
      // The previous optimizer state is read once (the step copies it): kept, it would push this
      // round's states out of the cache (bench/RESULTS.md, "A round's I/O at gpt2-small size").
      if (input.previous?.files[OPTIMIZER_FILE]) tensorCache.drop(input.previous.files[OPTIMIZER_FILE].sha256);
      return {
        step: startStep,
        params: Object.fromEntries(fromTensors(g.weights, input.global.prefix)),
        state: prev ? Object.fromEntries(fromTensors(prev.optimizer, input.previous!.prefix)) : zeroState(c.step),
      };
    },
    ids: () => t.shards.get(t.store, input.dataset, input.dataset.train[shard].file),
    ...(family.batch ? { batch: (ids: Uint16Array | Uint32Array) => family.batch!(t.store, t.shards, input.dataset, shard, ids) } : {}),
    batches: { seed: spec.seed, shard, batchSize: spec.batchSize, contextLength: spec.contextLength },
    policy: spec.checkpoint,
    ckptState: (step) => ({ ...family.state, runConfig: { name: spec.name, runId, shard }, step, round, bestValLoss: null, dataCursor: { shard, step, seed: spec.seed }, rng: [] }),
    nonFinite: { what: 'weights', initial: input.global.prefix, details: { shard, round } },
    result: (run) => {
      const losses = run.history.map((m) => m.loss);
      return {
        shard,
        round,
        steps: endStep - startStep,
        meanLoss: losses.length ? losses.reduce((a, b) => a + b, 0) / losses.length : NaN,
        lastLoss: losses.length ? losses[losses.length - 1] : NaN,
        tokens: (endStep - startStep) * spec.batchSize * spec.contextLength,
        resumedFrom: run.resumedFrom,
        checkpointsWritten: run.checkpointsWritten,
        trainMs: run.trainMs,
      };
    },
  });
}

/** The outer optimizer over every shard's result: global checkpoint r+1, manifest last. */
async function aggregateRound({ store }: TrainingContext, input: AggregateInput): Promise<AggregateResult> {
  const { spec } = input;
  const prefix = keys.global(input.runId, input.round + 1);
  const done = await store.readManifest(prefix);
  if (done?.meta.result) return done.meta.result as AggregateResult;
  const who = `aggregateRound round ${input.round}`;
  const tRead = performance.now();
  let bytesRead = unheld(input.global);
  let readMs = 0;
  let outerMs = 0;
  const g = await whileBeating(`${who}: reading ${input.global.prefix}`, () => readCheckpoint(store, input.global.prefix, { cache: tensorCache }));
  const momentum = fromTensors(g.optimizer, input.global.prefix);
  const agg = new OuterAggregator(fromTensors(g.weights, input.global.prefix));
  readMs += performance.now() - tRead;
  // One shard at a time, in shard order, so the float64 sum is the same whatever the transfers do.
  // A shard's weights are streamed and folded tensor by tensor as they arrive (this process never
  // holds a whole shard, and does not keep what it read: no one reads it again); a shard whose
  // weights this process already holds by sha256 is added from memory. Workers that uploaded
  // deltas (outer.compression fp16/int8) are decoded from them, one file at a time.
  const compressed = spec.outer.compression && spec.outer.compression !== 'none';
  for (const ref of input.shards) {
    const tWait = performance.now();
    const weights = ref.files[WEIGHTS_FILE];
    if (compressed || (weights && tensorCache.has(weights.sha256))) {
      bytesRead += compressed ? (ref.files[DELTA_FILE]?.size ?? 0) : unheld(ref, [WEIGHTS_FILE, STATE_FILE]);
      const tensors = await whileBeating(`${who}: reading ${ref.prefix}`, () => (compressed ? readTensorFile(store, ref.prefix, DELTA_FILE) : readCheckpoint(store, ref.prefix, { cache: tensorCache, weightsOnly: true }).then((ck) => ck.weights)));
      const t1 = performance.now();
      readMs += t1 - tWait;
      await failingAs(who, () => (compressed ? agg.addDelta(decodeDelta(tensors, `${ref.prefix}/${DELTA_FILE}`), ref.prefix) : agg.add(fromTensors(tensors, ref.prefix), ref.prefix)));
      outerMs += performance.now() - t1;
    } else {
      bytesRead += weights?.size ?? 0;
      const worker = agg.worker(ref.prefix);
      let foldMs = 0;
      await whileBeating(`${who}: reading ${ref.prefix}`, () =>
        failingAs(who, async () => {
          await streamTensorFile(store, ref, WEIGHTS_FILE, (name, t) => {
            const t1 = performance.now();
            worker.add(name, fromTensors(new Map([[name, t]]), ref.prefix).get(name)!);
            foldMs += performance.now() - t1;
          });
          worker.end();
        }),
      );
      outerMs += foldMs;
      readMs += performance.now() - tWait - foldMs;
    }
    beat(ref.prefix);
  }
  const t2 = performance.now();
  await yieldThenBeat(`${who}: outer step`);
  const out = agg.apply(spec.outer, momentum.size ? momentum : undefined);
  outerMs += performance.now() - t2;
  const shapes = new Map([...g.weights].map(([n, t]) => [n, t.dims]));
  const state = {
    ...familyTraining(spec).state,
    runConfig: { name: spec.name, seed: spec.seed, outer: spec.outer, ...(spec.model.from ? { from: spec.model.from } : {}) },
    step: (input.round + 1) * spec.innerSteps,
    round: input.round + 1,
    bestValLoss: input.bestValLoss,
    dataCursor: null,
    rng: [],
  };
  const ckpt = { weights: toTensors(out.weights, shapes), optimizer: toTensors(out.momentum, shapes), state };
  const result: AggregateResult = { checkpoint: { prefix, files: {} }, round: input.round + 1, pseudoGradNorm: out.pseudoGradNorm };
  const timing = { packMs: 0, uploadMs: 0, bytes: 0 };
  // Kept in memory: the next round's aggregation and this round's evaluation start from it.
  // Packing and uploading r+1 is the longest stretch of a large round (most of 18 s for 85M
  // parameters, measured): heartbeat meanwhile.
  result.checkpoint = await whileBeating(`${who}: committing ${prefix}`, () => commitCheckpoint(store, prefix, ckpt, (ref) => ({ result: { ...result, checkpoint: ref } }), undefined, { cache: tensorCache, timing }));
  const io: AggregateIo = { readMs: Math.round(readMs), bytesRead, outerMs: Math.round(outerMs), packMs: Math.round(timing.packMs), uploadMs: Math.round(timing.uploadMs), bytesWritten: timing.bytes };
  return { ...result, io };
}

/** Bytes of a checkpoint's files (all, or `names`) that this process does not hold by sha256. */
function unheld(ref: CheckpointRef, names: string[] = Object.keys(ref.files)): number {
  return names.reduce((n, name) => {
    const f = ref.files[name];
    return f && !tensorCache.has(f.sha256) ? n + f.size : n;
  }, 0);
}

/**
 * Validation loss and perplexity of a checkpoint over the first `evalBatches` val batches (LM, MLM);
 * for classification, loss, accuracy and macro F1 over every val document.
 */
async function evaluate(t: TrainingContext, input: EvaluateInput): Promise<EvaluateResult> {
  const { spec } = input;
  const ck = await readCheckpoint(t.store, input.checkpoint.prefix, { cache: tensorCache, weightsOnly: true });
  const weights = fromTensors(ck.weights, input.checkpoint.prefix);
  return failingAs(`evaluate ${input.checkpoint.prefix}`, () =>
    familyTraining(spec).evaluate(t.store, t.shards, input.dataset, weights, t.session(spec), (n) => beat(`evaluate batch ${n} of at most ${spec.evalBatches}`)),
  );
}

export type TrainingActivities = ReturnType<typeof createTrainingActivities>;
