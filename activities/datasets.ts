// Preparing a dataset (training's prepareDataset, the fine-tune's prepareFineTuneDataset): corpus
// → tokenizer → shards in S3, under a key named by the spec's hash, so the same spec is prepared
// once and reused by every later run whose committed copy still has the same content.

import { beat } from './heartbeat';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CorpusError, textCorpusFiles } from '../engine/data/corpus';
import { DATASET_MANIFEST_FILE, DatasetSpecSchema, prepareDataset as prepareDatasetFiles, TOKENIZER_FILE, type DatasetManifest, type DatasetSpec } from '../engine/data/dataset';
import { EngineError } from '../engine/errors';
import type { ArtifactStore } from '../infra/store';
import { sha256OfFile } from '../infra/store-upload';
import type { DatasetRef } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { keys } from '../artifacts/keys';
import { fetchHfTokenizerJson } from '../artifacts/tokenizers';

const sha256 = (s: string | Uint8Array) => createHash('sha256').update(s).digest('hex');

/** Identifies a dataset's content: the sha256 of every file but its own descriptor. */
const contentHashOf = (files: { name: string; sha256: string }[]) =>
  sha256(
    files
      .filter((f) => f.name !== DATASET_MANIFEST_FILE)
      .map((f) => `${f.name}:${f.sha256}`)
      .sort()
      .join('\n'),
  );

/** The spec's JSON with the fields in the schema's order, whoever assembled it (a workflow adds `shards` last). */
const specJson = (spec: DatasetSpec) => JSON.stringify(Object.fromEntries(Object.keys(DatasetSpecSchema.shape).map((k) => [k, spec[k as keyof DatasetSpec]])));

/**
 * What the corpus is made of besides the spec: for a file corpus (text, jsonl) its size and the
 * sha256 of its bytes, so that a changed file at the same path is a new dataset; nothing for the
 * corpora that ship inside packages. Errors name the spec field.
 */
async function sourceOf(spec: DatasetSpec): Promise<string | null> {
  const { corpus } = spec;
  if (corpus.kind !== 'text' && corpus.kind !== 'jsonl' && corpus.kind !== 'image-captions') return null;
  const refuse = (what: string) => new EngineError('input', `dataset.corpus.path: ${what}`);
  // Each file's size and sha256; a read error (EACCES, EISDIR, EIO) names the file, not retried.
  const identity = async (file: string) => {
    const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
      throw refuse(`cannot read ${file} (${err.code ?? err.message})`);
    });
    // A FIFO or a device would block the hash forever or never end.
    if (!st.isFile()) throw refuse(`${file} is ${st.isDirectory() ? 'a folder' : 'not a regular file'}${corpus.kind !== 'text' ? `; a ${corpus.kind} corpus is one file` : ''}`);
    const hash = await sha256OfFile(file).catch((err: NodeJS.ErrnoException) => {
      throw refuse(`cannot read ${file} (${err.code ?? err.message})`);
    });
    return `${st.size}\n${hash}`;
  };
  const isFolder = await stat(corpus.path).then(
    (st) => st.isDirectory(),
    (err: NodeJS.ErrnoException) => {
      throw refuse(`cannot read ${corpus.path} (${err.code ?? err.message})`);
    },
  );
  if (!isFolder || corpus.kind !== 'text') return `${corpus.path}\n${await identity(corpus.path)}`;
  // A text folder: every file it is read from, by its path under the folder.
  let files: string[];
  try {
    files = textCorpusFiles(corpus.path);
  } catch (err) {
    throw refuse(err instanceof CorpusError ? err.message : `cannot read ${corpus.path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  const parts: string[] = [];
  for (const f of files) parts.push(`${path.relative(corpus.path, f)}\n${await identity(f)}`);
  return `${corpus.path}\n${parts.join('\n')}`;
}

/**
 * Identifies a dataset: its spec and, for a file corpus, the file's content. A spec whose corpus
 * ships in a package keeps the hash, and the key, it always had.
 */
async function specHashOf(spec: DatasetSpec): Promise<string> {
  const source = await sourceOf(spec);
  return sha256(source === null ? specJson(spec) : `${specJson(spec)}\n${source}`);
}

/** The committed copy of this spec, when its files still hash to the content it recorded. */
async function committed(store: ArtifactStore, prefix: string, specHash: string): Promise<DatasetRef | null> {
  const existing = await store.readManifest(prefix);
  if (!existing || existing.meta.specHash !== specHash || !existing.meta.ref) return null;
  const ref = existing.meta.ref as DatasetRef;
  return contentHashOf(existing.files) === ref.contentHash ? { ...ref, reused: true } : null;
}

/** The ref of a dataset prepared in `dir`, with the content hash of its local files. */
async function refOf(dir: string, names: string[], prefix: string, specHash: string, manifest: DatasetManifest): Promise<DatasetRef> {
  const local = await Promise.all(names.map(async (name) => ({ name, sha256: await sha256OfFile(path.join(dir, name)) })));
  const split = (xs: typeof manifest.splits.train) => xs.map((x) => ({ file: x.file, tokens: x.tokens, ...(x.docs ? { docs: x.docs } : {}), ...(x.images ? { images: x.images } : {}) }));
  return {
    prefix,
    specHash,
    contentHash: contentHashOf(local),
    vocabSize: manifest.tokenizer.vocabSize,
    eot: manifest.tokenizer.eot,
    dtype: manifest.dtype,
    train: split(manifest.splits.train),
    val: split(manifest.splits.val),
    documents: manifest.documents,
    ...(manifest.labelNames ? { labelNames: manifest.labelNames } : {}),
    ...(manifest.spec.pairs ? { pairs: true } : {}),
    reused: false,
  };
}

/** Tokenizes the corpus into `spec.shards` train/val shards; reuses a committed copy of the same spec. */
export async function prepareDataset(store: ArtifactStore, spec: DatasetSpec): Promise<DatasetRef> {
  const specHash = await failingAs(`dataset ${spec.name}`, () => specHashOf(spec));
  const prefix = keys.dataset(spec.name, specHash);
  const reused = await committed(store, prefix, specHash);
  if (reused) return reused;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'truthgpt-dataset-'));
  try {
    // An imported model's tokenizer is referenced by key and sha256; its tokenizer.json comes from the store.
    const hfJson = spec.tokenizer.kind === 'hf' ? await fetchHfTokenizerJson(store, spec.tokenizer) : undefined;
    const manifest = await failingAs(`dataset ${spec.name}`, () => prepareDatasetFiles(spec, dir, (p) => beat(p), hfJson));
    const names = [...manifest.splits.train, ...manifest.splits.val].flatMap((f) => [f.file, ...(f.docs ? [f.docs] : []), ...(f.images ? [f.images] : [])]).concat(TOKENIZER_FILE, DATASET_MANIFEST_FILE);
    const ref = await refOf(dir, names, prefix, specHash, manifest);
    const stored = await store.commit(prefix, Object.fromEntries(names.map((n) => [n, { path: path.join(dir, n) }])), { specHash, ref });
    if (contentHashOf(stored.files) !== ref.contentHash) throw new Error(`dataset ${prefix}: stored files differ from the prepared ones`);
    return ref;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
