// Checkpoint and dataset I/O for the training activities: where each artifact of a run lives in
// the store, and reading/writing the engine's checkpoint object there with every file verified.
// Errors are translated into the closed vocabulary (spec/errors.ts) so a corrupt or missing
// checkpoint fails the run at once, naming the file, instead of retrying forever.

import type { TensorData } from '../engine/graph/ir';
import { packCheckpoint, sha256, unpackCheckpoint, OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE, type Checkpoint, type CheckpointState } from '../engine/checkpoint/checkpoint';
import { SafetensorsError } from '../engine/checkpoint/safetensors';
import { shardTokens, type DatasetManifest } from '../engine/data/dataset';
import { IntegrityError, NotFoundError, type ArtifactStore, type Manifest } from '../infra/store';
import { failure } from '../spec/errors';

export const CHECKPOINT_FILES = [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE] as const;

const pad = (n: number) => String(n).padStart(6, '0');

/** Store layout of one run; every key is a pure function of (run id, round, shard, step). */
export const keys = {
  global: (runId: string, round: number) => `runs/${runId}/global/r${pad(round)}`,
  shardRound: (runId: string, shard: number, round: number) => `runs/${runId}/shards/s${shard}/r${pad(round)}`,
  shardFinal: (runId: string, shard: number, round: number) => `${keys.shardRound(runId, shard, round)}/final`,
  shardProgress: (runId: string, shard: number, round: number, step: number) => `${keys.shardRound(runId, shard, round)}/step-${pad(step)}`,
  dataset: (name: string, specHash: string) => `datasets/${name}-${specHash.slice(0, 16)}`,
};

/** A committed checkpoint as workflows see it: its prefix and each file's sha256. */
export interface CheckpointRef {
  prefix: string;
  files: Record<string, { sha256: string; size: number }>;
}

export function refOf(m: Manifest): CheckpointRef {
  return { prefix: m.prefix, files: Object.fromEntries(m.files.map((f) => [f.name, { sha256: f.sha256, size: f.size }])) };
}

/** Whatever went wrong reading a committed artifact, as a vocabulary failure when it is deterministic. */
export function translateReadError(err: unknown, what: string): unknown {
  if (err instanceof IntegrityError || err instanceof SafetensorsError) {
    return failure('CorruptCheckpoint', `${what}: ${err.message}`, { key: (err as IntegrityError).key ?? null });
  }
  if (err instanceof NotFoundError) return failure('MissingArtifact', `${what}: ${err.message}`, { key: err.key ?? null });
  if (err instanceof Error && /corrupt file|is missing|: sha256 /.test(err.message)) return failure('CorruptCheckpoint', `${what}: ${err.message}`);
  return err;
}

/** Reads and verifies (manifest sha256, then the checkpoint's own pins) a committed checkpoint. */
export async function readCheckpoint(store: ArtifactStore, prefix: string): Promise<Checkpoint> {
  try {
    const files = new Map<string, Uint8Array>();
    for (const name of CHECKPOINT_FILES) files.set(name, await store.getVerified(prefix, name));
    return unpackCheckpoint(files, prefix);
  } catch (err) {
    throw translateReadError(err, `checkpoint ${prefix}`);
  }
}

/** Tensors by name for a checkpoint file, shaped by `shapes`. */
export function toTensors(values: Record<string, Float32Array> | Map<string, Float32Array>, shapes: Map<string, number[]>): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  const entries = values instanceof Map ? [...values] : Object.entries(values);
  for (const [name, data] of entries) {
    const dims = shapes.get(name);
    if (!dims) throw new Error(`checkpoint tensor "${name}" has no known shape`);
    out.set(name, { dtype: 'float32', dims, data });
  }
  return out;
}

/** Float32 arrays by name from checkpoint tensors; a non-float32 tensor is a corrupt checkpoint. */
export function fromTensors(tensors: Map<string, TensorData>, where: string): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of tensors) {
    if (t.dtype !== 'float32') throw failure('CorruptCheckpoint', `${where}: tensor "${name}" is ${t.dtype}, expected float32`, { tensor: name });
    out.set(name, t.data as Float32Array);
  }
  return out;
}

export interface WriteCheckpoint {
  weights: Map<string, TensorData>;
  optimizer: Map<string, TensorData>;
  state: Omit<CheckpointState, 'files' | 'format'>;
}

/**
 * Packs and commits a checkpoint (manifest last). `meta(ref)` lands in the manifest, so an
 * activity can record its own result (which holds the ref) in the same atomic commit.
 */
export async function commitCheckpoint(
  store: ArtifactStore,
  prefix: string,
  ckpt: WriteCheckpoint,
  meta: (ref: CheckpointRef) => Record<string, unknown> = () => ({}),
): Promise<CheckpointRef> {
  const files = packCheckpoint(ckpt);
  const expected: CheckpointRef = { prefix, files: Object.fromEntries([...files].map(([n, b]) => [n, { sha256: sha256(b), size: b.length }])) };
  const ref = refOf(await store.commit(prefix, Object.fromEntries(files), meta(expected)));
  for (const [n, f] of Object.entries(expected.files)) {
    if (ref.files[n]?.sha256 !== f.sha256) throw new Error(`commit ${prefix}: ${n} was stored with sha256 ${ref.files[n]?.sha256}, packed as ${f.sha256}`);
  }
  return ref;
}

/** Where a prepared dataset lives and what the activities need to read it. */
export interface DatasetRef {
  prefix: string;
  specHash: string;
  /** sha256 over the sha256 of every shard and the tokenizer: identifies the content. */
  contentHash: string;
  vocabSize: number;
  eot: number;
  dtype: DatasetManifest['dtype'];
  train: { file: string; tokens: number }[];
  val: { file: string; tokens: number }[];
  documents: number;
  reused: boolean;
}

/** Token ids of shard files, cached by (prefix, file): every round reads the same shard. */
export class ShardCache {
  private readonly cache = new Map<string, Uint16Array | Uint32Array>();
  constructor(private readonly limit = 8) {}

  async get(store: ArtifactStore, ds: DatasetRef, file: string): Promise<Uint16Array | Uint32Array> {
    const key = `${ds.prefix}/${file}@${ds.contentHash}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    let bytes: Buffer;
    try {
      bytes = await store.getVerified(ds.prefix, file);
    } catch (err) {
      throw translateReadError(err, `dataset ${ds.prefix}`);
    }
    const ids = shardTokens(bytes, ds.dtype, `${ds.prefix}/${file}`);
    if (this.cache.size >= this.limit) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, ids);
    return ids;
  }

  /** Every non-empty shard of a split as one id array (a single shard is returned as it is). */
  async split(store: ArtifactStore, ds: DatasetRef, split: 'train' | 'val'): Promise<Uint16Array | Uint32Array> {
    const parts = await Promise.all(ds[split].filter((s) => s.tokens > 0).map((s) => this.get(store, ds, s.file)));
    if (parts.length === 1) return parts[0];
    const ids = new (parts[0] instanceof Uint32Array ? Uint32Array : Uint16Array)(parts.reduce((n, p) => n + p.length, 0));
    let off = 0;
    for (const p of parts) {
      ids.set(p, off);
      off += p.length;
    }
    return ids;
  }
}

/**
 * The promise cached under `key`, or `make()`'s, kept until it rejects (so the next call retries);
 * past `limit` entries the oldest goes. Compiled sessions and loaded bases are cached this way.
 */
export function cachedPromise<T>(cache: Map<string, Promise<T>>, key: string, limit: number, make: () => Promise<T>): Promise<T> {
  let p = cache.get(key);
  if (!p) {
    p = make();
    p.catch(() => cache.delete(key));
    if (cache.size >= limit) cache.delete(cache.keys().next().value!);
    cache.set(key, p);
  }
  return p;
}
