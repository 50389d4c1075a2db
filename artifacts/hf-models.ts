// Hugging Face folders in and out of the store. An import is one of our checkpoints under
// models/<name> (our parameter names, no optimizer state, checkpoint.json with the full model config
// and family), plus the folder's tokenizer files, so every reader of checkpoints (checkpointWeights,
// a LoRA base { kind: 'checkpoint', prefix }) takes it unchanged. The manifest's meta.import records
// where it came from. An export turns any GPT checkpoint (trained, imported or LoRA-merged) back
// into a folder that transformers strict-loads.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { STATE_FILE, WEIGHTS_FILE } from '../engine/checkpoint/checkpoint';
import { BertModelConfigSchema, exportArchitecture, HF_TOKENIZER_FILE, HF_TOKENIZER_SIDE_FILES, readHfFolder, writeHfFolder, type HfFamily, type HfModelConfig, type HfSourceFile, type SpecialTokenIds } from '../engine/hf';
import { StoredGptConfigSchema } from '../engine/models/gpt';
import { T5ConfigSchema } from '../engine/models/t5';
import type { ArtifactStore, Manifest } from '../infra/store';
import { failure } from '../spec/errors';
import { hfAdapterFiles } from '../engine/hf/peft';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../engine/lora/peft';
import { checkpointWeights, commitCheckpoint, fromTensors, readCheckpoint, readCheckpointState, refuseGptVariant, toTensors, type CheckpointRef } from './checkpoints';
import { asFailure } from './errors';
import { keySafe, modelKeys, modelNameProblem } from './keys';

export const IMPORT_FORMAT = 'truthgpt-import/1';

/** What a model's manifest records about its import (meta.import). */
export interface ImportRecord {
  format: typeof IMPORT_FORMAT;
  family: HfFamily;
  /** The HF class it was saved from (config.json architectures[0]). */
  architecture: string;
  /** The folder's basename and config.json `_name_or_path` (an HF id or a path) when present. */
  source: { folder: string; nameOrPath: string | null };
  params: number;
  sourceDtypes: string[];
  /** sha256 of every source file read. */
  files: HfSourceFile[];
  specialTokens: SpecialTokenIds;
  /** The stored tokenizer.json (a file beside the checkpoint, never inlined), when the folder had one. */
  tokenizer: { key: string; sha256: string } | null;
}

export interface ImportedModel {
  /** The model ref: the checkpoint prefix models/<name>. */
  ref: string;
  checkpoint: CheckpointRef;
  import: ImportRecord;
  /** False when the same source was already stored under this name (nothing was written). */
  created: boolean;
}

const stripRef = (ref: string, bucket: string) => ref.replace(new RegExp(`^s3://${bucket.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/`), '').replace(/\/+$/, '');

const importOf = (m: Manifest | null): ImportRecord | null => {
  const r = m?.meta.import as ImportRecord | undefined;
  return r && r.format === IMPORT_FORMAT ? r : null;
};

/**
 * Reads the HF folder `dir` and stores it as models/<name> (default: the folder's name). Importing
 * the same files under the same name again returns the stored model; other files under a taken
 * name are refused. `onTensor(done, total)` reports progress.
 * @example const m = await importHfModel(store, 'gpt2-folder', { name: 'gpt2' }); m.ref // 'models/gpt2'
 */
export async function importHfModel(store: ArtifactStore, dir: string, opts: { name?: string; onTensor?: (done: number, total: number) => void } = {}): Promise<ImportedModel> {
  const folder = path.basename(path.resolve(dir));
  const name = opts.name ?? keySafe(folder);
  const problem = modelNameProblem(name);
  if (problem) throw failure('InvalidInput', `model name ${JSON.stringify(name)}: ${problem}`, { field: 'name' });
  const prefix = modelKeys.model(name);
  let m;
  try {
    m = readHfFolder(dir, opts.onTensor);
  } catch (err) {
    throw asFailure(err, `import ${dir}`);
  }
  const existing = await store.readManifest(prefix);
  if (existing) {
    const prev = importOf(existing);
    const same = prev && JSON.stringify(prev.files) === JSON.stringify(m.files);
    if (!same) {
      const what = prev ? `a model imported from ${prev.source.nameOrPath ?? prev.source.folder}` : 'something else';
      throw failure('InvalidInput', `model name ${JSON.stringify(name)}: ${prefix} already holds ${what}; choose another --name`, { field: 'name' });
    }
    return { ref: prefix, checkpoint: { prefix, files: Object.fromEntries(existing.files.map((f) => [f.name, { sha256: f.sha256, size: f.size }])) }, import: prev, created: false };
  }
  const tokenizerSha = m.files.find((f) => f.name === HF_TOKENIZER_FILE)?.sha256;
  const record: ImportRecord = {
    format: IMPORT_FORMAT,
    family: m.family,
    architecture: m.architecture,
    source: { folder, nameOrPath: m.nameOrPath },
    params: m.params,
    sourceDtypes: m.sourceDtypes,
    files: m.files,
    specialTokens: m.specialTokens,
    tokenizer: tokenizerSha ? { key: `${prefix}/${HF_TOKENIZER_FILE}`, sha256: tokenizerSha } : null,
  };
  const shapes = new Map(m.specs.map((s) => [s.name, s.shape]));
  const checkpoint = await commitCheckpoint(
    store,
    prefix,
    {
      weights: toTensors(m.weights, shapes),
      optimizer: new Map(),
      state: { family: m.family, modelConfig: m.config, runConfig: { imported: { architecture: m.architecture, source: record.source } }, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
    },
    () => ({ import: record }),
    m.tokenizerFiles,
  );
  return { ref: prefix, checkpoint, import: record, created: true };
}

export interface HfExportResult {
  /** The checkpoint prefix exported. */
  prefix: string;
  dir: string;
  architecture: string;
  files: string[];
  /** The import the export's tokenizer and special tokens came from, when there was one. */
  importedFrom: string | null;
}

/**
 * Writes the GPT checkpoint at `ref` (a trained, imported or LoRA-merged checkpoint prefix; `s3://bucket/`
 * optional) as a Hugging Face folder in `outDir` (missing or empty). A merged fine-tune of an
 * imported model carries the import's tokenizer files and special tokens.
 * @example await exportHfModel(store, 'models/gpt2', 'out/gpt2')
 */
export async function exportHfModel(store: ArtifactStore, ref: string, outDir: string, opts: { baseNameOrPath?: string } = {}): Promise<HfExportResult> {
  const prefix = stripRef(ref, store.bucket);
  const manifest = await store.readManifest(prefix);
  if (!manifest) throw failure('MissingArtifact', `export ${ref}: nothing is committed under s3://${store.bucket}/${prefix} (expected a checkpoint prefix: models/<name>, runs/<id>/global/rNNNNNN or finetunes/<id>/merged, or an adapter: finetunes/<id>/adapter)`);
  const names = manifest.files.map((f) => f.name);
  if (names.includes(ADAPTER_CONFIG_FILE) && names.includes(ADAPTER_WEIGHTS_FILE)) return exportAdapter(store, ref, prefix, manifest, outDir, opts.baseNameOrPath);
  if (!names.includes(WEIGHTS_FILE) || !names.includes(STATE_FILE)) {
    throw failure('InvalidInput', `export ${ref}: ${prefix} holds ${names.join(', ')}; expected a checkpoint (${WEIGHTS_FILE} + ${STATE_FILE})`);
  }
  const ck = await readCheckpoint(store, prefix);
  const family = ck.state.family ?? 'gpt';
  if (family === 'gpt') refuseGptVariant(ck.state.modelConfig, `export ${ref}: ${prefix}`);
  const cfg = (family === 'gpt' ? StoredGptConfigSchema : family === 'bert' ? BertModelConfigSchema : T5ConfigSchema.strip()).safeParse(ck.state.modelConfig);
  if (!cfg.success) {
    const issue = cfg.error.issues[0]!;
    throw failure('InvalidInput', `export ${ref}: ${prefix}/${STATE_FILE} modelConfig is not a ${family} config (an adapter chunk? export its merged model): ${issue.path.join('.')}: ${issue.message}`);
  }
  const model = { family, config: cfg.data } as HfModelConfig;
  // The import that holds the tokenizer: this prefix, or the base a merged fine-tune came from.
  const source = await importBehind(store, prefix, manifest, ck.state.runConfig);
  const tokenizerFiles = new Map<string, Uint8Array>();
  if (source) {
    const stored = new Set(source.manifest.files.map((f) => f.name));
    for (const f of [HF_TOKENIZER_FILE, ...HF_TOKENIZER_SIDE_FILES]) {
      if (stored.has(f)) tokenizerFiles.set(f, await store.getVerified(source.prefix, f).catch((err: unknown) => Promise.reject(asFailure(err, `export ${ref}`))));
    }
  }
  try {
    const w = writeHfFolder(outDir, { ...model, weights: fromTensors(ck.weights, prefix), specialTokens: source?.record.specialTokens, tokenizerFiles });
    return { prefix, dir: outDir, architecture: w.architecture, files: w.files, importedFrom: source?.prefix ?? null };
  } catch (err) {
    throw asFailure(err, `export ${ref}`);
  }
}

/** Where a checkpoint came from, as its writers record it: a merged fine-tune's base, or a run's `model.from`. */
function parentOf(runConfig: Record<string, unknown>): string | null {
  const base = (runConfig.mergedFrom as { base?: unknown } | undefined)?.base;
  if (typeof base === 'string') return base;
  return typeof runConfig.from === 'string' ? runConfig.from : null;
}

/**
 * The import a checkpoint descends from (itself, the base of a merged fine-tune, the model a run
 * started from, and so on up to 8 steps), which holds its tokenizer and special tokens; null for a
 * model trained from scratch.
 */
export async function importBehind(store: ArtifactStore, prefix: string, manifest: Manifest, runConfig: Record<string, unknown>): Promise<{ prefix: string; manifest: Manifest; record: ImportRecord } | null> {
  let at = { prefix, manifest, runConfig };
  for (let hop = 0; hop < 8; hop++) {
    const record = importOf(at.manifest);
    if (record) return { prefix: at.prefix, manifest: at.manifest, record };
    const parent = parentOf(at.runConfig);
    if (!parent) return null;
    const found = await readCheckpointState(store, parent).catch(() => null);
    if (!found) return null;
    at = { prefix: parent, manifest: found.manifest, runConfig: found.state.runConfig };
  }
  return null;
}

/**
 * A fine-tune's adapter as PEFT files for the HF class its base exports as (engine/hf/peft.ts),
 * naming `baseNameOrPath` (the exported base folder) or what peftBaseName finds as the base.
 */
async function exportAdapter(store: ArtifactStore, ref: string, prefix: string, manifest: Manifest, outDir: string, baseNameOrPath?: string): Promise<HfExportResult> {
  // A BERT classifier's or a T5 seq2seq model's LoRA stage stores PEFT files already in HF names,
  // its base as a plain prefix.
  if (typeof manifest.meta.base === 'string') return exportStoredPeft(store, ref, prefix, manifest.meta.base, outDir, baseNameOrPath);
  const base = manifest.meta.base as { kind?: string; location?: string } | undefined;
  if (base?.kind !== 'checkpoint' || typeof base.location !== 'string') {
    throw failure('InvalidInput', `export ${ref}: the adapter's base is ${base?.location ?? 'not recorded'}; only adapters of GPT checkpoints export as Hugging Face PEFT files`);
  }
  const { config } = await checkpointWeights(store, base.location);
  const files = new Map<string, Uint8Array>();
  for (const f of [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]) files.set(f, await store.getVerified(prefix, f).catch((err: unknown) => Promise.reject(asFailure(err, `export ${ref}`))));
  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0) throw failure('InvalidInput', `export ${ref}: ${outDir}: the export folder is not empty`);
  try {
    const record = importOf(await store.readManifest(base.location));
    const name = baseNameOrPath ?? (record ? (record.source.nameOrPath ?? record.source.folder) : base.location);
    const out = hfAdapterFiles(config, files, name, prefix);
    fs.mkdirSync(outDir, { recursive: true });
    for (const [name, bytes] of out) fs.writeFileSync(path.join(outDir, name), bytes);
    return { prefix, dir: outDir, architecture: `PEFT LoRA for ${exportArchitecture(config).architecture}`, files: [...out.keys()], importedFrom: null };
  } catch (err) {
    throw asFailure(err, `export ${ref}`);
  }
}

/**
 * The PEFT files a BERT or T5 LoRA stage stored (activities/classifier-lora.ts, t5-lora.ts), with
 * `base_model_name_or_path` naming `baseNameOrPath` (the folder its base was exported to), else the
 * HF id or folder recorded where the base was imported, else the base's store prefix. The weights
 * are copied byte for byte.
 */
async function exportStoredPeft(store: ArtifactStore, ref: string, prefix: string, basePrefix: string, outDir: string, baseNameOrPath?: string): Promise<HfExportResult> {
  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0) throw failure('InvalidInput', `export ${ref}: ${outDir}: the export folder is not empty`);
  try {
    const [configBytes, weights] = await Promise.all([store.getVerified(prefix, ADAPTER_CONFIG_FILE), store.getVerified(prefix, ADAPTER_WEIGHTS_FILE)]);
    const config = JSON.parse(configBytes.toString('utf8')) as Record<string, unknown>;
    let name = baseNameOrPath;
    if (name === undefined) {
      const base = await readCheckpointState(store, basePrefix).catch(() => null);
      const source = base ? await importBehind(store, basePrefix, base.manifest, base.state.runConfig) : null;
      name = source ? (source.record.source.nameOrPath ?? source.record.source.folder) : basePrefix;
    }
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, ADAPTER_CONFIG_FILE), JSON.stringify({ ...config, base_model_name_or_path: name }, null, 2));
    fs.writeFileSync(path.join(outDir, ADAPTER_WEIGHTS_FILE), weights);
    return { prefix, dir: outDir, architecture: `PEFT LoRA (${String(config.task_type)})`, files: [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE], importedFrom: null };
  } catch (err) {
    throw asFailure(err, `export ${ref}`);
  }
}

/**
 * What a PEFT adapter_config.json should name as its base (`base_model_name_or_path`) for the base
 * at `location`: for a GPT-2 imported from Hugging Face, the HF id or folder recorded at import
 * (`_name_or_path`, else the folder's name), which PEFT resolves; otherwise the store location.
 * A Llama-family adapter is stored on our fused layers and loads in PEFT once exported
 * (`truthgpt export finetunes/<id>/adapter --format hf`, exportAdapter above).
 */
export async function peftBaseName(store: ArtifactStore, location: string): Promise<string> {
  const record = importOf(await store.readManifest(location));
  if (!record || !record.architecture.startsWith('GPT2')) return location;
  return record.source.nameOrPath ?? record.source.folder;
}
