// Checkpoints in the store: committing the engine's checkpoint object (manifest last), reading it
// back with every file verified, and finding the newest committed one by listing. Errors become
// the closed vocabulary (spec/errors.ts), so a corrupt or missing checkpoint fails the run at
// once, naming the file, instead of retrying forever.

import type { TensorData } from '../engine/graph/ir';
import { checkpointDocument, packCheckpointHashed, parseCheckpointState, sha256, OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE, WEIGHTS_METADATA, type Checkpoint, type CheckpointState } from '../engine/checkpoint/checkpoint';
import { forEachSafetensor, readSafetensors } from '../engine/checkpoint/safetensors';
import { EngineError } from '../engine/errors';
import { StoredGptConfigSchema, type GptConfig } from '../engine/models/gpt';
import { MemoryVariantSchema, type MemoryVariant } from '../engine/models/memory-slots';
import { CommitConflictError, type ArtifactStore, type CommitFile, type Manifest } from '../infra/store';
import { failure } from '../spec/errors';
import { asFailure } from './errors';
import { keys, parseGlobalManifestKey, parseSnapshotManifestKey, snapshotsUnder } from './keys';
import type { TensorCache } from './tensor-cache';

export const CHECKPOINT_FILES = [WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE] as const;

/**
 * A shard's pseudo-gradient (global − local) when `outer.compression` is fp16 or int8: its round
 * result then holds this file beside the optimizer state, and an empty model.safetensors.
 */
export const DELTA_FILE = 'delta.safetensors';

/** The tensors of one extra safetensors file of a committed checkpoint (DELTA_FILE), verified. */
export async function readTensorFile(store: ArtifactStore, prefix: string, name: string): Promise<Map<string, TensorData>> {
  try {
    return readSafetensors(await store.getVerified(prefix, name), `${prefix}/${name}`).tensors;
  } catch (err) {
    throw asFailure(err, `checkpoint ${prefix}`);
  }
}

/**
 * One tensor file of a committed checkpoint streamed tensor by tensor into `each` (forEachSafetensor)
 * instead of read whole: for files read once and folded, such as a shard's weights in the aggregator.
 * The manifest must list the sha256 `ref` recorded, and the bytes must match it; that is known only
 * at the end of the stream, so a caller folds into state it throws away when this rejects. Errors of
 * the store or the file become failures naming the checkpoint; those `each` throws pass unchanged.
 */
export async function streamTensorFile(store: ArtifactStore, ref: CheckpointRef, name: string, each: (name: string, tensor: TensorData) => void): Promise<void> {
  let inEach = false;
  try {
    const manifest = await store.readManifest(ref.prefix);
    const entry = manifest?.files.find((f) => f.name === name);
    const want = ref.files[name];
    if (entry && want && (entry.sha256 !== want.sha256 || entry.size !== want.size)) throw new EngineError('corrupt', `${ref.prefix}/${name}: the manifest lists sha256 ${entry.sha256}, the round recorded ${want.sha256} (replaced file)`);
    const stream = await store.getListedStream(manifest, ref.prefix, name);
    await forEachSafetensor(stream, entry!.size, `${ref.prefix}/${name}`, (n, t) => {
      inEach = true;
      each(n, t);
      inEach = false;
    });
  } catch (err) {
    if (inEach) throw err;
    throw asFailure(err, `checkpoint ${ref.prefix}`);
  }
}

/** A committed checkpoint as workflows see it: its prefix and each file's sha256. */
export interface CheckpointRef {
  prefix: string;
  files: Record<string, { sha256: string; size: number }>;
}

export function refOf(m: Manifest): CheckpointRef {
  return { prefix: m.prefix, files: Object.fromEntries(m.files.map((f) => [f.name, { sha256: f.sha256, size: f.size }])) };
}

export interface ReadCheckpointOptions {
  /**
   * Where tensor files already held in memory are found by sha256 (and where those read are
   * kept); null: read from the store every time. Only for callers that never mutate the tensors.
   */
  cache?: TensorCache | null;
  /** Skip optimizer.safetensors (its tensors come back empty): the outer step needs weights only. */
  weightsOnly?: boolean;
  /** Skip model.safetensors (its tensors come back empty): a shard carries over only its optimizer state. */
  optimizerOnly?: boolean;
}

/**
 * Reads and verifies a committed checkpoint: the manifest once, each file checked against its
 * sha256 there (hashed once), the tensor files against the document's pins, read in parallel.
 */
export async function readCheckpoint(store: ArtifactStore, prefix: string, o: ReadCheckpointOptions = {}): Promise<Checkpoint> {
  try {
    const manifest = await store.readManifest(prefix);
    const { files: pins, format: _format, ...state } = parseCheckpointState(await store.getListed(manifest, prefix, STATE_FILE), prefix);
    const load = async (name: string): Promise<Map<string, TensorData>> => {
      const entry = manifest!.files.find((f) => f.name === name);
      const pin = pins[name];
      if (entry && pin && pin.sha256 !== entry.sha256) throw new EngineError('corrupt', `${prefix}/${name}: sha256 ${entry.sha256} does not match ${pin.sha256} (corrupt file)`);
      const read = async () => readSafetensors(await store.getListed(manifest, prefix, name), `${prefix}/${name}`).tensors;
      return entry && o.cache ? o.cache.get(entry.sha256, entry.size, read) : read();
    };
    const none = async () => new Map<string, TensorData>();
    const [weights, optimizer] = await Promise.all([o.optimizerOnly ? none() : load(WEIGHTS_FILE), o.weightsOnly ? none() : load(OPTIMIZER_FILE)]);
    return { weights, optimizer, state };
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

export interface CommitCheckpointOptions {
  /** Keep the committed tensors here under their files' sha256 (the caller will not mutate them). */
  cache?: TensorCache;
  /** false: keep only the optimizer state (what this process reads back); the weights go to another process. */
  cacheWeights?: boolean;
  /** Adds the time spent packing + hashing and uploading + committing, and the bytes written. */
  timing?: { packMs: number; uploadMs: number; bytes: number };
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
  o: CommitCheckpointOptions = {},
): Promise<CheckpointRef> {
  const t0 = performance.now();
  const tensorBytes = [...ckpt.weights.values(), ...ckpt.optimizer.values()].reduce((n, t) => n + t.data.byteLength, 0);
  if (store.largerThanPart(tensorBytes)) return commitOffThread(store, prefix, ckpt, meta, extra, o);
  const files = packCheckpointHashed(ckpt);
  for (const [name, bytes] of extra) {
    if (files.has(name)) throw new Error(`commit ${prefix}: extra file ${name} would replace the checkpoint's own`);
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    files.set(name, { bytes: b, sha256: sha256(b) });
  }
  const expected: CheckpointRef = { prefix, files: Object.fromEntries([...files].map(([n, f]) => [n, { sha256: f.sha256, size: f.bytes.length }])) };
  const t1 = performance.now();
  const ref = refOf(await store.commit(prefix, Object.fromEntries(files), meta(expected)));
  if (o.timing) {
    o.timing.packMs += t1 - t0;
    o.timing.uploadMs += performance.now() - t1;
    o.timing.bytes += Object.values(expected.files).reduce((n, f) => n + f.size, 0);
  }
  for (const [n, f] of Object.entries(expected.files)) {
    if (ref.files[n]?.sha256 !== f.sha256) throw new Error(`commit ${prefix}: ${n} was stored with sha256 ${ref.files[n]?.sha256}, packed as ${f.sha256}`);
  }
  keepCommitted(ckpt, expected, o);
  return ref;
}

/** This process holds these bytes now: a later read of the same sha256 needs no transfer. */
function keepCommitted(ckpt: WriteCheckpoint, ref: CheckpointRef, o: CommitCheckpointOptions): void {
  if (!o.cache) return;
  for (const [name, tensors] of [[WEIGHTS_FILE, ckpt.weights], [OPTIMIZER_FILE, ckpt.optimizer]] as const) {
    if (name === OPTIMIZER_FILE || o.cacheWeights !== false) o.cache.put(ref.files[name].sha256, tensors, ref.files[name].size);
  }
}

/**
 * commitCheckpoint for tensor files larger than a part: they are serialized, hashed and uploaded
 * on the store's upload thread (infra/upload-thread.ts), so this thread is free at once (a GPU
 * worker starts its next shard meanwhile, and a training step that holds this thread does not
 * stop the upload); checkpoint.json, pinning the hashes the thread computed, and the manifest
 * follow from here. The same bytes as the one-thread path: the same writer, the same document.
 */
async function commitOffThread(store: ArtifactStore, prefix: string, ckpt: WriteCheckpoint, meta: (ref: CheckpointRef) => Record<string, unknown>, extra: Map<string, Uint8Array>, o: CommitCheckpointOptions): Promise<CheckpointRef> {
  const folder = prefix;
  const t0 = performance.now();
  const [weights, optimizer] = await Promise.all([store.putTensorFile(folder, WEIGHTS_FILE, ckpt.weights, WEIGHTS_METADATA), store.putTensorFile(folder, OPTIMIZER_FILE, ckpt.optimizer)]);
  const doc = checkpointDocument(ckpt.state, { [WEIGHTS_FILE]: { sha256: weights.sha256, bytes: weights.size }, [OPTIMIZER_FILE]: { sha256: optimizer.sha256, bytes: optimizer.size } });
  const files: Record<string, CommitFile> = { [WEIGHTS_FILE]: weights, [OPTIMIZER_FILE]: optimizer, [STATE_FILE]: { bytes: doc, sha256: sha256(doc) } };
  for (const [name, bytes] of extra) {
    if (name in files) throw new Error(`commit ${prefix}: extra file ${name} would replace the checkpoint's own`);
    files[name] = { bytes, sha256: sha256(bytes) };
  }
  const expected: CheckpointRef = {
    prefix,
    files: Object.fromEntries(Object.entries(files).map(([n, f]) => ('key' in f ? [n, { sha256: f.sha256, size: f.size }] : [n, { sha256: (f as { sha256: string }).sha256, size: (f as { bytes: Uint8Array }).bytes.byteLength }]))),
  };
  let ref: CheckpointRef;
  try {
    ref = refOf(await store.commit(prefix, files, meta(expected)));
  } catch (err) {
    // Another attempt committed other files first: the two we wrote ahead are ours alone unless its manifest lists them.
    if (err instanceof CommitConflictError) {
      const theirs = new Set((await store.readManifest(prefix))?.files.map((f) => f.key) ?? []);
      for (const f of [weights, optimizer]) if (!theirs.has(f.key)) await store.delete(f.key).catch(() => undefined);
    }
    throw err;
  }
  if (o.timing) {
    // The thread's serializing and hashing counts as packing; the rest of the wait as the upload.
    const packMs = Math.max(weights.packMs, optimizer.packMs);
    o.timing.packMs += packMs;
    o.timing.uploadMs += performance.now() - t0 - packMs;
    o.timing.bytes += Object.values(expected.files).reduce((n, f) => n + f.size, 0);
  }
  for (const [n, f] of Object.entries(expected.files)) {
    if (ref.files[n]?.sha256 !== f.sha256) throw new Error(`commit ${prefix}: ${n} was stored with sha256 ${ref.files[n]?.sha256}, packed as ${f.sha256}`);
  }
  keepCommitted(ckpt, expected, o);
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

/**
 * Refuses a checkpoint of a GPT variant (modelConfig.variant, e.g. the memory-augmented GPT) where
 * a plain GPT is read: StoredGptConfigSchema would drop the variant and its extra weights silently.
 */
export function refuseGptVariant(modelConfig: Record<string, unknown>, what: string): void {
  const v = modelConfig.variant as { kind?: unknown } | undefined;
  if (v == null) return;
  const wired: Record<string, string> = {
    memory: 'its training, post-training (ONNX export, quantization, evaluation) and generation are wired, not HF export, LoRA or starting from it',
    'domain-head': "its training and the classifier's post-training (int8 gated on accuracy) are wired, not generation, HF export, LoRA or starting from it",
  };
  throw failure('InvalidInput', `${what}: a ${String(v.kind)} variant of GPT (modelConfig.variant); ${wired[String(v.kind)] ?? 'only its training is wired, not export, generation, LoRA or starting from it'}`);
}

/** The GPT config and float weights of a committed training checkpoint of a plain GPT (a variant is refused). */
export async function checkpointWeights(store: ArtifactStore, prefix: string): Promise<{ config: GptConfig; weights: Map<string, Float32Array> }> {
  const ck = await readCheckpoint(store, prefix);
  refuseGptVariant(gptModelConfig(ck.state, prefix), `checkpoint ${prefix}`);
  return { config: parseGptConfig(ck.state.modelConfig, prefix), weights: fromTensors(ck.weights, prefix) };
}

/**
 * The GPT config, float weights and memory variant (null for a plain GPT) of a committed training
 * checkpoint: what the inference exporter needs (exportGpt's `memory`), for post-training and
 * `truthgpt generate`. Other variants are refused as by checkpointWeights.
 */
export async function checkpointModel(store: ArtifactStore, prefix: string): Promise<{ config: GptConfig; weights: Map<string, Float32Array>; memory: MemoryVariant | null }> {
  const ck = await readCheckpoint(store, prefix);
  const raw = gptModelConfig(ck.state, prefix);
  const memory = memoryVariantOf(raw, prefix);
  return { config: parseGptConfig(raw, prefix), weights: fromTensors(ck.weights, prefix), memory };
}

/** The memory variant a GPT checkpoint records (null for a plain GPT), from its small state file alone. */
export async function checkpointModelVariant(store: ArtifactStore, prefix: string): Promise<MemoryVariant | null> {
  const found = await readCheckpointState(store, prefix);
  if (!found) throw failure('MissingArtifact', `checkpoint ${prefix}: nothing is committed there`);
  return memoryVariantOf(gptModelConfig(found.state, prefix), prefix);
}

function memoryVariantOf(raw: Record<string, unknown>, prefix: string): MemoryVariant | null {
  const variant = raw.variant as { kind?: unknown } | undefined;
  if (variant?.kind !== 'memory') {
    refuseGptVariant(raw, `checkpoint ${prefix}`);
    return null;
  }
  const parsed = MemoryVariantSchema.safeParse(variant);
  if (!parsed.success) throw failure('CorruptCheckpoint', `checkpoint ${prefix}: modelConfig.variant.${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`);
  return parsed.data;
}

function gptModelConfig(state: { family?: CheckpointState['family']; modelConfig: Record<string, unknown> }, prefix: string): Record<string, unknown> {
  if (state.family && state.family !== 'gpt') throw failure('InvalidInput', `checkpoint ${prefix}: a ${state.family} model, not a GPT (only GPT has an inference exporter and a LoRA base here)`);
  return state.modelConfig;
}

function parseGptConfig(modelConfig: Record<string, unknown>, prefix: string): GptConfig {
  const parsed = StoredGptConfigSchema.safeParse(modelConfig);
  if (!parsed.success) {
    throw failure('InvalidInput', `checkpoint ${prefix}: modelConfig is not a GPT config (only GPT has an inference exporter): ${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`);
  }
  return parsed.data;
}


/** The family, stored config and float weights of any committed checkpoint (GPT, BERT, T5). */
export async function checkpointWeightsAnyFamily(store: ArtifactStore, prefix: string): Promise<{ family: string; config: Record<string, unknown>; weights: Map<string, Float32Array> }> {
  const ck = await readCheckpoint(store, prefix);
  return { family: ck.state.family ?? 'gpt', config: ck.state.modelConfig, weights: fromTensors(ck.weights, prefix) };
}
