// What every post-training activity (post-training.ts, evaluate-models.ts, classifier-post.ts, t5-post.ts) works with: the store,
// cached shards, this worker's device, and the validation batches they all score.

import { lmEvalWindows, type EvalWindows } from '../engine/eval';
import type { GptConfig } from '../engine/models/gpt';
import type { SessionConfig } from '../engine/runtime';
import type { ArtifactStore } from '../infra/store';
import type { EvalSpec } from '../spec/post-training';
import type { DatasetRef, ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { postKeys } from '../artifacts/keys';

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

/** What perplexity is computed on: the validation batches and how much of the split they cover. */
export interface ValWindows {
  /** Made on demand at each iteration: a whole split is never held as batches at once. */
  batches: EvalWindows;
  /** Target tokens in `batches`. */
  tokens: number;
  /** Target tokens in the whole split (its tokens minus the first): `tokens` equals it unless `eval.batches` caps it. */
  splitTokens: number;
}

/** The validation windows of `eval` (the whole split by default): every variant and the gate score exactly these. */
export async function valBatches(p: PostTrainingContext, ds: DatasetRef, spec: EvalSpec, cfg: GptConfig): Promise<ValWindows> {
  const ids = await p.shards.split(p.store, ds, 'val');
  const batches = await failingAs(`eval.contextLength (validation split of ${ds.prefix})`, () => lmEvalWindows(ids, cfg.block_size, spec));
  return { batches, tokens: batches.tokens, splitTokens: ids.length - 1 };
}

/**
 * A gated variant an earlier attempt already committed, published or rejected (the record under
 * `metaKey` in its manifest), so a retry returns it instead of quantizing again; null when none is.
 */
export async function committedVariant<T>(store: ArtifactStore, runId: string, name: string, metaKey: string): Promise<T | null> {
  for (const prefix of [postKeys.model(runId, name), postKeys.rejected(runId, name)]) {
    const done = await store.readManifest(prefix);
    if (done?.meta[metaKey]) return done.meta[metaKey] as T;
  }
  return null;
}
