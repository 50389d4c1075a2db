// Models in the store: exported and quantized models and what their manifests say about them (so
// `truthgpt generate` can drive one with nothing but its key), resolving a user's model reference,
// and the bases and adapters of fine-tunes.

import { sha256, STATE_FILE } from '../engine/checkpoint/checkpoint';
import { loadTokenizer, type SavedTokenizer, type Tokenizer } from '../engine/data/tokenizer';
import { TOKENIZER_FILE } from '../engine/data/dataset';
import { serializeModel } from '../engine/graph/onnx';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, checkAdapterAgainstPlan, loadAdapter, type LoraPlan } from '../engine/lora';
import { exportGpt } from '../engine/models/export';
import { StoredGptConfigSchema, type GptConfig } from '../engine/models/gpt';
import type { MemoryVariant } from '../engine/models/memory-slots';
import { T5ConfigSchema, type T5Config } from '../engine/models/t5';
import { parseContentKey, type ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import type { BaseModel } from '../spec/lora';
import { checkpointModel, fromTensors, readCheckpoint, readCheckpointState, refOf, refuseGptVariant } from './checkpoints';
import { asFailure } from './errors';
import { importBehind, type ImportRecord } from './hf-models';
import { loadStoredTokenizer } from './tokenizers';

export const MODEL_FILE = 'model.onnx';
export const QUANT_REPORT_FILE = 'quant-report.json';
export const MODEL_FORMAT = 'truthgpt-model/1';
export const REPORT_HTML = 'report.html';
export const REPORT_JSON = 'report.json';
export const REPORT_SVG = 'loss-curves.svg';

/** What a model's manifest records, enough to decode with it without the run that made it. */
export interface ModelMeta {
  format: typeof MODEL_FORMAT;
  name: string;
  method: string;
  modelConfig: GptConfig;
  /** A memory-augmented GPT's variant (its slots are inside the ONNX model); absent for a plain GPT. */
  memory?: MemoryVariant;
  /** Exported with past_key_values inputs (engine/models/export.ts layout). */
  kvCache: boolean;
  tokenizer: SavedTokenizer;
  checkpoint: string;
  published: boolean;
}

/** A stored model as workflows see it. */
export interface ModelRef {
  name: string;
  method: string;
  prefix: string;
  key: string;
  sha256: string;
  sizeBytes: number;
  published: boolean;
}

/** A model ready to decode: ONNX bytes, how to drive it, and its tokenizer (when known). */
export interface ResolvedModel {
  source: string;
  bytes: Uint8Array;
  config: GptConfig;
  kvCache: boolean;
  tokenizer: SavedTokenizer | null;
  method: string;
}

const stripS3 = (ref: string, bucket: string) => ref.replace(new RegExp(`^s3://${bucket.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/`), '').replace(/\/+$/, '');

/**
 * Resolves REF (a published/rejected model prefix, its model.onnx key, or a training checkpoint
 * prefix; `s3://bucket/` optional) to decodable bytes. A checkpoint is exported on the fly with a
 * KV cache. Errors name the key and say what was expected there.
 */
export async function resolveModel(store: ArtifactStore, refIn: string): Promise<ResolvedModel> {
  const ref = stripS3(refIn, store.bucket);
  // A model's object key (`<prefix>/sha256-<hex>/model.onnx`), `<prefix>/model.onnx` or the prefix.
  const stored = parseContentKey(ref);
  const prefix = stored?.name === MODEL_FILE ? stored.folder : ref.endsWith(`/${MODEL_FILE}`) ? ref.slice(0, -MODEL_FILE.length - 1) : ref;
  const manifest = await store.readManifest(prefix);
  if (!manifest) {
    throw failure('MissingArtifact', `model ${refIn}: nothing is committed under s3://${store.bucket}/${prefix} (expected a model prefix such as runs/<id>/models/int8, its model.onnx, or a checkpoint such as runs/<id>/global/r000003)`);
  }
  const names = manifest.files.map((f) => f.name);
  if (names.includes(MODEL_FILE)) {
    const meta = manifest.meta.model as ModelMeta | undefined;
    if (!meta || meta.format !== MODEL_FORMAT) throw failure('InvalidInput', `model ${prefix}: its manifest has no ${MODEL_FORMAT} description (was it written by postTrainingWorkflow?)`);
    let bytes: Buffer;
    try {
      bytes = await store.getVerified(prefix, MODEL_FILE);
    } catch (err) {
      throw asFailure(err, `model ${prefix}`);
    }
    return { source: `${prefix}/${MODEL_FILE}`, bytes, config: StoredGptConfigSchema.parse(meta.modelConfig), kvCache: meta.kvCache, tokenizer: meta.tokenizer, method: meta.method };
  }
  if (names.includes('model.safetensors') && names.includes('checkpoint.json')) {
    const { config, weights, memory } = await checkpointModel(store, prefix);
    // An imported model decodes with the tokenizer.json stored beside it.
    const imported = (manifest.meta.import as ImportRecord | undefined)?.tokenizer;
    const eos = (manifest.meta.import as ImportRecord | undefined)?.specialTokens.eos;
    const tokenizer: SavedTokenizer | null = imported ? { kind: 'hf', ...imported, ...(eos != null ? { eot: eos } : {}) } : null;
    return { source: prefix, bytes: serializeModel(exportGpt(config, weights, { kvCache: true, memory })).model, config, kvCache: true, tokenizer, method: 'fp32' };
  }
  throw failure('InvalidInput', `model ${refIn}: ${prefix} holds ${names.join(', ')}; expected ${MODEL_FILE} or a checkpoint (model.safetensors + checkpoint.json)`);
}

/** A stored T5 checkpoint (imported, or trained later) ready to generate with. */
export interface ResolvedT5 {
  source: string;
  config: T5Config;
  weights: Map<string, Float32Array>;
  tokenizer: SavedTokenizer | null;
  /** The end-of-sequence id the import recorded (T5's `</s>`, 1), which ends a source and stops decoding. */
  eos: number | null;
}

/**
 * The T5 checkpoint at REF, or null when REF is anything else (a GPT checkpoint or an exported
 * model, which resolveModel takes).
 */
export async function resolveT5(store: ArtifactStore, refIn: string): Promise<ResolvedT5 | null> {
  const prefix = stripS3(refIn, store.bucket);
  const manifest = await store.readManifest(prefix);
  if (!manifest?.files.some((f) => f.name === STATE_FILE)) return null;
  const found = await readCheckpointState(store, prefix);
  if (found?.state.family !== 't5') return null;
  const parsed = T5ConfigSchema.strip().safeParse(found.state.modelConfig);
  if (!parsed.success) throw failure('CorruptCheckpoint', `checkpoint ${prefix}: its modelConfig is not a T5 config: ${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`);
  const ck = await readCheckpoint(store, prefix);
  // The import's tokenizer: this prefix's, or the one a run's checkpoint started from (`model.from`).
  const record = (await importBehind(store, prefix, manifest, found.state.runConfig))?.record;
  const eos = record?.specialTokens.eos ?? null;
  const tokenizer: SavedTokenizer | null = record?.tokenizer ? { kind: 'hf', ...record.tokenizer, ...(eos != null ? { eot: eos } : {}) } : null;
  return { source: prefix, config: parsed.data, weights: fromTensors(ck.weights, prefix), tokenizer, eos };
}

/**
 * The tokenizer for a model: `flag` ('byte', 'gpt2' or the key of a tokenizer.json) wins, then the
 * model's own; a bare checkpoint with a byte- or GPT-2-sized vocabulary gets that tokenizer.
 */
export async function tokenizerFor(store: ArtifactStore, model: { source: string; tokenizer: SavedTokenizer | null; config: { vocab_size: number } }, flag?: string): Promise<Tokenizer> {
  if (flag === 'byte' || flag === 'gpt2') return loadTokenizer({ kind: flag });
  if (flag) {
    try {
      return loadTokenizer(await store.getJson<SavedTokenizer>(stripS3(flag, store.bucket)));
    } catch (err) {
      throw asFailure(err, `tokenizer ${flag}`);
    }
  }
  if (model.tokenizer) return loadStoredTokenizer(store, model.tokenizer);
  if (model.config.vocab_size === 259) return loadTokenizer({ kind: 'byte' });
  if (model.config.vocab_size === 50257) return loadTokenizer({ kind: 'gpt2' });
  throw failure('InvalidInput', `model ${model.source}: a checkpoint does not record its tokenizer and vocab_size ${model.config.vocab_size} matches neither byte (259) nor gpt2 (50257); pass --tokenizer <key of the dataset's ${TOKENIZER_FILE}>`);
}

/** The base a fine-tune adapted, with every file's sha256 (a fine-tune must never change them). */
export interface BaseRef {
  kind: BaseModel['kind'];
  /** Checkpoint prefix, or the .onnx key. */
  location: string;
  files: Record<string, { sha256: string; size: number }>;
}

/** Loaded base: a GPT checkpoint's config and weights, or the bytes of an .onnx file. */
export type LoadedBase =
  | { kind: 'checkpoint'; ref: BaseRef; config: GptConfig; weights: Map<string, Float32Array> }
  | { kind: 'onnx'; ref: BaseRef; bytes: Uint8Array };

export async function loadBase(store: ArtifactStore, base: BaseModel): Promise<LoadedBase> {
  if (base.kind === 'checkpoint') {
    const m = await store.readManifest(base.prefix);
    if (!m) throw failure('MissingArtifact', `spec.base.prefix: no committed checkpoint at ${base.prefix}`, { key: base.prefix });
    const ck = await readCheckpoint(store, base.prefix);
    if (ck.state.family && ck.state.family !== 'gpt') throw failure('InvalidInput', `spec.base.prefix: checkpoint ${base.prefix} holds a ${ck.state.family} model; LoRA fine-tunes of checkpoints take GPT models`);
    refuseGptVariant(ck.state.modelConfig, `spec.base.prefix: checkpoint ${base.prefix}`);
    const cfg = StoredGptConfigSchema.safeParse(ck.state.modelConfig);
    if (!cfg.success) throw failure('InvalidInput', `spec.base.prefix: checkpoint ${base.prefix} does not hold a GPT model config (${cfg.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`);
    return { kind: 'checkpoint', ref: { kind: 'checkpoint', location: base.prefix, files: refOf(m).files }, config: cfg.data, weights: fromTensors(ck.weights, base.prefix) };
  }
  try {
    const bytes = await store.get(base.key);
    const name = base.key.split('/').pop()!;
    return { kind: 'onnx', ref: { kind: 'onnx', location: base.key, files: { [name]: { sha256: sha256(bytes), size: bytes.length } } }, bytes };
  } catch (err) {
    throw asFailure(err, `spec.base.key ${base.key}`);
  }
}

/** Reads committed PEFT adapter files and checks them against the plan; errors name the prefix. */
export async function readAdapter(store: ArtifactStore, prefix: string, plan: LoraPlan): Promise<Map<string, Float32Array>> {
  const files = new Map<string, Uint8Array>();
  try {
    for (const name of [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]) files.set(name, await store.getVerified(prefix, name));
  } catch (err) {
    throw asFailure(err, `adapter ${prefix}`);
  }
  try {
    const loaded = loadAdapter(files, { family: plan.config.family, where: prefix });
    checkAdapterAgainstPlan(loaded, plan, prefix);
    return loaded.tensors;
  } catch (err) {
    throw asFailure(err, `adapter ${prefix} does not fit this base and LoRA config`);
  }
}

