// Pipeline activities: what a pipeline needs beyond its child workflows. `locateCheckpoint` finds
// where an earlier, failed run's training can pick up: its newest committed global checkpoint and
// the shard results that produced it (their inner optimizer state carries into the next round).
// Only committed artifacts count (manifest written last), so whatever the crash left half-written
// is ignored.

import { STATE_FILE } from '../engine/checkpoint/checkpoint';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { committedRounds, refOf, type CheckpointRef } from '../artifacts/checkpoints';
import { asFailure } from '../artifacts/errors';
import { keys } from '../artifacts/keys';

export interface PipelineDeps {
  store: ArtifactStore;
}

export interface LocateCheckpointInput {
  /** Training run ids to search, newest first (a retry of a retry searches its whole chain). */
  runIds: string[];
  /** W of the spec that will resume: one previous-round shard result per worker. */
  workers: number;
}

/** Where a resumed trainingWorkflow starts: global checkpoint r<round> and the shards of round-1. */
export interface ResumePoint {
  runId: string;
  round: number;
  global: CheckpointRef;
  previous: (CheckpointRef | null)[];
  bestValLoss: number | null;
}

export function createPipelineActivities(deps: PipelineDeps) {
  const { store } = deps;
  return {
    /** The newest committed global checkpoint over `runIds` (first run that has one wins). */
    async locateCheckpoint(input: LocateCheckpointInput): Promise<ResumePoint | null> {
      for (const runId of input.runIds) {
        const rounds = await committedRounds(store, runId);
        if (!rounds.length) continue;
        const round = rounds[0];
        const prefix = keys.global(runId, round);
        const manifest = await store.readManifest(prefix);
        if (!manifest) continue;
        let state: { round?: number; bestValLoss?: number | null };
        try {
          state = JSON.parse((await store.getVerified(prefix, STATE_FILE)).toString('utf8'));
        } catch (err) {
          throw asFailure(err, `checkpoint ${prefix}`);
        }
        if (state.round !== round) throw failure('CorruptCheckpoint', `checkpoint ${prefix}: ${STATE_FILE} says round ${state.round}, its key says round ${round}`, { key: prefix });
        const previous: (CheckpointRef | null)[] = [];
        for (let shard = 0; shard < input.workers; shard++) {
          const m = round > 0 ? await store.readManifest(keys.shardFinal(runId, shard, round - 1)) : null;
          if (round > 0 && !m) {
            throw failure('InvalidConfig', `spec.training.workers: run ${runId} has no result for shard ${shard} of round ${round - 1}; resume with the workers it was trained with`, { runId, shard });
          }
          previous.push(m ? refOf(m) : null);
        }
        return { runId, round, global: refOf(manifest), previous, bestValLoss: state.bestValLoss ?? null };
      }
      return null;
    },
  };
}

export type PipelineActivities = ReturnType<typeof createPipelineActivities>;
