// prepareDataset: corpus → tokenizer → N shards per split of packed token ids + a manifest.
//
// Documents stream through one at a time; each is assigned to a split and a shard by a hash of
// (seed, source), so the split is deterministic and independent of corpus order, and shard files
// are written incrementally (memory stays flat however large the corpus). Shards are raw
// little-endian uint16 ids when the vocabulary fits, else uint32, documents separated by EOT.

import { createHash, type Hash } from 'node:crypto';
import { createWriteStream, mkdirSync, writeFileSync, type WriteStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { EngineError } from '../errors';
import { CorpusError, CorpusSpecSchema, readCorpus, type Document } from './corpus';
import { EncodePool } from './encode-pool';
import { hashString, mix } from './random';
import { trainBpeTokenizer, trainUnigramTokenizer, trainWordPieceTokenizer } from './train-tokenizer';
import { ByteTokenizer, Gpt2Tokenizer, HfTokenizer, TokenizerSpecSchema, type TokenIds, type Tokenizer } from './tokenizer';

export const DatasetSpecSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'dataset name: lowercase letters, digits and dashes'),
  corpus: CorpusSpecSchema,
  tokenizer: TokenizerSpecSchema.default({ kind: 'byte' }),
  shards: z.number().int().min(1).max(1024).default(1),
  valFraction: z.number().min(0).max(0.5).default(0.1),
  seed: z.number().int().default(0),
  /** Tokenizer training (bpe, wordpiece, unigram) reads at most this many characters of the corpus. */
  bpeTrainChars: z.number().int().positive().default(20_000_000),
  /**
   * Also write each document's length and label beside every shard (`<shard>.docs`, uint32 pairs),
   * for classification runs (they set it). Absent from specs that do not ask, so their hash and key stay.
   */
  labels: z.boolean().optional(),
  /**
   * Seq2seq examples (T5 runs set it; the corpus is jsonl with a targetField): each document is
   * written as its input ids + EOT followed by its target ids + EOT, and `<shard>.docs` holds
   * (input tokens, target tokens) uint32 pairs, one per example. Absent otherwise.
   */
  pairs: z.boolean().optional(),
});
export type DatasetSpec = z.infer<typeof DatasetSpecSchema>;

export interface ShardInfo {
  file: string;
  /** With `labels`: the file of (tokens, label index) uint32 pairs, one per document, in shard order; with `pairs`: (input tokens, target tokens) per example. */
  docs?: string;
  /** An image-captions corpus: each caption's feature vectors, imageTokens × imageDim float32 (little-endian) per document in shard order; `docs` holds (caption tokens, 0). */
  images?: string;
  tokens: number;
  documents: number;
  bytes: number;
  sha256: string;
}

export interface DatasetManifest {
  format: 'truthgpt-dataset/1';
  spec: DatasetSpec;
  tokenizer: { id: string; vocabSize: number; eot: number; file: string };
  dtype: 'uint16' | 'uint32';
  splits: { train: ShardInfo[]; val: ShardInfo[] };
  documents: number;
  tokens: number;
  labels: Record<string, number>;
  /** With `labels`: label names by index, in the order the corpus first named them. */
  labelNames?: string[];
}

export const TOKENIZER_FILE = 'tokenizer.json';
export const DATASET_MANIFEST_FILE = 'dataset.json';

/**
 * A file written through a stream whose first error (a full disk: ENOSPC) is kept and thrown by
 * the next write or close. Without an 'error' listener a write error is an unhandled event, which
 * ends the whole worker process; with one it is this dataset's error, and the activity retries.
 */
class SafeStream {
  private readonly out: WriteStream;
  private failed: Error | null = null;
  constructor(path: string) {
    this.out = createWriteStream(path);
    this.out.on('error', (err) => (this.failed ??= err));
  }
  async write(buf: Buffer): Promise<void> {
    if (this.failed) throw this.failed;
    if (this.out.write(buf)) return;
    // After an error no 'drain' comes: wait for whichever happens first.
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        this.out.off('drain', done);
        this.out.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      this.out.once('drain', done);
      this.out.once('error', done);
      if (this.failed) done(this.failed);
    });
  }
  async close(): Promise<void> {
    if (this.failed) throw this.failed;
    await new Promise<void>((resolve, reject) => this.out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    if (this.failed) throw this.failed;
  }
  destroy(): void {
    this.out.destroy();
  }
}

class ShardWriter {
  private readonly out: SafeStream;
  private readonly docs: SafeStream | null;
  private readonly images: SafeStream | null;
  private readonly hash: Hash = createHash('sha256');
  tokens = 0;
  documents = 0;
  bytes = 0;
  constructor(
    readonly file: string,
    path: string,
    private readonly wide: boolean,
    /** The `.docs` file's name, when documents' lengths and labels are written. */
    readonly docsFile: string | null = null,
    /** The `.img` file's name, when documents' image features are written. */
    readonly imagesFile: string | null = null,
  ) {
    this.out = new SafeStream(path);
    this.docs = docsFile ? new SafeStream(join(dirname(path), docsFile)) : null;
    this.images = imagesFile ? new SafeStream(join(dirname(path), imagesFile)) : null;
  }
  /** `entry`: the document's `.docs` pair, (tokens, label index) or (input tokens, target tokens). */
  async write(ids: TokenIds, entry?: [number, number], features?: Float32Array): Promise<void> {
    if (ids instanceof Uint32Array !== this.wide) throw new Error(`shard ${this.file}: ${ids.constructor.name} ids for a ${this.wide ? 'uint32' : 'uint16'} shard`); // a bug, not bad input
    const buf = Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength);
    this.hash.update(buf);
    this.tokens += ids.length;
    this.bytes += buf.length;
    this.documents++;
    await this.out.write(buf);
    if (this.docs) await this.docs.write(Buffer.from(Uint32Array.of(...(entry ?? [ids.length, 0])).buffer));
    if (this.images) await this.images.write(Buffer.from(features!.buffer, features!.byteOffset, features!.byteLength));
  }
  async close(): Promise<ShardInfo> {
    await this.out.close();
    if (this.docs) await this.docs.close();
    if (this.images) await this.images.close();
    return { file: this.file, ...(this.docsFile ? { docs: this.docsFile } : {}), ...(this.imagesFile ? { images: this.imagesFile } : {}), tokens: this.tokens, documents: this.documents, bytes: this.bytes, sha256: this.hash.digest('hex') };
  }
  /** Gives the file descriptors back after a failure. */
  destroy(): void {
    this.out.destroy();
    this.docs?.destroy();
    this.images?.destroy();
  }
}

/** A batch for `encodeDocs`: enough documents to keep the library's 2+ threads busy (two 4 MiB chunks of a large file), little enough memory (the library holds about 100 bytes per token of a batch until GC frees its encodings). */
const BATCH_CHARS = 8 << 20;
const BATCH_DOCS = 1024;

async function buildTokenizer(spec: DatasetSpec, hfTokenizerJson?: string): Promise<Tokenizer> {
  const t = spec.tokenizer;
  if (t.kind === 'byte') return new ByteTokenizer();
  if (t.kind === 'gpt2') return new Gpt2Tokenizer();
  if (t.kind === 'hf') {
    if (hfTokenizerJson === undefined) throw new EngineError('input', `tokenizer ${t.key}: prepareDataset needs the text of this tokenizer.json (the activity fetches it from the store)`);
    return HfTokenizer.fromJson(hfTokenizerJson, t);
  }
  if (t.kind === 'wordpiece') return HfTokenizer.trained(await trainWordPieceTokenizer(trainingSample(spec), t.vocabSize));
  if (t.kind === 'unigram') return HfTokenizer.trained(await trainUnigramTokenizer(trainingSample(spec), t.vocabSize));
  return HfTokenizer.trained(await trainBpeTokenizer(trainingSample(spec), t.vocabSize));
}

/** The corpus's first documents, up to `bpeTrainChars` characters (whole documents). */
async function* trainingSample(spec: DatasetSpec): AsyncIterable<string> {
  let chars = 0;
  for await (const doc of readCorpus(spec.corpus)) {
    if (chars >= spec.bpeTrainChars) break;
    yield doc.text;
    chars += doc.text.length;
  }
}

/**
 * Tokenizes the corpus into `outDir` (shard files, tokenizer.json, dataset.json) and returns the
 * manifest. `onProgress` is called after each document (for heartbeats and progress bars).
 */
export async function prepareDataset(
  specInput: z.input<typeof DatasetSpecSchema>,
  outDir: string,
  onProgress?: (p: { documents: number; tokens: number }) => void,
  /** The text of the tokenizer.json an `hf` tokenizer spec references. */
  hfTokenizerJson?: string,
): Promise<DatasetManifest> {
  const spec = DatasetSpecSchema.parse(specInput);
  mkdirSync(outDir, { recursive: true });
  const tokenizer = await buildTokenizer(spec, hfTokenizerJson);
  const wide = tokenizer.vocabSize > 65536;
  const images = spec.corpus.kind === 'image-captions';
  const writer = (split: string, i: number) =>
    new ShardWriter(`${split}-${i}.bin`, join(outDir, `${split}-${i}.bin`), wide, spec.labels || spec.pairs || images ? `${split}-${i}.docs` : null, images ? `${split}-${i}.img` : null);
  const writers = {
    train: Array.from({ length: spec.shards }, (_, i) => writer('train', i)),
    val: Array.from({ length: spec.shards }, (_, i) => writer('val', i)),
  };
  const workers: { pool: EncodePool | null } = { pool: null };
  try {
    return await writeShards(spec, outDir, tokenizer, wide, writers, workers, onProgress);
  } finally {
    // Closed writers ignore this; after an error it releases the other shards' files.
    for (const w of [...writers.train, ...writers.val]) w.destroy();
    await workers.pool?.close();
  }
}

async function writeShards(
  spec: DatasetSpec,
  outDir: string,
  tokenizer: Tokenizer,
  wide: boolean,
  writers: { train: ShardWriter[]; val: ShardWriter[] },
  /** The tokenizer workers, once started; prepareDataset stops them whatever happens. */
  workers: { pool: EncodePool | null },
  onProgress?: (p: { documents: number; tokens: number }) => void,
): Promise<DatasetManifest> {
  const labels: Record<string, number> = {};
  const labelNames: string[] = [];
  let documents = 0;
  let tokens = 0;
  // Documents are encoded a batch at a time (`encodeDocs`: one call into the tokenizers library,
  // which spreads the batch over its threads), and while a batch is encoded the next one is read.
  // Batches are written in corpus order, so the shards are the same whatever the batch size.
  // A paired example (dataset.pairs) is written as its source's ids then its target's, each ending
  // in EOT, with (source tokens, target tokens) in the `.docs` file; a labelled document's `.docs`
  // entry is (tokens, label index).
  // Where the tokenizer can run in worker threads (a trained BPE: encode-pool.ts), batches after the
  // first go to them, one batch per worker in flight, so small corpora never start a worker.
  let batch: { text: string; target?: string; writer: ShardWriter; label?: number; features?: Float32Array }[] = [];
  let batchChars = 0;
  let writing: Promise<void> = Promise.resolve();
  const inFlight: Promise<void>[] = [];
  const workerData = tokenizer instanceof HfTokenizer ? tokenizer.workerData() : null;
  let batches = 0;
  const flush = async () => {
    const docs = batch;
    batch = [];
    batchChars = 0;
    const texts = docs.map((d) => d.text);
    if (spec.pairs) texts.push(...docs.map((d) => d.target!));
    if (workerData && batches++ === 1) workers.pool = new EncodePool(workerData);
    const pool = workers.pool;
    const encoded = Promise.resolve(pool ? pool.encodeDocs(texts) : tokenizer.encodeDocs(texts));
    const previous = writing;
    writing = (async () => {
      const all = await encoded;
      await previous;
      for (let i = 0; i < docs.length; i++) {
        let ids = all[i];
        let entry: [number, number] | undefined;
        if (spec.pairs) {
          const target = all[docs.length + i];
          const both = wide ? new Uint32Array(ids.length + target.length) : new Uint16Array(ids.length + target.length);
          both.set(ids);
          both.set(target, ids.length);
          entry = [ids.length, target.length];
          ids = both;
        } else if (docs[i].label !== undefined) {
          entry = [ids.length, docs[i].label!];
        }
        await docs[i].writer.write(ids, entry, docs[i].features);
        documents++;
        tokens += ids.length;
        onProgress?.({ documents, tokens });
      }
    })();
    writing.catch(() => {}); // awaited below or by the end; this only keeps Node from calling it unhandled meanwhile
    inFlight.push(writing);
    while (inFlight.length > (workers.pool?.size ?? 1)) await inFlight.shift();
  };
  for await (const doc of readCorpus(spec.corpus) as AsyncIterable<Document>) {
    if (!/\S/.test(doc.text)) throw new CorpusError(doc.source, 'is empty');
    const h = mix(spec.seed, hashString(doc.source));
    const split = (h % 10_000) / 10_000 < spec.valFraction ? 'val' : 'train';
    const shard = Math.floor(h / 10_000) % spec.shards;
    let label: number | undefined;
    if (spec.pairs) {
      if (doc.target === undefined) throw new CorpusError(doc.source, 'has no target, and dataset.pairs asks for one per example (a jsonl corpus names its targetField)');
    } else if (spec.labels) {
      if (doc.label === undefined) throw new CorpusError(doc.source, 'has no label, and dataset.labels asks for one per document (a jsonl corpus names its labelField)');
      label = labelNames.indexOf(doc.label);
      if (label < 0) label = labelNames.push(doc.label) - 1;
    }
    if (doc.label !== undefined) labels[doc.label] = (labels[doc.label] ?? 0) + 1;
    batch.push({ text: doc.text, ...(spec.pairs ? { target: doc.target } : {}), ...(doc.features ? { features: doc.features } : {}), writer: writers[split][shard], label });
    batchChars += doc.text.length;
    if (batchChars >= BATCH_CHARS || batch.length >= BATCH_DOCS) await flush();
  }
  await flush();
  await writing;
  if (documents === 0) throw new CorpusError(JSON.stringify(spec.corpus), 'yielded no documents');
  const splits = {
    train: await Promise.all(writers.train.map((w) => w.close())),
    val: await Promise.all(writers.val.map((w) => w.close())),
  };
  if (splits.train.every((s) => s.tokens === 0)) throw new CorpusError(JSON.stringify(spec.corpus), 'the train split is empty (valFraction too high for so few documents?)');
  writeFileSync(join(outDir, TOKENIZER_FILE), JSON.stringify(tokenizer.toJSON()));
  const manifest: DatasetManifest = {
    format: 'truthgpt-dataset/1',
    spec,
    tokenizer: { id: tokenizer.id, vocabSize: tokenizer.vocabSize, eot: tokenizer.eot, file: TOKENIZER_FILE },
    dtype: wide ? 'uint32' : 'uint16',
    splits,
    documents,
    tokens,
    labels,
    ...(spec.labels ? { labelNames } : {}),
  };
  writeFileSync(join(outDir, DATASET_MANIFEST_FILE), JSON.stringify(manifest, null, 2));
  return manifest;
}

/** Views a shard file's bytes as token ids. */
export function shardTokens(bytes: Uint8Array, dtype: DatasetManifest['dtype'], file = 'shard'): Uint16Array | Uint32Array {
  const width = dtype === 'uint16' ? 2 : 4;
  if (bytes.byteLength % width !== 0) throw new EngineError('corrupt', `${file}: ${bytes.byteLength} bytes is not a whole number of ${dtype} ids`);
  const copy = new Uint8Array(bytes); // aligned, owned
  return dtype === 'uint16' ? new Uint16Array(copy.buffer) : new Uint32Array(copy.buffer);
}
