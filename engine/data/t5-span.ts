// T5's span-corruption pretraining objective (Raffel et al. 2020, §3.1.4), seeded like the batch
// sampler: a pure function of (seed, shard, step, row), so a resumed run corrupts exactly as the
// uninterrupted one did.
//
// The noise mask is a port of t5.data.preprocessors.random_spans_noise_mask (the function
// Hugging Face's run_t5_mlm_flax.py copies): round(L·density) noise tokens (at least 1, at most
// L−1) in round(noise / mean_span) spans (at least 1), in float32 and rounding half to even as
// tf.cast + tf.round do (HF's numpy copy computes in float64 and drops one token less at some
// lengths, e.g. 190: 190·0.15 is 28.5000011 in float32 but 28.4999999 in float64). The noise and
// the kept tokens are each split into that many non-empty segments by shuffling a vector of
// (segments − 1) "starts a segment" flags over the items' (n − 1) gaps, and the segments
// interleave kept, noise, kept, noise, ..., so a row always begins with kept text and ends with
// noise. Only the shuffle's source of randomness differs from T5 (our counter-based draws, not TF's
// stateless ops); test/engine/t5-span.test.ts feeds ours the shuffles that the numpy reference of
// test/fixtures/t5-tiny/make_t5_tiny.py drew and gets its masks, inputs and targets.
//
// Each noise span becomes one sentinel in the inputs (<extra_id_0> = sentinelStart, then
// sentinelStart − 1, ...: T5's vocabulary counts them down from its last id); the targets list each
// sentinel followed by the tokens it replaced. Both end with EOS:
//   ids      a b c d e f g h
//   inputs   a b <0> e f <1> </s>
//   targets  <0> c d <1> g h </s>

import { EngineError } from '../errors';
import type { TensorData } from '../graph/ir';
import { tensor } from '../graph/ir';
import { IGNORE_INDEX } from './masking';
import { Counter } from './random';

export interface SpanCorruptionOptions {
  /** `<extra_id_0>`'s id; sentinel k is `sentinelStart − k`. */
  sentinelStart: number;
  eosId: number;
  /** Fraction of tokens dropped (T5: 0.15). */
  noiseDensity?: number;
  /** Mean length of a dropped span (T5: 3). */
  meanSpanLength?: number;
}

export interface SpanKey {
  seed: number;
  shard: number;
  step: number;
  row: number;
}

/**
 * The "starts a segment" flags for the (numItems − 1) gaps between items, exactly
 * (numSegments − 1) of them true, in a random order. `which` says whose segmentation it is (the
 * reference draws the noise one first, with its own seed).
 */
export type SegmentShuffle = (numItems: number, numSegments: number, which: 'noise' | 'nonnoise') => boolean[];

/** Round half to even, as tf.round / np.round (so 4.5 → 4, 5.5 → 6). */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** How many tokens and spans random_spans_noise_mask drops from a row of `length` tokens. */
export function noiseCounts(length: number, noiseDensity = 0.15, meanSpanLength = 3): { noiseTokens: number; noiseSpans: number } {
  const L = Math.max(length, 2);
  const f = Math.fround; // tf computes the counts in float32; a float32 product or quotient rounds once from float64
  const noiseTokens = Math.min(Math.max(roundHalfEven(f(f(L) * f(noiseDensity))), 1), L - 1);
  const noiseSpans = Math.max(roundHalfEven(f(f(noiseTokens) / f(meanSpanLength))), 1);
  return { noiseTokens, noiseSpans };
}

/**
 * Lengths of the corrupted inputs and targets for a row of `length` tokens (sentinels and EOS
 * included): the same for every row of that length, so a batch of equal rows needs no padding.
 */
export function spanCorruptionLengths(length: number, noiseDensity = 0.15, meanSpanLength = 3): { inputs: number; targets: number } {
  if (length < 2) throw new EngineError('config', `span corruption: rows need at least 2 tokens, got ${length}`);
  const { noiseTokens, noiseSpans } = noiseCounts(length, noiseDensity, meanSpanLength);
  return { inputs: length - noiseTokens + noiseSpans + 1, targets: noiseTokens + noiseSpans + 1 };
}

/** A SegmentShuffle from counter-based draws: a Fisher–Yates shuffle of the flags. */
export function seededShuffle(rng: Counter): SegmentShuffle {
  return (numItems, numSegments) => {
    const flags = Array.from({ length: numItems - 1 }, (_, i) => i < numSegments - 1);
    for (let i = flags.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [flags[i], flags[j]] = [flags[j], flags[i]];
    }
    return flags;
  };
}

function segmentLengths(flags: boolean[], numItems: number, numSegments: number): number[] {
  if (flags.length !== numItems - 1 || flags.filter((f) => f).length !== numSegments - 1) {
    throw new Error(`span corruption: a segmentation of ${numItems} items into ${numSegments} needs ${numItems - 1} flags with ${numSegments - 1} set`);
  }
  const lens = [1];
  for (const f of flags) {
    if (f) lens.push(1);
    else lens[lens.length - 1]++;
  }
  return lens;
}

/** random_spans_noise_mask: true at the tokens to drop, for a row of `length` tokens. */
export function randomSpansNoiseMask(length: number, shuffle: SegmentShuffle, noiseDensity = 0.15, meanSpanLength = 3): boolean[] {
  const L = Math.max(length, 2);
  const { noiseTokens, noiseSpans } = noiseCounts(length, noiseDensity, meanSpanLength);
  const noise = segmentLengths(shuffle(noiseTokens, noiseSpans, 'noise'), noiseTokens, noiseSpans);
  const kept = segmentLengths(shuffle(L - noiseTokens, noiseSpans, 'nonnoise'), L - noiseTokens, noiseSpans);
  const mask: boolean[] = [];
  for (let s = 0; s < noiseSpans; s++) {
    for (let k = 0; k < kept[s]; k++) mask.push(false);
    for (let k = 0; k < noise[s]; k++) mask.push(true);
  }
  return mask.slice(0, length);
}

/**
 * noise_span_to_unique_sentinel: each span of `noise` positions becomes one sentinel (counting down
 * from `sentinelStart`), the rest of the span is dropped.
 */
function spansToSentinels(ids: ArrayLike<number>, noise: boolean[], sentinelStart: number): number[] {
  const out: number[] = [];
  let k = 0;
  for (let i = 0; i < ids.length; i++) {
    if (!noise[i]) out.push(ids[i]);
    else if (i === 0 || !noise[i - 1]) out.push(sentinelStart - k++);
  }
  return out;
}

/** Inputs (noise spans → sentinels) and targets (kept spans → sentinels) of one row, each + EOS. */
export function applyNoiseMask(ids: ArrayLike<number>, mask: boolean[], sentinelStart: number, eosId: number): { inputs: number[]; targets: number[] } {
  if (mask.length !== ids.length) throw new Error(`span corruption: mask of ${mask.length} for ${ids.length} tokens`);
  return {
    inputs: [...spansToSentinels(ids, mask, sentinelStart), eosId],
    targets: [...spansToSentinels(ids, mask.map((m) => !m), sentinelStart), eosId],
  };
}

/**
 * Span-corrupts one row with draws keyed by (seed, shard, step, row).
 * @example spanCorrupt(ids, { seed: 1, shard: 0, step: 5, row: 2 }, { sentinelStart: 32099, eosId: 1 })
 */
export function spanCorrupt(ids: ArrayLike<number>, key: SpanKey, opts: SpanCorruptionOptions): { inputs: number[]; targets: number[] } {
  if (ids.length < 2) throw new EngineError('config', `span corruption: rows need at least 2 tokens, got ${ids.length}`);
  const rng = new Counter(key.seed, key.shard, key.step, key.row, 0x7435); // 't5' stream
  const mask = randomSpansNoiseMask(ids.length, seededShuffle(rng), opts.noiseDensity, opts.meanSpanLength);
  return applyNoiseMask(ids, mask, opts.sentinelStart, opts.eosId);
}

/** What a seq2seq batch needs of the model's config (T5Config has both). */
export interface Seq2seqIds {
  pad_token_id: number;
  decoder_start_token_id: number;
}

/** One example: token ids of the source and of the target (EOS included where wanted). */
export interface Seq2seqPair {
  inputs: number[];
  targets: number[];
}

/**
 * The training feeds of t5TrainLoss for `pairs`, padded to (B, srcLen) and (B, tgtLen):
 * input_ids (pad_token_id past the end) with attention_mask 1/0, labels (−100 past the end) and
 * decoder_input_ids = labels shifted right behind decoder_start_token_id (HF's _shift_right).
 * A pair longer than its length is an error naming the example (cut them before).
 */
export function seq2seqBatch(pairs: Seq2seqPair[], ids: Seq2seqIds, srcLen: number, tgtLen: number, where = 'batch'): Record<string, TensorData> {
  const B = pairs.length;
  if (B === 0) throw new EngineError('input', `${where}: no examples`);
  const input = new Array<number>(B * srcLen).fill(ids.pad_token_id);
  const mask = new Array<number>(B * srcLen).fill(0);
  const labels = new Array<number>(B * tgtLen).fill(IGNORE_INDEX);
  const dec = new Array<number>(B * tgtLen).fill(ids.pad_token_id);
  pairs.forEach((p, b) => {
    if (p.inputs.length > srcLen) throw new EngineError('input', `${where}: example ${b} has ${p.inputs.length} input tokens, more than the ${srcLen} of the batch`);
    if (p.targets.length > tgtLen) throw new EngineError('input', `${where}: example ${b} has ${p.targets.length} target tokens, more than the ${tgtLen} of the batch`);
    if (p.inputs.length === 0) throw new EngineError('input', `${where}: example ${b} has no input tokens`);
    p.inputs.forEach((t, i) => {
      input[b * srcLen + i] = t;
      mask[b * srcLen + i] = 1;
    });
    dec[b * tgtLen] = ids.decoder_start_token_id;
    p.targets.forEach((t, i) => {
      labels[b * tgtLen + i] = t;
      if (i + 1 < tgtLen) dec[b * tgtLen + i + 1] = t;
    });
  });
  return {
    input_ids: tensor('int64', [B, srcLen], input),
    attention_mask: tensor('int64', [B, srcLen], mask),
    decoder_input_ids: tensor('int64', [B, tgtLen], dec),
    labels: tensor('int64', [B, tgtLen], labels),
  };
}

/**
 * One span-corruption training batch from (B, L) rows of a token shard (e.g. sampleLmBatch's
 * tokens): every row corrupted with its own key, the feeds sized by spanCorruptionLengths(L), so
 * no position is padding.
 * @example spanCorruptionBatch(sampleLmBatch(ids, req).tokens, 8, 64, { seed, shard, step }, { sentinelStart: 32099, eosId: 1 }, cfg)
 */
export function spanCorruptionBatch(
  rows: ArrayLike<number | bigint>,
  batch: number,
  length: number,
  key: Omit<SpanKey, 'row'>,
  opts: SpanCorruptionOptions,
  ids: Seq2seqIds,
): Record<string, TensorData> {
  if (rows.length !== batch * length) throw new Error(`spanCorruptionBatch: ${rows.length} tokens for (B, L) = (${batch}, ${length})`);
  const lens = spanCorruptionLengths(length, opts.noiseDensity, opts.meanSpanLength);
  const pairs: Seq2seqPair[] = [];
  for (let b = 0; b < batch; b++) {
    const row = Array.from({ length }, (_, t) => Number(rows[b * length + t]));
    pairs.push(spanCorrupt(row, { ...key, row: b }, opts));
  }
  return seq2seqBatch(pairs, ids, lens.inputs, lens.targets, 'span corruption');
}

/**
 * Span-corruption options from a tokenizer with T5's sentinels (an `hf` tokenizer.json of a T5):
 * `<extra_id_0>` and the ones after it counting down, as many as a row of `rowLength` needs, and
 * its end-of-text (`</s>`). A tokenizer without them is a config error naming `where`.
 * @example const opts = t5SpanOptions(tok, 16, 'models/t5-small/tokenizer.json')
 */
export function t5SpanOptions(
  tok: { tokenId(token: string): number | null; eot: number },
  rowLength: number,
  where: string,
  o: { noiseDensity?: number; meanSpanLength?: number } = {},
): SpanCorruptionOptions {
  const start = tok.tokenId('<extra_id_0>');
  if (start === null) throw new EngineError('config', `${where}: has no <extra_id_0> sentinel token; span corruption needs a T5 tokenizer`);
  const { noiseSpans } = noiseCounts(rowLength, o.noiseDensity, o.meanSpanLength);
  for (let k = 1; k < noiseSpans; k++) {
    const id = tok.tokenId(`<extra_id_${k}>`);
    if (id !== start - k) throw new EngineError('config', `${where}: <extra_id_${k}> is ${id === null ? 'missing' : `id ${id}`}, expected ${start - k} (rows of ${rowLength} tokens need ${noiseSpans} sentinels counting down from <extra_id_0>)`);
  }
  return { sentinelStart: start, eosId: tok.eot, ...o };
}
