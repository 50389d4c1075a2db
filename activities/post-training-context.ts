// What every post-training activity (post-training.ts, evaluate-models.ts) works with: the store,
// cached shards, this worker's device, and the validation batches they all score.

import type { LmBatch } from '../engine/data/sampler';
import { lmEvalWindows } from '../engine/eval';
import type { GptConfig } from '../engine/models/gpt';
import type { SessionConfig } from '../engine/runtime';
import type { ArtifactStore } from '../infra/store';
import type { EvalSpec } from '../spec/post-training';
import type { DatasetRef, ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';

export interface PostTrainingDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
}

export interface PostTrainingContext {
  store: ArtifactStore;
  shards: ShardCache;
  deps: PostTrainingDeps;
  session(spec: EvalSpec): SessionConfig;
}

/** The first `eval.batches` validation batches: every variant and the gate score exactly these. */
export async function valBatches(p: PostTrainingContext, ds: DatasetRef, spec: EvalSpec, cfg: GptConfig): Promise<LmBatch[]> {
  const ids = await p.shards.split(p.store, ds, 'val');
  return failingAs(`eval.contextLength (validation split of ${ds.prefix})`, () => lmEvalWindows(ids, cfg.block_size, spec));
}
