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

import { createReadStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { TensorData } from '../graph/ir';
import { CorpusError } from './corpus';
import { Counter } from './random';
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
  if (!existsSync(path)) throw new CorpusError(path, 'does not exist');
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let n = 0;
  let yielded = 0;
  for await (const line of lines) {
    n++;
    if (!line.trim()) continue;
    const at = `${path}:${n}`;
    if (line.includes('\uFFFD')) throw new CorpusError(at, 'is not valid UTF-8 text');
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new CorpusError(at, 'is not valid JSON');
    }
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
