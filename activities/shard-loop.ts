// The resumable inner loop shared by trainShard (pretraining) and trainAdapter (LoRA): find the
// resume point, run the steps with snapshots and heartbeats, map a NaN loss into the error
// vocabulary, commit the final checkpoint with the activity's result, drop the snapshots.
//
// Snapshots of one span (a round of one shard, or a fine-tune chunk) live at
// `<snapshots>/step-NNNNNN`, the final result at `finalPrefix`; both are committed manifest last,
// so a crash at any point leaves either nothing or a readable checkpoint behind.

import { Context } from '@temporalio/activity';
import { beat, whileBeating } from './heartbeat';
import { releaseDevice } from './device';

import type { TensorData } from '../engine/graph/ir';
import { NonFiniteLossError } from '../engine/runtime';
import { paramShapes, runShard, stateShapes, type CheckpointPolicy, type CompiledTrainStep, type ShardSnapshot, type ShardStepMetrics } from '../engine/train/shard';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { commitCheckpoint, fromTensors, latestSnapshot, readCheckpoint, toTensors, type CheckpointRef, type WriteCheckpoint } from '../artifacts/checkpoints';
import { asFailure } from '../artifacts/errors';
import { ftKeys } from '../artifacts/keys';
import type { TensorCache } from '../artifacts/tensor-cache';

/** What a shard-loop activity heartbeats: the next step, and the newest snapshot it committed. */
export interface HeartbeatDetails {
  step: number;
  checkpointKey: string | null;
}

/** What the loop measured, for the activity to build its result from. */
export interface ShardLoopRun {
  history: ShardStepMetrics[];
  /** The step this attempt resumed from (null: started at the span's first step). */
  resumedFrom: number | null;
  checkpointsWritten: number;
  trainMs: number;
}

export interface ShardLoop<R extends { checkpoint: CheckpointRef }> {
  /** Names the activity and span in error messages, e.g. `trainShard shard 1 round 2`. */
  who: string;
  /** What one activity's steps are called in errors: `round` or `chunk`. */
  span: string;
  startStep: number;
  endStep: number;
  /** The prefix under which this span's `step-NNNNNN` snapshots are committed. */
  snapshots: string;
  snapshotKey(step: number): string;
  finalPrefix: string;
  compiled: Pick<CompiledTrainStep, 'step' | 'runner' | 'recycle'>;
  /** The starting point when no snapshot of this span exists. */
  fresh(): Promise<ShardSnapshot>;
  ids(): Promise<Uint16Array | Uint32Array>;
  batches: { seed: number; shard: number; batchSize: number; contextLength: number };
  /** Feeds of a step for models other than GPT language models (runShard's `batch`); built after `ids()`. */
  batch?(ids: Uint16Array | Uint32Array): Promise<(step: number) => Record<string, TensorData>>;
  policy: CheckpointPolicy;
  /** The checkpoint state recorded with a snapshot (or the final checkpoint) at `step`. */
  ckptState(step: number): WriteCheckpoint['state'];
  /** For the NonFiniteLoss failure: what the checkpoints hold, where they are before the first snapshot, and extra details. */
  nonFinite: { what: string; initial: string; details: Record<string, unknown> };
  /** The activity's result (its `checkpoint` is filled in by the final commit). */
  result(run: ShardLoopRun): Omit<R, 'checkpoint'>;
  /**
   * What the final checkpoint holds instead of the weights (outer.compression: an empty weights
   * file and the compressed delta as an extra file); absent: the weights.
   */
  finalFiles?(params: Record<string, Float32Array>): Promise<{ weights: Map<string, TensorData>; extra: Map<string, Uint8Array> }>;
  /**
   * Keep the final checkpoint's optimizer state here: the next round of this shard starts from it.
   * Its weights are not kept: the aggregator reads them once, in the CPU worker's process, and
   * here they would push the optimizer states out of the cache (4 gpt2-small shards on one worker:
   * 4 × 1.49 GB of results a round against a 6 GiB cache on a 24 GiB machine).
   */
  cache?: TensorCache;
  /**
   * Keep the final weights in `cache` too: this process may run the round's aggregation itself
   * (trainShard's `aggregate`), which then folds them from memory.
   */
  keepWeights?: boolean;
  /** Measure the transfers: the returned result (not the one recorded in the manifest) gets `io`. */
  io?: { readMs: number; bytesRead: number };
}

/** Where a shard's time outside its training loop went (this attempt only). */
export interface ShardIo {
  /** Reading the start point (global weights, carried optimizer state, data shard), ms. */
  readMs: number;
  /** Bytes read from the store for it (files already in memory by sha256 are not read). */
  bytesRead: number;
  /** Serializing and hashing the final checkpoint, ms. */
  packMs: number;
  /** Uploading it and committing its manifest, ms. */
  uploadMs: number;
  bytesWritten: number;
}

/**
 * Runs [startStep, endStep) from the newest snapshot (or `fresh()`), heartbeating
 * `{ step, checkpointKey }`, and commits the result at `finalPrefix`.
 * @example return runHeartbeatingShard(store, { who, span: 'round', startStep, endStep, ... })
 */
export async function runHeartbeatingShard<R extends { checkpoint: CheckpointRef }>(store: ArtifactStore, o: ShardLoop<R>): Promise<R> {
  const ctx = Context.current();
  const { who, startStep, endStep } = o;
  const pShapes = paramShapes(o.compiled.step);
  const sShapes = stateShapes(o.compiled.step);

  // Resume point: the newer of the last heartbeat's snapshot and the newest committed one
  // (heartbeats are throttled, so the store may know a later snapshot than the server).
  const hb = ctx.info.heartbeatDetails as HeartbeatDetails | undefined;
  const listed = await latestSnapshot(store, o.snapshots);
  const resumeFrom = listed && (!hb?.checkpointKey || listed.step >= hb.step) ? listed.prefix : (hb?.checkpointKey ?? null);
  let init: ShardSnapshot;
  let resumedFrom: number | null = null;
  const tRead = performance.now();
  if (resumeFrom) {
    const ck = await readCheckpoint(store, resumeFrom);
    init = { step: ck.state.step, params: Object.fromEntries(fromTensors(ck.weights, resumeFrom)), state: Object.fromEntries(fromTensors(ck.optimizer, resumeFrom)) };
    resumedFrom = init.step;
    if (init.step < startStep || init.step > endStep) throw failure('CorruptCheckpoint', `${who}: snapshot ${resumeFrom} is at step ${init.step}, outside this ${o.span}'s steps ${startStep}..${endStep}`);
  } else {
    init = await o.fresh();
  }
  const ids = await o.ids();
  const readMs = performance.now() - tRead;

  const batch = o.batch ? await o.batch(ids) : undefined;
  const runner = o.compiled.runner(init);
  let lastKey: string | null = resumeFrom;
  const t0 = performance.now();
  let res;
  try {
    res = await runShard({
      runner,
      ids,
      ...o.batches,
      ...(batch ? { batch } : {}),
      endStep,
      checkpoint: {
        ...o.policy,
        save: async (s) => {
          const prefix = o.snapshotKey(s.step);
          await whileBeating({ step: s.step, checkpointKey: lastKey } satisfies HeartbeatDetails, () =>
            commitCheckpoint(store, prefix, { weights: toTensors(s.params, pShapes), optimizer: toTensors(s.state, sShapes), state: o.ckptState(s.step) }),
          );
          lastKey = prefix;
          beat({ step: s.step, checkpointKey: prefix } satisfies HeartbeatDetails);
        },
      },
      // Between steps: alive, and stop here if the run was cancelled (snapshots already committed stay).
      onStep: (m) => beat({ step: m.step + 1, checkpointKey: lastKey } satisfies HeartbeatDetails),
    });
  } catch (err) {
    // Only a NaN loss is final here: a failed snapshot upload is worth another attempt.
    if (!(err instanceof NonFiniteLossError)) throw err;
    const { what, initial, details } = o.nonFinite;
    throw asFailure(err, who, { details, note: `${what} before that step are in ${lastKey ?? initial}` });
  }
  const trainMs = Math.round(performance.now() - t0);
  // `checkpoint` first: the result recorded in the manifest keeps the field order it always had.
  const result = { checkpoint: { prefix: o.finalPrefix, files: {} }, ...o.result({ history: res.history, resumedFrom, checkpointsWritten: res.checkpoints.length, trainMs }) } as R;
  const timing = { packMs: 0, uploadMs: 0, bytes: 0 };
  // Packing and uploading the result was a silence of 144 s for 57M parameters (weights and AdamW
  // state) under load, past a 60 s heartbeat timeout: heartbeat meanwhile.
  const details: HeartbeatDetails = { step: endStep, checkpointKey: lastKey };
  const t1 = performance.now();
  // Copies out of the runner: from here on this attempt needs no device, and the GPU worker may
  // start its next shard's steps while this one packs and uploads (activities/device.ts).
  const [params, optimizer] = [runner.getParams(), runner.getState()];
  o.compiled.recycle?.(runner);
  releaseDevice();
  const files = o.finalFiles ? await whileBeating(details, () => o.finalFiles!(params)) : { weights: toTensors(params, pShapes), extra: new Map<string, Uint8Array>() };
  timing.packMs += performance.now() - t1;
  const final = { weights: files.weights, optimizer: toTensors(optimizer, sShapes), state: o.ckptState(endStep) };
  result.checkpoint = await whileBeating(details, () => commitCheckpoint(store, o.finalPrefix, final, (ref) => ({ result: { ...result, checkpoint: ref } }), files.extra, { cache: o.cache, cacheWeights: o.keepWeights ?? false, timing }));
  // In-span snapshots are superseded by the committed result.
  await store.deletePrefix(`${o.snapshots}/step-`).catch(() => 0);
  if (!o.io) return result;
  const io: ShardIo = { readMs: Math.round(o.io.readMs + readMs), bytesRead: o.io.bytesRead, packMs: Math.round(timing.packMs), uploadMs: Math.round(timing.uploadMs), bytesWritten: timing.bytes };
  return { ...result, io };
}

/**
 * Where fine-tune chunk `chunk` of `runId` trains (trainAdapter and trainClassifierLora): steps
 * [chunk·S, min((chunk+1)·S, steps)) for S = stepsPerActivity, its snapshots under
 * finetunes/<runId>/chunks/cNNNNNN and its result at …/final, as runHeartbeatingShard takes them.
 * @example const at = adapterChunk(runId, chunk, spec.train); return runHeartbeatingShard(store, { ...at, who, compiled, ... })
 */
export function adapterChunk(runId: string, chunk: number, train: { steps: number; stepsPerActivity: number }): Pick<ShardLoop<never>, 'span' | 'startStep' | 'endStep' | 'snapshots' | 'snapshotKey' | 'finalPrefix'> {
  const S = train.stepsPerActivity;
  return {
    span: 'chunk',
    startStep: chunk * S,
    endStep: Math.min((chunk + 1) * S, train.steps),
    snapshots: ftKeys.chunk(runId, chunk),
    snapshotKey: (step) => ftKeys.chunkProgress(runId, chunk, step),
    finalPrefix: ftKeys.chunkFinal(runId, chunk),
  };
}

/**
 * A chunked run's starting point from the chunk before it (its committed final checkpoint):
 * trainable params and optimizer state, at `step`. LoRA chunks of GPT and of BERT classifiers
 * resume this way.
 */
export async function fromPreviousChunk(store: ArtifactStore, previous: CheckpointRef, step: number): Promise<ShardSnapshot> {
  const ck = await readCheckpoint(store, previous.prefix);
  return { step, params: Object.fromEntries(fromTensors(ck.weights, previous.prefix)), state: Object.fromEntries(fromTensors(ck.optimizer, previous.prefix)) };
}
