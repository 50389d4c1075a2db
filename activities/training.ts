// Training activities (thin: resolve refs → one engine call → store → return refs and metrics).
//
//   prepareDataset   cpu  corpus → shards in S3; reused when spec and content are already there
//   createModel      cpu  seeded init → global checkpoint r0
//   trainShard       gpu  H inner steps on one shard; resumable snapshots every N steps / T s,
//                         heartbeats { step, checkpointKey }, resumes after a crash
//   aggregateRound   cpu  outer optimizer over the shard results → global checkpoint r+1
//   evaluate         cpu  val loss + perplexity of a global checkpoint
//
// Every output is written under a key derived from (run id, round, shard, step) and committed with
// its manifest last, so a retry either finds the committed result and returns it, or redoes the
// work into the same keys.

import { Context } from '@temporalio/activity';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DATASET_MANIFEST_FILE, DatasetSpecSchema, prepareDataset as prepareDatasetFiles, TOKENIZER_FILE } from '../engine/data/dataset';
import { initParams } from '../engine/models/blocks';
import { gptParams } from '../engine/models/gpt';
import type { SessionConfig } from '../engine/runtime';
import { LmEvaluator } from '../engine/train/evaluate';
import { NonFiniteWeightError, OuterAggregator } from '../engine/train/outer';
import { compileLmTrainStep, zeroState, type CompiledTrainStep } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { datasetSpecOf, formatIssues, TrainingSpecSchema, type TrainingSpec } from '../spec/training';
import { runHeartbeatingShard, type HeartbeatDetails } from './shard-loop';
import { cachedPromise } from './cache';
import { type CheckpointRef, commitCheckpoint, fromTensors, readCheckpoint, refOf, toTensors } from '../artifacts/checkpoints';
import { type DatasetRef, ShardCache } from '../artifacts/datasets';
import { keys } from '../artifacts/keys';


export interface TrainingDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
}

export interface RunRef {
  runId: string;
  spec: TrainingSpec;
}

export interface TrainShardInput extends RunRef {
  round: number;
  shard: number;
  dataset: DatasetRef;
  global: CheckpointRef;
  /** This shard's result of the previous round: its inner optimizer state carries over. */
  previous: CheckpointRef | null;
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
}

export interface EvaluateInput extends RunRef {
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
}

export interface EvaluateResult {
  loss: number;
  perplexity: number;
  tokens: number;
}

export type { HeartbeatDetails } from './shard-loop';

const sha256 = (s: string | Uint8Array) => createHash('sha256').update(s).digest('hex');

/** Identifies a dataset's content: the sha256 of every file but its own descriptor. */
const contentHashOf = (files: { name: string; sha256: string }[]) =>
  sha256(
    files
      .filter((f) => f.name !== DATASET_MANIFEST_FILE)
      .map((f) => `${f.name}:${f.sha256}`)
      .sort()
      .join('\n'),
  );

/** Re-validates the spec an activity received (STYLE: validate again where it is consumed). */
function checkSpec(spec: TrainingSpec): TrainingSpec {
  const r = TrainingSpecSchema.safeParse(spec);
  if (!r.success) throw failure('InvalidConfig', `invalid training spec: ${formatIssues(r.error)}`);
  return r.data;
}

export function createTrainingActivities(deps: TrainingDeps) {
  const { store } = deps;
  const shards = new ShardCache();
  const steps = new Map<string, Promise<CompiledTrainStep>>();
  const evaluators = new Map<string, LmEvaluator>();
  const sessionConfig = (spec: TrainingSpec): SessionConfig => ({ ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.threads });

  /** One compiled step per (model, optimizer, geometry, threads): later rounds reuse the session. */
  function compiled(spec: TrainingSpec): Promise<CompiledTrainStep> {
    const key = JSON.stringify([spec.model.config, spec.optimizer, spec.batchSize, spec.contextLength, spec.threads]);
    return cachedPromise(steps, key, Infinity, () =>
      compileLmTrainStep({ model: spec.model.config, optim: spec.optimizer, batchSize: spec.batchSize, contextLength: spec.contextLength }, sessionConfig(spec)),
    );
  }

  return {
    /** Tokenizes the corpus into one train/val shard per worker; reuses a committed copy of the same spec. */
    async prepareDataset(input: RunRef): Promise<DatasetRef> {
      const spec = DatasetSpecSchema.parse(datasetSpecOf(checkSpec(input.spec)));
      const specHash = sha256(JSON.stringify(spec));
      const prefix = keys.dataset(spec.name, specHash);
      const existing = await store.readManifest(prefix);
      if (existing && existing.meta.specHash === specHash && existing.meta.ref) {
        const ref = existing.meta.ref as DatasetRef;
        if (contentHashOf(existing.files) === ref.contentHash) return { ...ref, reused: true };
      }
      const dir = await mkdtemp(path.join(os.tmpdir(), 'truthgpt-dataset-'));
      try {
        const manifest = await prepareDatasetFiles(spec, dir, (p) => Context.current().heartbeat(p));
        const shardFiles = [...manifest.splits.train, ...manifest.splits.val];
        const names = [...shardFiles.map((f) => f.file), TOKENIZER_FILE, DATASET_MANIFEST_FILE];
        const local = await Promise.all(names.map(async (name) => ({ name, sha256: sha256(await readFile(path.join(dir, name))) })));
        const split = (xs: typeof manifest.splits.train) => xs.map((x) => ({ file: x.file, tokens: x.tokens }));
        const ref: DatasetRef = {
          prefix,
          specHash,
          contentHash: contentHashOf(local),
          vocabSize: manifest.tokenizer.vocabSize,
          eot: manifest.tokenizer.eot,
          dtype: manifest.dtype,
          train: split(manifest.splits.train),
          val: split(manifest.splits.val),
          documents: manifest.documents,
          reused: false,
        };
        const committed = await store.commit(prefix, Object.fromEntries(names.map((n) => [n, { path: path.join(dir, n) }])), { specHash, ref });
        if (contentHashOf(committed.files) !== ref.contentHash) throw new Error(`dataset ${prefix}: stored files differ from the prepared ones`);
        return ref;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },

    /** Seeded initial weights as global checkpoint r0. */
    async createModel(input: RunRef): Promise<CheckpointRef> {
      const spec = checkSpec(input.spec);
      const prefix = keys.global(input.runId, 0);
      const done = await store.readManifest(prefix);
      if (done) return refOf(done);
      const specs = gptParams(spec.model.config);
      const weights = initParams(specs, spec.seed);
      return commitCheckpoint(store, prefix, {
        weights: toTensors(weights, new Map(specs.map((s) => [s.name, s.shape]))),
        optimizer: new Map(),
        state: { modelConfig: spec.model.config, runConfig: { name: spec.name, seed: spec.seed }, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
      });
    },

    /** H inner steps of shard `shard` in round `round`, resumable from its last snapshot. */
    async trainShard(input: TrainShardInput): Promise<TrainShardResult> {
      const spec = checkSpec(input.spec);
      const { runId, round, shard } = input;
      const who = `trainShard shard ${shard} round ${round}`;
      const ctx = Context.current();
      const finalPrefix = keys.shardFinal(runId, shard, round);
      const done = await store.readManifest(finalPrefix);
      if (done?.meta.result) return done.meta.result as TrainShardResult;

      const H = spec.innerSteps;
      const [startStep, endStep] = [round * H, (round + 1) * H];
      ctx.heartbeat({ step: startStep, checkpointKey: null } satisfies HeartbeatDetails);
      const c = await compiled(spec);
      return runHeartbeatingShard<TrainShardResult>(store, {
        who,
        span: 'round',
        startStep,
        endStep,
        snapshots: keys.shardRound(runId, shard, round),
        snapshotKey: (step) => keys.shardProgress(runId, shard, round, step),
        finalPrefix,
        compiled: c,
        fresh: async () => {
          const g = await readCheckpoint(store, input.global.prefix);
          const prev = input.previous ? await readCheckpoint(store, input.previous.prefix) : null;
          return {
            step: startStep,
            params: Object.fromEntries(fromTensors(g.weights, input.global.prefix)),
            state: prev ? Object.fromEntries(fromTensors(prev.optimizer, input.previous!.prefix)) : zeroState(c.step),
          };
        },
        ids: () => shards.get(store, input.dataset, input.dataset.train[shard].file),
        batches: { seed: spec.seed, shard, batchSize: spec.batchSize, contextLength: spec.contextLength },
        policy: spec.checkpoint,
        ckptState: (step) => ({
          modelConfig: spec.model.config,
          runConfig: { name: spec.name, runId, shard },
          step,
          round,
          bestValLoss: null,
          dataCursor: { shard, step, seed: spec.seed },
          rng: [],
        }),
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
    },

    /** The outer optimizer over every shard's result: global checkpoint r+1, manifest last. */
    async aggregateRound(input: AggregateInput): Promise<AggregateResult> {
      const spec = checkSpec(input.spec);
      const prefix = keys.global(input.runId, input.round + 1);
      const done = await store.readManifest(prefix);
      if (done?.meta.result) return done.meta.result as AggregateResult;
      const g = await readCheckpoint(store, input.global.prefix);
      const global = fromTensors(g.weights, input.global.prefix);
      const momentum = fromTensors(g.optimizer, input.global.prefix);
      const agg = new OuterAggregator(global);
      try {
        for (const ref of input.shards) {
          const ck = await readCheckpoint(store, ref.prefix);
          agg.add(fromTensors(ck.weights, ref.prefix), ref.prefix);
          Context.current().heartbeat(ref.prefix);
        }
      } catch (err) {
        if (err instanceof NonFiniteWeightError) throw failure('NonFiniteLoss', `aggregateRound round ${input.round}: ${err.message}`, { tensor: err.tensor });
        throw err;
      }
      const out = agg.apply(spec.outer, momentum.size ? momentum : undefined);
      const shapes = new Map([...g.weights].map(([n, t]) => [n, t.dims]));
      const state = {
        modelConfig: spec.model.config,
        runConfig: { name: spec.name, seed: spec.seed, outer: spec.outer },
        step: (input.round + 1) * spec.innerSteps,
        round: input.round + 1,
        bestValLoss: input.bestValLoss,
        dataCursor: null,
        rng: [],
      };
      const ckpt = { weights: toTensors(out.weights, shapes), optimizer: toTensors(out.momentum, shapes), state };
      const result: AggregateResult = { checkpoint: { prefix, files: {} }, round: input.round + 1, pseudoGradNorm: out.pseudoGradNorm };
      result.checkpoint = await commitCheckpoint(store, prefix, ckpt, (ref) => ({ result: { ...result, checkpoint: ref } }));
      return result;
    },

    /** Validation loss and perplexity of a checkpoint over the first `evalBatches` val batches. */
    async evaluate(input: EvaluateInput): Promise<EvaluateResult> {
      const spec = checkSpec(input.spec);
      const key = JSON.stringify(spec.model.config);
      let ev = evaluators.get(key);
      if (!ev) {
        ev = new LmEvaluator(spec.model.config, { ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.threads });
        evaluators.set(key, ev);
      }
      const ck = await readCheckpoint(store, input.checkpoint.prefix);
      const ids = await shards.split(store, input.dataset, 'val');
      try {
        const r = await ev.evaluate(fromTensors(ck.weights, input.checkpoint.prefix), ids, { batchSize: spec.batchSize, contextLength: spec.contextLength, maxBatches: spec.evalBatches });
        return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
      } catch (err) {
        // Geometry and checkpoint-content problems are deterministic; anything else may retry.
        if (err instanceof Error && /^(eval contextLength|validation split|evaluate: parameter)/.test(err.message)) {
          throw failure('InvalidConfig', `evaluate ${input.checkpoint.prefix}: ${err.message}`);
        }
        throw err;
      }
    },
  };
}

export type TrainingActivities = ReturnType<typeof createTrainingActivities>;
