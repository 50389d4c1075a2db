// Seq2seq fine-tune data: JSON Lines with one source → target example per line,
//
//   {"input": "opposite of hot:", "target": "cold"}
//
// (the field names are settable; other keys on a line are ignored, so exported datasets with ids
// or metadata load as they are). Every error names the file and the line. Tokenization follows
// Hugging Face's T5 tokenizer: text without special tokens, then EOS (`</s>`) at the end of the
// source and of the target; too long an example is an error naming its line, or is cut with its
// EOS kept (overflow: 'truncate'). Batching into t5TrainLoss's feeds is t5-span.ts seq2seqBatch;
// training batches are drawn as a pure function of (seed, shard, step), like sampleLmBatch.
// splitSeq2seq and encode/decodeSeq2seqShard are what a prepare step needs to store a tokenized
// split and a training step to read it back.

import type { TensorData } from '../graph/ir';
import { EngineError } from '../errors';
import { CorpusError, jsonlRows } from './corpus';
import { Counter, hashString, mix } from './random';
import { seq2seqBatch, type Seq2seqIds, type Seq2seqPair } from './t5-span';
import type { Tokenizer } from './tokenizer';

export interface Seq2seqExample {
  /** `file:line`. */
  source: string;
  input: string;
  target: string;
}

export interface Seq2seqJsonlOptions {
  inputField?: string;
  targetField?: string;
}

/**
 * Streams the examples of a seq2seq JSONL file. Blank lines are skipped; a line that is not a JSON
 * object, lacks a field, holds a non-string or an empty input, or a file with no example, is a
 * CorpusError naming `file:line`.
 * @example for await (const ex of readSeq2seqJsonl('train.jsonl')) console.log(ex.input, '→', ex.target)
 */
export async function* readSeq2seqJsonl(path: string, o: Seq2seqJsonlOptions = {}): AsyncIterable<Seq2seqExample> {
  const inputField = o.inputField ?? 'input';
  const targetField = o.targetField ?? 'target';
  let yielded = 0;
  for await (const { at, row } of jsonlRows(path)) {
    if (typeof row !== 'object' || row === null || Array.isArray(row)) throw new CorpusError(at, `is not a JSON object with "${inputField}" and "${targetField}"`);
    const r = row as Record<string, unknown>;
    for (const f of [inputField, targetField]) {
      if (!(f in r)) throw new CorpusError(at, `field "${f}" is missing`);
      if (typeof r[f] !== 'string') throw new CorpusError(at, `field "${f}" is ${r[f] === null ? 'null' : typeof r[f]}, not a string`);
    }
    const input = r[inputField] as string;
    if (!input.trim()) throw new CorpusError(at, `field "${inputField}" is empty`);
    yielded++;
    yield { source: at, input, target: r[targetField] as string };
  }
  if (yielded === 0) throw new CorpusError(path, 'has no examples');
}

export interface Seq2seqTokenizeOptions {
  /** Appended to the source and to the target (T5: `</s>`, id 1). */
  eosId: number;
  /** Longest source in tokens, EOS included. */
  maxSourceLength: number;
  /** Longest target in tokens, EOS included. */
  maxTargetLength: number;
  /** 'error' (default): too long an example is an error naming its line; 'truncate': cut, keeping the EOS. */
  overflow?: 'error' | 'truncate';
}

export interface TokenizedSeq2seq extends Seq2seqPair {
  source: string;
}

/**
 * Token ids of each example with the tokenizer (an `hf` tokenizer gives Python `tokenizers`' ids).
 * @example const pairs = await tokenizeSeq2seq(readSeq2seqJsonl(file), tok, { eosId: 1, maxSourceLength: 64, maxTargetLength: 16 })
 */
export async function tokenizeSeq2seq(examples: AsyncIterable<Seq2seqExample> | Iterable<Seq2seqExample>, tok: Tokenizer, o: Seq2seqTokenizeOptions): Promise<TokenizedSeq2seq[]> {
  for (const [k, v] of [['maxSourceLength', o.maxSourceLength], ['maxTargetLength', o.maxTargetLength]] as const) {
    if (!Number.isInteger(v) || v < 2) throw new EngineError('config', `seq2seq tokenization: ${k} must be an integer of at least 2 (a token and EOS), got ${v}`);
  }
  const out: TokenizedSeq2seq[] = [];
  const fit = async (text: string, max: number, what: string, source: string) => {
    const ids = [...(await tok.encode(text)), o.eosId];
    if (ids.length <= max) return ids;
    if (o.overflow === 'truncate') return [...ids.slice(0, max - 1), o.eosId];
    throw new CorpusError(source, `the ${what} is ${ids.length} tokens with EOS, more than ${what === 'input' ? 'maxSourceLength' : 'maxTargetLength'} ${max} (cut it, or set overflow: truncate)`);
  };
  for await (const ex of examples) {
    out.push({ source: ex.source, inputs: await fit(ex.input, o.maxSourceLength, 'input', ex.source), targets: await fit(ex.target, o.maxTargetLength, 'target', ex.source) });
  }
  return out;
}

/** Longest source and target in `pairs`: the smallest batch geometry that holds every example. */
export function seq2seqLengths(pairs: Seq2seqPair[]): { srcLen: number; tgtLen: number } {
  let srcLen = 1;
  let tgtLen = 1;
  for (const p of pairs) {
    srcLen = Math.max(srcLen, p.inputs.length);
    tgtLen = Math.max(tgtLen, p.targets.length);
  }
  return { srcLen, tgtLen };
}

/**
 * The training batch of `step`: `batchSize` examples drawn with replacement, a pure function of
 * (seed, shard, step), padded to (srcLen, tgtLen) by seq2seqBatch.
 */
export function sampleSeq2seqBatch(
  pairs: Seq2seqPair[],
  req: { seed: number; shard: number; step: number; batchSize: number },
  ids: Seq2seqIds,
  srcLen: number,
  tgtLen: number,
): Record<string, TensorData> {
  const rng = new Counter(req.seed, req.shard, req.step, 0x5332); // 's2' stream
  const picked = Array.from({ length: req.batchSize }, () => pairs[rng.int(pairs.length)]);
  return seq2seqBatch(picked, ids, srcLen, tgtLen, `shard ${req.shard} step ${req.step}`);
}

/** Every example once, in order, `batchSize` at a time (the last batch may be smaller). */
export function* seq2seqEvalBatches(pairs: Seq2seqPair[], batchSize: number, ids: Seq2seqIds, srcLen: number, tgtLen: number): Iterable<Record<string, TensorData>> {
  for (let i = 0; i < pairs.length; i += batchSize) yield seq2seqBatch(pairs.slice(i, i + batchSize), ids, srcLen, tgtLen, `examples ${i}..`);
}

/**
 * Splits examples into train and validation by a hash of (seed, input ids, target ids): the same
 * example lands in the same split whatever the file's order, as prepareDataset splits documents.
 * At least one example goes to each side when there are two or more and valFraction > 0.
 */
export function splitSeq2seq<T extends Seq2seqPair>(pairs: T[], valFraction: number, seed = 0): { train: T[]; val: T[] } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new EngineError('config', `seq2seq split: valFraction must be in [0, 1), got ${valFraction}`);
  const keyed = pairs.map((p) => ({ p, u: mix(seed, hashString(`${p.inputs.join(',')}|${p.targets.join(',')}`)) / 2 ** 32 }));
  let val = keyed.filter((k) => k.u < valFraction);
  if (valFraction > 0 && pairs.length >= 2) {
    // A tiny file can hash every example to one side: then the lowest (or highest) hash crosses over.
    const byU = [...keyed].sort((x, y) => x.u - y.u);
    if (val.length === 0) val = [byU[0]];
    else if (val.length === pairs.length) val = byU.slice(0, -1);
  }
  const inVal = new Set(val);
  return { train: keyed.filter((k) => !inVal.has(k)).map((k) => k.p), val: keyed.filter((k) => inVal.has(k)).map((k) => k.p) };
}

const SHARD_MAGIC = 0x53325331; // 'S2S1'

/**
 * A tokenized seq2seq split as one little-endian uint32 file: magic, example count, then per
 * example the input length, the target length and their ids. What a prepare step stores and a
 * training step reads back with decodeSeq2seqShard.
 */
export function encodeSeq2seqShard(pairs: Seq2seqPair[]): Buffer {
  const n = 2 + pairs.reduce((a, p) => a + 2 + p.inputs.length + p.targets.length, 0);
  const out = new Uint32Array(n);
  let i = 0;
  out[i++] = SHARD_MAGIC;
  out[i++] = pairs.length;
  for (const p of pairs) {
    out[i++] = p.inputs.length;
    out[i++] = p.targets.length;
    for (const t of p.inputs) out[i++] = t;
    for (const t of p.targets) out[i++] = t;
  }
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

/** Reads encodeSeq2seqShard's bytes; a truncated or foreign file is a 'corrupt' error naming `file`. */
export function decodeSeq2seqShard(bytes: Uint8Array, file: string): Seq2seqPair[] {
  const bad = (why: string) => new EngineError('corrupt', `${file}: not a seq2seq shard (${why})`);
  if (bytes.byteLength % 4 !== 0 || bytes.byteLength < 8) throw bad(`${bytes.byteLength} bytes`);
  const words = new Uint32Array(bytes.byteLength / 4);
  new Uint8Array(words.buffer).set(bytes);
  if (words[0] !== SHARD_MAGIC) throw bad('wrong magic number');
  const pairs: Seq2seqPair[] = [];
  let i = 2;
  for (let e = 0; e < words[1]; e++) {
    if (i + 2 > words.length) throw bad(`ends inside example ${e}`);
    const [nIn, nTgt] = [words[i], words[i + 1]];
    i += 2;
    if (i + nIn + nTgt > words.length) throw bad(`ends inside example ${e}`);
    pairs.push({ inputs: Array.from(words.subarray(i, i + nIn)), targets: Array.from(words.subarray(i + nIn, i + nIn + nTgt)) });
    i += nIn + nTgt;
  }
  if (i !== words.length) throw bad(`${words.length - i} words after the last example`);
  return pairs;
}
