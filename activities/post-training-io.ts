// Store layout and model I/O of post-training: where exported and quantized models live, what
// their manifests say about them (so `truthgpt generate` can drive one with nothing but its key),
// and resolving a user's model reference (a model prefix or .onnx key, or a training checkpoint).

import { loadTokenizer, type SavedTokenizer, type Tokenizer } from '../engine/data/tokenizer';
import { TOKENIZER_FILE } from '../engine/data/dataset';
import { serializeModel } from '../engine/graph/onnx';
import { exportGpt } from '../engine/models/export';
import { GptConfigSchema, type GptConfig } from '../engine/models/gpt';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { fromTensors, readCheckpoint, translateReadError, type DatasetRef } from './training-io';

export const MODEL_FILE = 'model.onnx';
export const QUANT_REPORT_FILE = 'quant-report.json';
export const MODEL_FORMAT = 'truthgpt-model/1';

/** Every key is a pure function of (run id, variant name): a retried activity rewrites the same keys. */
export const postKeys = {
  /** Published models (fp32 and every variant that passed its gate). */
  model: (runId: string, name: string) => `runs/${runId}/models/${name}`,
  /** Variants refused by their gate: kept for inspection, never published. */
  rejected: (runId: string, name: string) => `runs/${runId}/rejected/${name}`,
  report: (runId: string) => `runs/${runId}/report`,
};
export const REPORT_HTML = 'report.html';
export const REPORT_JSON = 'report.json';
export const REPORT_SVG = 'loss-curves.svg';

/** What a model's manifest records, enough to decode with it without the run that made it. */
export interface ModelMeta {
  format: typeof MODEL_FORMAT;
  name: string;
  method: string;
  modelConfig: GptConfig;
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

export async function readTokenizer(store: ArtifactStore, dataset: DatasetRef): Promise<SavedTokenizer> {
  try {
    return JSON.parse((await store.getVerified(dataset.prefix, TOKENIZER_FILE)).toString('utf8')) as SavedTokenizer;
  } catch (err) {
    throw translateReadError(err, `tokenizer of dataset ${dataset.prefix}`);
  }
}

/** The GPT config and float weights of a committed training checkpoint. */
export async function checkpointWeights(store: ArtifactStore, prefix: string): Promise<{ config: GptConfig; weights: Map<string, Float32Array> }> {
  const ck = await readCheckpoint(store, prefix);
  const parsed = GptConfigSchema.safeParse(ck.state.modelConfig);
  if (!parsed.success) {
    throw failure('InvalidInput', `checkpoint ${prefix}: modelConfig is not a GPT config (only GPT has an inference exporter): ${parsed.error.issues[0].path.join('.')}: ${parsed.error.issues[0].message}`);
  }
  return { config: parsed.data, weights: fromTensors(ck.weights, prefix) };
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
  const prefix = ref.endsWith(`/${MODEL_FILE}`) ? ref.slice(0, -MODEL_FILE.length - 1) : ref;
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
      throw translateReadError(err, `model ${prefix}`);
    }
    return { source: `${prefix}/${MODEL_FILE}`, bytes, config: GptConfigSchema.parse(meta.modelConfig), kvCache: meta.kvCache, tokenizer: meta.tokenizer, method: meta.method };
  }
  if (names.includes('model.safetensors') && names.includes('checkpoint.json')) {
    const { config, weights } = await checkpointWeights(store, prefix);
    return { source: prefix, bytes: serializeModel(exportGpt(config, weights, { kvCache: true })).model, config, kvCache: true, tokenizer: null, method: 'fp32' };
  }
  throw failure('InvalidInput', `model ${refIn}: ${prefix} holds ${names.join(', ')}; expected ${MODEL_FILE} or a checkpoint (model.safetensors + checkpoint.json)`);
}

/**
 * The tokenizer for a model: `flag` ('byte', 'gpt2' or the key of a tokenizer.json) wins, then the
 * model's own; a bare checkpoint with a byte- or GPT-2-sized vocabulary gets that tokenizer.
 */
export async function tokenizerFor(store: ArtifactStore, model: ResolvedModel, flag?: string): Promise<Tokenizer> {
  if (flag === 'byte' || flag === 'gpt2') return loadTokenizer({ kind: flag });
  if (flag) {
    try {
      return loadTokenizer(await store.getJson<SavedTokenizer>(stripS3(flag, store.bucket)));
    } catch (err) {
      throw translateReadError(err, `tokenizer ${flag}`);
    }
  }
  if (model.tokenizer) return loadTokenizer(model.tokenizer);
  if (model.config.vocab_size === 259) return loadTokenizer({ kind: 'byte' });
  if (model.config.vocab_size === 50257) return loadTokenizer({ kind: 'gpt2' });
  throw failure('InvalidInput', `model ${model.source}: a checkpoint does not record its tokenizer and vocab_size ${model.config.vocab_size} matches neither byte (259) nor gpt2 (50257); pass --tokenizer <key of the dataset's ${TOKENIZER_FILE}>`);
}
