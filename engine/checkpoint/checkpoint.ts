// One checkpoint object (nanoGPT train.py): weights, optimizer state, model config, step, best
// validation loss, run config, data cursor and RNG state. On disk or in S3 it is two safetensors
// files plus a small JSON document; the store's manifest (sha256 of each file) is written last.

import { createHash } from 'node:crypto';
import { z } from 'zod';
import { EngineError } from '../errors';
import type { TensorData } from '../graph/ir';
import { readSafetensors, writeSafetensors } from './safetensors';

export const CHECKPOINT_FORMAT = 'truthgpt-checkpoint/1';

export const DataCursorSchema = z.object({
  /** Shard index within the dataset split. */
  shard: z.number().int().nonnegative(),
  /** Batches consumed so far; data order is a pure function of (seed, shard, step). */
  step: z.number().int().nonnegative(),
  seed: z.number().int(),
});

/** Model families a checkpoint's modelConfig can describe. */
export const CheckpointFamilySchema = z.enum(['gpt', 'bert', 't5']);
export type CheckpointFamily = z.infer<typeof CheckpointFamilySchema>;

export const CheckpointStateSchema = z.object({
  format: z.literal(CHECKPOINT_FORMAT),
  /** Which builder modelConfig is for; checkpoints written before this field existed are GPT's. */
  family: CheckpointFamilySchema.default('gpt'),
  /** The model's config with every option explicit (explicitGptConfig), so no reader depends on a default. */
  modelConfig: z.record(z.string(), z.unknown()),
  runConfig: z.record(z.string(), z.unknown()).default({}),
  step: z.number().int().nonnegative(),
  round: z.number().int().nonnegative().default(0),
  bestValLoss: z.number().nullable().default(null),
  dataCursor: DataCursorSchema.nullable().default(null),
  /** Opaque RNG state (e.g. dropout seed counters), kept as numbers so JSON round-trips exactly. */
  rng: z.array(z.number().int()).default([]),
  /** sha256 of the two tensor files, so a checkpoint document pins its blobs. */
  files: z.record(z.string(), z.object({ sha256: z.string().length(64), bytes: z.number().int().nonnegative() })),
});
export type CheckpointState = z.infer<typeof CheckpointStateSchema>;

export interface Checkpoint {
  weights: Map<string, TensorData>;
  /** Optimizer state by name (`<param>.m`, `<param>.v` for AdamW; per tensor whatever the update layout); empty for a fresh model. */
  optimizer: Map<string, TensorData>;
  /** `family` is always set on a checkpoint read back ('gpt' when the file predates it); writers may leave it to that default. */
  state: Omit<CheckpointState, 'files' | 'format' | 'family'> & { family?: CheckpointFamily };
}

export const WEIGHTS_FILE = 'model.safetensors';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const STATE_FILE = 'checkpoint.json';

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Serializes a checkpoint into its files (name → bytes). */
export function packCheckpoint(ckpt: Checkpoint): Map<string, Buffer> {
  return new Map([...packCheckpointHashed(ckpt)].map(([name, f]) => [name, f.bytes]));
}

/** packCheckpoint with each file's sha256, each file hashed once (the document pins the tensor files by it). */
export function packCheckpointHashed(ckpt: Checkpoint): Map<string, { bytes: Buffer; sha256: string }> {
  const hashed = (bytes: Buffer) => ({ bytes, sha256: sha256(bytes) });
  const weights = hashed(writeSafetensors(ckpt.weights, WEIGHTS_METADATA));
  const optimizer = hashed(writeSafetensors(ckpt.optimizer));
  const doc = checkpointDocument(ckpt.state, { [WEIGHTS_FILE]: { sha256: weights.sha256, bytes: weights.bytes.length }, [OPTIMIZER_FILE]: { sha256: optimizer.sha256, bytes: optimizer.bytes.length } });
  return new Map([
    [WEIGHTS_FILE, weights],
    [OPTIMIZER_FILE, optimizer],
    [STATE_FILE, hashed(doc)],
  ]);
}

/** The safetensors metadata of a checkpoint's weights file (what the reference writer of PyTorch weights records). */
export const WEIGHTS_METADATA = { format: 'pt' };

/**
 * checkpoint.json's bytes for `state` pinning the two tensor files: what packCheckpointHashed
 * writes, for a writer that serialized and hashed the tensor files elsewhere (infra/upload-thread.ts).
 */
export function checkpointDocument(state: Checkpoint['state'], files: { [WEIGHTS_FILE]: { sha256: string; bytes: number }; [OPTIMIZER_FILE]: { sha256: string; bytes: number } }): Buffer {
  const doc: CheckpointState = { format: CHECKPOINT_FORMAT, family: 'gpt', ...state, files: { [WEIGHTS_FILE]: files[WEIGHTS_FILE], [OPTIMIZER_FILE]: files[OPTIMIZER_FILE] } };
  return Buffer.from(JSON.stringify(doc, null, 2));
}

/** The checkpoint document (checkpoint.json) alone: config, step, cursors and the files' pins. */
export function parseCheckpointState(doc: Uint8Array, where = 'checkpoint'): CheckpointState {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(doc).toString('utf8'));
  } catch (err) {
    throw new EngineError('corrupt', `${where}/${STATE_FILE}: not JSON (${(err as Error).message})`);
  }
  const parsed = CheckpointStateSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new EngineError('corrupt', `${where}/${STATE_FILE}: ${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

/** Reads files produced by packCheckpoint, verifying each tensor file against the document. */
export function unpackCheckpoint(files: Map<string, Uint8Array>, where = 'checkpoint'): Checkpoint {
  const doc = files.get(STATE_FILE);
  if (!doc) throw new EngineError('corrupt', `${where}: ${STATE_FILE} is missing`);
  const { files: pins, format: _format, ...state } = parseCheckpointState(doc, where);
  const load = (name: string) => {
    const bytes = files.get(name);
    if (!bytes) throw new EngineError('corrupt', `${where}: ${name} is missing`);
    const pin = pins[name];
    const actual = sha256(bytes);
    if (pin && pin.sha256 !== actual) throw new EngineError('corrupt', `${where}/${name}: sha256 ${actual} does not match ${pin.sha256} (corrupt file)`);
    return readSafetensors(bytes, `${where}/${name}`).tensors;
  };
  return { weights: load(WEIGHTS_FILE), optimizer: load(OPTIMIZER_FILE), state };
}
