// Checkpoints in the store: committing the engine's checkpoint object (manifest last), reading it
// back with every file verified, and finding the newest committed one by listing. Errors become
// the closed vocabulary (spec/errors.ts), so a corrupt or missing checkpoint fails the run at
// once, naming the file, instead of retrying forever.

import type { TensorData } from '../engine/graph/ir';
import { packCheckpoint, parseCheckpointState, sha256, unpackCheckpoint, OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE, type Checkpoint, type CheckpointState } from '../engine/checkpoint/checkpoint';
import { StoredGptConfigSchema, type GptConfig } from '../engine/models/gpt';
import type { ArtifactStore, Manifest } from '../infra/store';
import { failure } from '../spec/errors';
import { asFailure } from './errors';
import { keys, parseGlobalManifestKey, parseSnapshotManifestKey, snapshotsUnder } from './keys';

export const CHECKPOINT_FILES = [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE] as const;

/** A committed checkpoint as workflows see it: its prefix and each file's sha256. */
export interface CheckpointRef {
  prefix: string;
  files: Record<string, { sha256: string; size: number }>;
}

export function refOf(m: Manifest): CheckpointRef {
  return { prefix: m.prefix, files: Object.fromEntries(m.files.map((f) => [f.name, { sha256: f.sha256, size: f.size }])) };
}

/** Reads and verifies (manifest sha256, then the checkpoint's own pins) a committed checkpoint. */
export async function readCheckpoint(store: ArtifactStore, prefix: string): Promise<Checkpoint> {
  try {
    const files = new Map<string, Uint8Array>();
    for (const name of CHECKPOINT_FILES) files.set(name, await store.getVerified(prefix, name));
    return unpackCheckpoint(files, prefix);
  } catch (err) {
    throw asFailure(err, `checkpoint ${prefix}`);
  }
}

/**
 * The checkpoint document alone (config, step, pins), verified against the manifest, without
 * reading the tensor files; null when nothing is committed under `prefix`.
 */
export async function readCheckpointState(store: ArtifactStore, prefix: string): Promise<{ manifest: Manifest; state: CheckpointState } | null> {
  try {
    const manifest = await store.readManifest(prefix);
    if (!manifest) return null;
    if (!manifest.files.some((f) => f.name === STATE_FILE)) throw failure('InvalidInput', `${prefix} is not a checkpoint: its manifest lists no ${STATE_FILE}`);
    return { manifest, state: parseCheckpointState(await store.getVerified(prefix, STATE_FILE), prefix) };
  } catch (err) {
    throw asFailure(err, `checkpoint ${prefix}`);
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
  state: Checkpoint['state'];
}

/**
 * Packs and commits a checkpoint (manifest last). `meta(ref)` lands in the manifest, so an
 * activity can record its own result (which holds the ref) in the same atomic commit. `extra`
 * files (an imported model's tokenizer.json) are committed beside the checkpoint's own.
 */
export async function commitCheckpoint(
  store: ArtifactStore,
  prefix: string,
  ckpt: WriteCheckpoint,
  meta: (ref: CheckpointRef) => Record<string, unknown> = () => ({}),
  extra: Map<string, Uint8Array> = new Map(),
): Promise<CheckpointRef> {
  const files = packCheckpoint(ckpt);
  for (const [name, bytes] of extra) {
    if (files.has(name)) throw new Error(`commit ${prefix}: extra file ${name} would replace the checkpoint's own`);
    files.set(name, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  const expected: CheckpointRef = { prefix, files: Object.fromEntries([...files].map(([n, b]) => [n, { sha256: sha256(b), size: b.length }])) };
  const ref = refOf(await store.commit(prefix, Object.fromEntries(files), meta(expected)));
  for (const [n, f] of Object.entries(expected.files)) {
    if (ref.files[n]?.sha256 !== f.sha256) throw new Error(`commit ${prefix}: ${n} was stored with sha256 ${ref.files[n]?.sha256}, packed as ${f.sha256}`);
  }
  return ref;
}

/** The newest committed snapshot under `base` (`<base>/step-NNNNNN`), found by listing its keys. */
export async function latestSnapshot(store: ArtifactStore, base: string): Promise<{ step: number; prefix: string } | null> {
  let best: { step: number; prefix: string } | null = null;
  for (const o of await store.list(snapshotsUnder(base))) {
    const s = parseSnapshotManifestKey(o.key);
    if (s && (!best || s.step > best.step)) best = s;
  }
  return best;
}

/** The rounds of a run that have a committed global checkpoint, newest first. */
export async function committedRounds(store: ArtifactStore, runId: string): Promise<number[]> {
  const rounds: number[] = [];
  for (const o of await store.list(keys.globalRoot(runId))) {
    const g = parseGlobalManifestKey(o.key);
    if (g && g.runId === runId) rounds.push(g.round);
  }
  return rounds.sort((a, b) => b - a);
}

/** The GPT config and float weights of a committed training checkpoint. */
export async function checkpointWeights(store: ArtifactStore, prefix: string): Promise<{ config: GptConfig; weights: Map<string, Float32Array> }> {
  const ck = await readCheckpoint(store, prefix);
  if (ck.state.family && ck.state.family !== 'gpt') throw failure('InvalidInput', `checkpoint ${prefix}: a ${ck.state.family} model, not a GPT (only GPT has an inference exporter and a LoRA base here)`);
  const parsed = StoredGptConfigSchema.safeParse(ck.state.modelConfig);
  if (!parsed.success) {
    throw failure('InvalidInput', `checkpoint ${prefix}: modelConfig is not a GPT config (only GPT has an inference exporter): ${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`);
  }
  return { config: parsed.data, weights: fromTensors(ck.weights, prefix) };
}


/** The family, stored config and float weights of any committed checkpoint (GPT, BERT, T5). */
export async function checkpointWeightsAnyFamily(store: ArtifactStore, prefix: string): Promise<{ family: string; config: Record<string, unknown>; weights: Map<string, Float32Array> }> {
  const ck = await readCheckpoint(store, prefix);
  return { family: ck.state.family ?? 'gpt', config: ck.state.modelConfig, weights: fromTensors(ck.weights, prefix) };
}
