// The store layout: every key TruthGPT writes is built here, and every key it reads back by
// listing is parsed here, so the layout lives in one place. Every key is a pure function of ids,
// rounds, shards and steps, so a retried activity rewrites the same keys.
//
//   runs/<runId>/global/rNNNNNN/                 global checkpoint after round N (round 0: init)
//   runs/<runId>/shards/sK/rNNNNNN/step-NNNNNN/  a shard's resumable snapshot inside round N
//   runs/<runId>/shards/sK/rNNNNNN/final/        a shard's result of round N
//   runs/<runId>/models/<name>/                  published models (fp32 and passed variants)
//   runs/<runId>/rejected/<name>/                variants refused by their gate
//   runs/<runId>/report/                         report.html, report.json, loss-curves.svg
//   datasets/<name>-<spec hash>/                 token shards + tokenizer + dataset manifest
//   finetunes/<runId>/chunks/cNNNNNN/{final,step-NNNNNN}/   adapters + optimizer state
//   finetunes/<runId>/adapter/                   PEFT adapter_model.safetensors + adapter_config.json
//   finetunes/<runId>/merged/                    the base with the adapters folded in
//   lineages/<lineage>/<runId>/                  one record per successful fine-tune of a lineage
//   models/<name>/                               an imported model: a checkpoint (+ tokenizer.json)
//
// A prefix counts as written once its MANIFEST.json exists (infra/store-manifest.ts).

import { MANIFEST_NAME } from '../infra/store';

const pad = (n: number) => String(n).padStart(6, '0');

/** Training runs and datasets. */
export const keys = {
  globalRoot: (runId: string) => `runs/${runId}/global/`,
  global: (runId: string, round: number) => `runs/${runId}/global/r${pad(round)}`,
  shardRound: (runId: string, shard: number, round: number) => `runs/${runId}/shards/s${shard}/r${pad(round)}`,
  shardFinal: (runId: string, shard: number, round: number) => `${keys.shardRound(runId, shard, round)}/final`,
  shardProgress: (runId: string, shard: number, round: number, step: number) => `${keys.shardRound(runId, shard, round)}/${snapshotFolder(step)}`,
  dataset: (name: string, specHash: string) => `datasets/${name}-${specHash.slice(0, DATASET_HASH_CHARS)}`,
};

const DATASET_HASH_CHARS = 16;

/**
 * Whether `prefix` is a version of the dataset that `versionsPrefix` (`datasets/<name>-`) names:
 * exactly the name, then the spec hash (`datasets/fiction-<16 hex>`, not `datasets/fiction-extra-<hash>`).
 */
export function isDatasetVersionOf(prefix: string, versionsPrefix: string): boolean {
  return prefix.startsWith(versionsPrefix) && new RegExp(`^[0-9a-f]{${DATASET_HASH_CHARS}}$`).test(prefix.slice(versionsPrefix.length));
}

/** Fine-tunes and their lineages. */
export const ftKeys = {
  chunk: (runId: string, chunk: number) => `finetunes/${runId}/chunks/c${pad(chunk)}`,
  chunkFinal: (runId: string, chunk: number) => `${ftKeys.chunk(runId, chunk)}/final`,
  chunkProgress: (runId: string, chunk: number, step: number) => `${ftKeys.chunk(runId, chunk)}/${snapshotFolder(step)}`,
  adapter: (runId: string) => `finetunes/${runId}/adapter`,
  merged: (runId: string) => `finetunes/${runId}/merged`,
  lineage: (lineage: string) => `lineages/${lineage}/`,
  lineageRun: (lineage: string, runId: string) => `lineages/${lineage}/${runId}`,
};

/** Post-training outputs, by (run id, variant name). */
export const postKeys = {
  /** Published models (fp32 and every variant that passed its gate). */
  model: (runId: string, name: string) => `runs/${runId}/models/${name}`,
  /** Variants refused by their gate: kept for inspection, never published. */
  rejected: (runId: string, name: string) => `runs/${runId}/rejected/${name}`,
  report: (runId: string) => `runs/${runId}/report`,
};

/** Imported models (`truthgpt import`): each a checkpoint our readers load unchanged. */
export const modelKeys = {
  root: 'models/',
  model: (name: string) => `models/${name}`,
};

/**
 * Why `name` cannot name an imported model (`models/<name>`), or null when it can: the rules of a
 * run id (one key segment of A-Z a-z 0-9 . _ - = +).
 */
export function modelNameProblem(name: string): string | null {
  const p = runIdProblem(name);
  return p && p.replace('a run id is one name', 'a model name is one name').replace("the run's folder", "the model's folder");
}

const SNAPSHOT = 'step-';
const snapshotFolder = (step: number) => `${SNAPSHOT}${pad(step)}`;
/** Listing prefix of the snapshots under a shard/chunk base (`<base>/step-`). */
export const snapshotsUnder = (base: string) => `${base}/${SNAPSHOT}`;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const MANIFEST_SUFFIX = `/${escape(MANIFEST_NAME)}$`;
const GLOBAL_MANIFEST = new RegExp(`^(runs/([^/]+)/global/r(\\d+))${MANIFEST_SUFFIX}`);
const SNAPSHOT_MANIFEST = new RegExp(`^(.+/${SNAPSHOT}(\\d+))${MANIFEST_SUFFIX}`);
const IMPORTED_MANIFEST = new RegExp(`^(models/([^/]+))${MANIFEST_SUFFIX}`);

/** `models/<name>/MANIFEST.json` → the model's name and prefix; null for any other key. */
export function parseImportedManifestKey(key: string): { name: string; prefix: string } | null {
  const m = IMPORTED_MANIFEST.exec(key);
  return m ? { prefix: m[1]!, name: m[2]! } : null;
}

/** `runs/<runId>/global/rNNNNNN/MANIFEST.json` → its run, round and prefix; null for any other key. */
export function parseGlobalManifestKey(key: string): { runId: string; round: number; prefix: string } | null {
  const m = GLOBAL_MANIFEST.exec(key);
  return m ? { prefix: m[1]!, runId: m[2]!, round: Number(m[3]) } : null;
}

/** `<base>/step-NNNNNN/MANIFEST.json` → its step and prefix; null for any other key. */
export function parseSnapshotManifestKey(key: string): { step: number; prefix: string } | null {
  const m = SNAPSHOT_MANIFEST.exec(key);
  return m ? { prefix: m[1]!, step: Number(m[2]) } : null;
}

/** The prefix whose manifest `key` is (`<prefix>/MANIFEST.json`); null for any other key. */
export function manifestPrefix(key: string): string | null {
  return key.endsWith(`/${MANIFEST_NAME}`) ? key.slice(0, -MANIFEST_NAME.length - 1) : null;
}

/** The longest run id: it is one segment of every key the run writes. */
export const MAX_RUN_ID_LENGTH = 200;

/**
 * Why `id` cannot name a run (its keys are runs/<id>/..., finetunes/<id>/...), or null when it can:
 * one key segment of A-Z a-z 0-9 . _ - = +, not '.' or '..'.
 */
export function runIdProblem(id: string): string | null {
  if (id === '') return 'it is empty';
  if (id.length > MAX_RUN_ID_LENGTH) return `it is ${id.length} characters long, ${MAX_RUN_ID_LENGTH} at most`;
  const bad = /[^A-Za-z0-9._=+-]/u.exec(id);
  if (bad) {
    const shown = bad[0].trim() === '' ? `U+${bad[0].codePointAt(0)!.toString(16).padStart(4, '0')}` : `'${bad[0]}'`;
    return `it contains ${shown}; a run id is one name of A-Z a-z 0-9 . _ - = + (it names the run's folder in the store)`;
  }
  if (id === '.' || id === '..') return `'${id}' is not a name`;
  if (id.startsWith('-')) return "it starts with '-', which a command line reads as an option";
  return null;
}

/** Store keys allow [A-Za-z0-9._-/=+]; scheduled workflow ids carry a timestamp with ':'. */
export const keySafe = (id: string) => id.replace(/[^A-Za-z0-9._=+-]/g, '-');
