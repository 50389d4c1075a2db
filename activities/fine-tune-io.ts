// Store I/O of fine-tunes: where each artifact lives, which dataset version is the newest under a
// prefix, what the last successful fine-tune of a lineage used, and loading the base model.
//
//   finetunes/<runId>/chunks/cNNNNNN/{final,step-NNNNNN}/   adapters + optimizer state (checkpoint files)
//   finetunes/<runId>/adapter/    adapter_model.safetensors + adapter_config.json (PEFT layout)
//   finetunes/<runId>/merged/     the base with the adapters folded in (checkpoint files, or model.onnx)
//   lineages/<lineage>/<runId>/   one record per successful fine-tune of a lineage (manifest meta)
//
// A "dataset version" is any dataset committed by prepareDataset (its manifest carries a
// DatasetRef), so `datasets/fiction-` names every version of the dataset called "fiction".

import { sha256 } from '../engine/checkpoint/checkpoint';
import { GptConfigSchema } from '../engine/models/gpt';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, checkAdapterAgainstPlan, loadAdapter, type LoraPlan } from '../engine/lora';
import { MANIFEST_NAME, type ArtifactStore, type Manifest } from '../infra/store';
import { failure } from '../spec/errors';
import type { BaseModel } from '../spec/lora';
import { fromTensors, readCheckpoint, refOf, translateReadError, type CheckpointRef, type DatasetRef } from './training-io';

const pad = (n: number) => String(n).padStart(6, '0');

export const ftKeys = {
  chunk: (runId: string, chunk: number) => `finetunes/${runId}/chunks/c${pad(chunk)}`,
  chunkFinal: (runId: string, chunk: number) => `${ftKeys.chunk(runId, chunk)}/final`,
  chunkProgress: (runId: string, chunk: number, step: number) => `${ftKeys.chunk(runId, chunk)}/step-${pad(step)}`,
  adapter: (runId: string) => `finetunes/${runId}/adapter`,
  merged: (runId: string) => `finetunes/${runId}/merged`,
  lineage: (lineage: string) => `lineages/${lineage}/`,
  lineageRun: (lineage: string, runId: string) => `lineages/${lineage}/${runId}`,
};

/** What a lineage remembers of one successful fine-tune. */
export interface LineageRecord {
  runId: string;
  dataset: { prefix: string; contentHash: string };
  adapter: CheckpointRef;
  merged: CheckpointRef;
  valLossAfter: number;
  committedAt: string;
}

/** The base a fine-tune adapted, with every file's sha256 (a fine-tune must never change them). */
export interface BaseRef {
  kind: BaseModel['kind'];
  /** Checkpoint prefix, or the .onnx key. */
  location: string;
  files: Record<string, { sha256: string; size: number }>;
}

/** Every committed manifest directly or deeper under `prefix`, newest commit first (ties: by key). */
async function manifestsUnder(store: ArtifactStore, prefix: string): Promise<Manifest[]> {
  const found: Manifest[] = [];
  for (const o of await store.list(prefix)) {
    if (!o.key.endsWith(`/${MANIFEST_NAME}`)) continue;
    const m = await store.readManifest(o.key.slice(0, -MANIFEST_NAME.length - 1));
    if (m) found.push(m);
  }
  return found.sort((a, b) => (a.committedAt === b.committedAt ? (a.prefix < b.prefix ? 1 : -1) : a.committedAt < b.committedAt ? 1 : -1));
}

/** The most recently committed dataset whose prefix starts with `prefix`; null when there is none. */
export async function newestDataset(store: ArtifactStore, prefix: string): Promise<DatasetRef | null> {
  for (const m of await manifestsUnder(store, prefix)) {
    const ref = m.meta.ref as DatasetRef | undefined;
    if (m.meta.specHash && ref?.contentHash) return { ...ref, reused: true };
  }
  return null;
}

/** A committed dataset by its exact prefix; names the prefix when it is missing or not a dataset. */
export async function datasetAt(store: ArtifactStore, prefix: string): Promise<DatasetRef> {
  const m = await store.readManifest(prefix);
  if (!m) throw failure('MissingArtifact', `spec.dataset.prefix: no committed dataset at ${prefix}`, { key: prefix });
  const ref = m.meta.ref as DatasetRef | undefined;
  if (!ref?.contentHash) throw failure('InvalidInput', `spec.dataset.prefix: ${prefix} is committed but is not a prepared dataset (its manifest has no dataset ref)`);
  return { ...ref, reused: true };
}

/** The newest record of a lineage, or null before its first success. */
export async function lastSuccessful(store: ArtifactStore, lineage: string): Promise<LineageRecord | null> {
  const [m] = await manifestsUnder(store, ftKeys.lineage(lineage));
  return m ? (m.meta.record as LineageRecord) : null;
}

export async function recordSuccess(store: ArtifactStore, lineage: string, record: Omit<LineageRecord, 'committedAt'>): Promise<LineageRecord> {
  const prefix = ftKeys.lineageRun(lineage, record.runId);
  const done = await store.readManifest(prefix);
  if (done) return done.meta.record as LineageRecord;
  const m = await store.commit(prefix, {}, { record: { ...record, committedAt: new Date().toISOString() } });
  // committedAt of the record is the manifest's own, so ordering by either agrees.
  const committed = { ...record, committedAt: m.committedAt };
  return committed;
}

/** Loaded base: a GPT checkpoint's config and weights, or the bytes of an .onnx file. */
export type LoadedBase =
  | { kind: 'checkpoint'; ref: BaseRef; config: ReturnType<typeof GptConfigSchema.parse>; weights: Map<string, Float32Array> }
  | { kind: 'onnx'; ref: BaseRef; bytes: Uint8Array };

export async function loadBase(store: ArtifactStore, base: BaseModel): Promise<LoadedBase> {
  if (base.kind === 'checkpoint') {
    const m = await store.readManifest(base.prefix);
    if (!m) throw failure('MissingArtifact', `spec.base.prefix: no committed checkpoint at ${base.prefix}`, { key: base.prefix });
    const ck = await readCheckpoint(store, base.prefix);
    const cfg = GptConfigSchema.safeParse(ck.state.modelConfig);
    if (!cfg.success) throw failure('InvalidInput', `spec.base.prefix: checkpoint ${base.prefix} does not hold a GPT model config (${cfg.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`);
    return { kind: 'checkpoint', ref: { kind: 'checkpoint', location: base.prefix, files: refOf(m).files }, config: cfg.data, weights: fromTensors(ck.weights, base.prefix) };
  }
  try {
    const bytes = await store.get(base.key);
    const name = base.key.split('/').pop()!;
    return { kind: 'onnx', ref: { kind: 'onnx', location: base.key, files: { [name]: { sha256: sha256(bytes), size: bytes.length } } }, bytes };
  } catch (err) {
    throw translateReadError(err, `spec.base.key ${base.key}`);
  }
}

/** Reads committed PEFT adapter files and checks them against the plan; errors name the prefix. */
export async function readAdapter(store: ArtifactStore, prefix: string, plan: LoraPlan): Promise<Map<string, Float32Array>> {
  const files = new Map<string, Uint8Array>();
  try {
    for (const name of [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]) files.set(name, await store.getVerified(prefix, name));
  } catch (err) {
    throw translateReadError(err, `adapter ${prefix}`);
  }
  try {
    const loaded = loadAdapter(files, { family: plan.config.family, where: prefix });
    checkAdapterAgainstPlan(loaded, plan, prefix);
    return loaded.tensors;
  } catch (err) {
    throw failure('InvalidInput', `adapter ${prefix} does not fit this base and LoRA config: ${(err as Error).message}`);
  }
}

/** Store keys allow [A-Za-z0-9._-/=+]; scheduled workflow ids carry a timestamp with ':'. */
export const keySafe = (id: string) => id.replace(/[^A-Za-z0-9._=+-]/g, '-');
