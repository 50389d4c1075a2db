// Prepared datasets in the store: the ref activities pass around, reading token shards (cached,
// verified), finding a committed dataset by prefix, and its tokenizer.

import { TOKENIZER_FILE, shardTokens, type DatasetManifest } from '../engine/data/dataset';
import { sha256 } from '../engine/checkpoint/checkpoint';
import { isTokenizerFile, trainedTokenizerId, type SavedTokenizer } from '../engine/data/tokenizer';
import type { Seq2seqPair } from '../engine/data/t5-span';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { asFailure } from './errors';
import { isDatasetVersionOf } from './keys';
import { manifestsUnder } from './manifests';

/** Where a prepared dataset lives and what the activities need to read it. */
export interface DatasetRef {
  prefix: string;
  specHash: string;
  /** sha256 over the sha256 of every shard and the tokenizer: identifies the content. */
  contentHash: string;
  vocabSize: number;
  eot: number;
  dtype: DatasetManifest['dtype'];
  /** `docs`: the shard's (tokens, label index) pairs, in a dataset prepared with `labels`. */
  /** `images`: an image-captions shard's feature vectors (float32, imageTokens × imageDim per document). */
  train: { file: string; tokens: number; docs?: string; images?: string }[];
  val: { file: string; tokens: number; docs?: string; images?: string }[];
  documents: number;
  /** Label names by index, in a dataset prepared with `labels`. */
  labelNames?: string[];
  /** Prepared with `pairs`: seq2seq examples, `docs` holding (input tokens, target tokens) per example. */
  pairs?: true;
  reused: boolean;
}

/** A labelled shard: token ids, and (tokens, label index) uint32 pairs per document. */
export interface LabelledShard {
  ids: Uint16Array | Uint32Array;
  docs: Uint32Array;
}

/** Token ids of shard files, cached by (prefix, file): every round reads the same shard. */
export class ShardCache {
  private readonly cache = new Map<string, Uint16Array | Uint32Array>();
  private readonly features = new Map<string, Float32Array>();
  constructor(private readonly limit = 8) {}

  async get(store: ArtifactStore, ds: DatasetRef, file: string): Promise<Uint16Array | Uint32Array> {
    const key = `${ds.prefix}/${file}@${ds.contentHash}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    let bytes: Buffer;
    try {
      bytes = await store.getVerified(ds.prefix, file);
    } catch (err) {
      throw asFailure(err, `dataset ${ds.prefix}`);
    }
    const ids = shardTokens(bytes, ds.dtype, `${ds.prefix}/${file}`);
    if (this.cache.size >= this.limit) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, ids);
    return ids;
  }

  /** A labelled shard's documents: their token ids and, per document, its length (eot included) and label index. */
  async labelled(store: ArtifactStore, ds: DatasetRef, shard: { file: string; docs?: string }): Promise<LabelledShard> {
    if (!shard.docs) throw failure('InvalidInput', `dataset ${ds.prefix}: ${shard.file} has no document labels (the dataset was prepared without dataset.labels)`);
    const ids = await this.get(store, ds, shard.file);
    const pairs = await this.get(store, { ...ds, dtype: 'uint32' }, shard.docs);
    return { ids, docs: pairs as Uint32Array };
  }

  /**
   * A seq2seq shard's examples (a dataset prepared with `pairs`): each one's input and target ids,
   * EOT included, as the `.docs` pairs cut the shard.
   */
  async pairs(store: ArtifactStore, ds: DatasetRef, shard: { file: string; docs?: string }): Promise<Seq2seqPair[]> {
    if (!ds.pairs || !shard.docs) throw failure('InvalidInput', `dataset ${ds.prefix}: ${shard.file} holds no source/target pairs (the dataset was prepared without dataset.pairs: a seq2seq run needs a jsonl corpus with targetField)`);
    const { ids, docs } = await this.labelled(store, ds, shard);
    const out: Seq2seqPair[] = [];
    let at = 0;
    for (let i = 0; i + 1 < docs.length; i += 2) {
      const [n, m] = [docs[i], docs[i + 1]];
      if (at + n + m > ids.length) throw failure('CorruptCheckpoint', `dataset ${ds.prefix}: ${shard.docs} describes ${at + n + m} tokens, ${shard.file} holds ${ids.length}`);
      out.push({ inputs: Array.from(ids.subarray(at, at + n)), targets: Array.from(ids.subarray(at + n, at + n + m)) });
      at += n + m;
    }
    if (at !== ids.length) throw failure('CorruptCheckpoint', `dataset ${ds.prefix}: ${shard.docs} describes ${at} tokens, ${shard.file} holds ${ids.length}`);
    return out;
  }

  /** An image-captions shard's feature vectors (float32, imageTokens × imageDim per caption, in shard order). */
  async images(store: ArtifactStore, ds: DatasetRef, shard: { file: string; images?: string }): Promise<Float32Array> {
    if (!shard.images) throw failure('InvalidInput', `dataset ${ds.prefix}: ${shard.file} has no image features (an image-prefix GPT trains on an image-captions corpus)`);
    const key = `${ds.prefix}/${shard.images}@${ds.contentHash}`;
    const hit = this.features.get(key);
    if (hit) return hit;
    let bytes: Buffer;
    try {
      bytes = await store.getVerified(ds.prefix, shard.images);
    } catch (err) {
      throw asFailure(err, `dataset ${ds.prefix}`);
    }
    if (bytes.byteLength % 4 !== 0) throw failure('CorruptCheckpoint', `dataset ${ds.prefix}: ${shard.images} holds ${bytes.byteLength} bytes, not a whole number of float32 values`);
    const features = new Float32Array(new Uint8Array(bytes).buffer); // aligned, owned
    if (this.features.size >= this.limit) this.features.delete(this.features.keys().next().value!);
    this.features.set(key, features);
    return features;
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

/** The most recently committed dataset whose prefix starts with `prefix`; null when there is none. */
export async function newestDataset(store: ArtifactStore, prefix: string): Promise<DatasetRef | null> {
  for (const m of await manifestsUnder(store, prefix)) {
    // `datasets/fiction-` names the versions of "fiction", not those of "fiction-extra".
    if (!isDatasetVersionOf(m.prefix, prefix)) continue;
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

/**
 * A dataset's saved tokenizer. A trained one's tokenizer.json is the standard file itself, which
 * can be large: it comes back as a reference to that file (key, sha256, id), which is what model
 * manifests record, and loadStoredTokenizer fetches and verifies it.
 */
export async function readTokenizer(store: ArtifactStore, dataset: DatasetRef): Promise<SavedTokenizer> {
  try {
    const bytes = await store.getVerified(dataset.prefix, TOKENIZER_FILE);
    const text = bytes.toString('utf8');
    const saved = JSON.parse(text) as SavedTokenizer;
    if (!isTokenizerFile(saved)) return saved;
    const sha = sha256(bytes);
    return { kind: 'hf', key: `${dataset.prefix}/${TOKENIZER_FILE}`, sha256: sha, id: trainedTokenizerId(text, sha) };
  } catch (err) {
    throw asFailure(err, `tokenizer of dataset ${dataset.prefix}`);
  }
}

