// The publish gate for T5 (seq2seq) models: the model's served graphs — the encoder and the decoder
// step with its KV cache (export-t5-cached.ts), the pair `truthgpt generate` runs — quantized, each
// re-loaded from its bytes, and the quantized pair's greedy answers scored against the targets beside
// fp32's; refused when the exact match falls by more than `maxExactMatchDrop` (absolute: 0.01 is one
// point). The target perplexity of the cache-free graph (exportT5 and its quantized rewrite, teacher
// forcing) is measured beside it and reported, not gated. Language models are gated on perplexity
// (validate.ts), classifiers on accuracy (classifier-gate.ts).

import type { Seq2seqPair, Seq2seqIds } from '../data/t5-span';
import { seq2seqEvalBatches } from '../data/seq2seq';
import { EngineError } from '../errors';
import { T5Generator } from '../eval/generate-t5';
import { seq2seqExactMatch, seq2seqPerplexity } from '../eval/seq2seq';
import type { Graph } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { exportT5 } from '../models/export-bert-t5';
import { exportT5DecoderStep, exportT5Encoder, t5DecodeInfo } from '../models/export-t5-cached';
import type { T5Config } from '../models/t5';
import type { SessionConfig } from '../runtime';
import type { QuantConfigInput } from './config';
import { quantizeGraph } from './quantize';

export class ExactMatchRejectedError extends EngineError {
  /** Why, without the method: what a rejected model's manifest records. */
  readonly reason: string;
  constructor(
    readonly method: string,
    readonly fp32ExactMatch: number,
    readonly quantExactMatch: number,
    readonly drop: number,
    readonly bound: number,
    readonly examples: number,
  ) {
    const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
    const reason = `validation exact match ${pct(quantExactMatch)} vs fp32 ${pct(fp32ExactMatch)} over ${examples} examples is ${(100 * drop).toFixed(2)} points lower, above the bound maxExactMatchDrop = ${(100 * bound).toFixed(2)} points`;
    super('quant-rejected', `${method} model rejected: ${reason}`);
    this.reason = reason;
  }
}

/** A T5's ONNX models as served: the cached encoder/decoder pair (bytes), and the cache-free graph perplexity is scored on. */
export interface T5Models {
  encoder: Uint8Array;
  decoder: Uint8Array;
  full: Graph;
}

/**
 * fp32 and quantized models of a T5 (weights by HF name).
 * @example const { fp32, quant } = await quantizeT5(cfg, weights, { method: 'int8-dynamic' })
 */
export async function quantizeT5(cfg: T5Config, weights: Map<string, Float32Array>, q: QuantConfigInput): Promise<{ fp32: T5Models; quant: T5Models }> {
  const graphs = { encoder: exportT5Encoder(cfg, weights), decoder: exportT5DecoderStep(cfg, weights), full: exportT5(cfg, weights) };
  const fp32 = { encoder: serializeModel(graphs.encoder).model, decoder: serializeModel(graphs.decoder).model, full: graphs.full };
  const quant = {
    encoder: serializeModel((await quantizeGraph(graphs.encoder, q)).graph).model,
    decoder: serializeModel((await quantizeGraph(graphs.decoder, q)).graph).model,
    full: (await quantizeGraph(graphs.full, q)).graph,
  };
  return { fp32, quant };
}

export interface Seq2seqScore {
  exactMatch: number;
  matched: number;
  examples: number;
  /** Target-token perplexity (teacher forcing) over `tokens` tokens of the perplexity examples. */
  perplexity: number;
  tokens: number;
  predictions: number[][];
}

export interface Seq2seqGateResult {
  fp32: Seq2seqScore;
  quant: Seq2seqScore;
  /** fp32 exact match − the quantized model's (negative when the quantized model scores higher). */
  drop: number;
  bound: number;
  /** Examples whose greedy answer differs between the two models. */
  flips: number;
}

export interface Seq2seqGateOptions {
  method: string;
  maxExactMatchDrop: number;
  eosId: number;
  /** Decoder length: the longest target (EOS included); generation stops there. */
  tgtLen: number;
  srcLen: number;
  batchSize: number;
  ids: Seq2seqIds;
  sessionConfig?: SessionConfig;
}

async function score(m: T5Models, cfg: T5Config, emPairs: Seq2seqPair[], pplPairs: Seq2seqPair[], o: Seq2seqGateOptions): Promise<Seq2seqScore> {
  const gen = await T5Generator.load({ encoder: m.encoder, decoder: m.decoder }, t5DecodeInfo(cfg), o.sessionConfig ?? {});
  let em;
  try {
    em = await seq2seqExactMatch(gen, emPairs, { eosId: o.eosId, maxNewTokens: o.tgtLen });
  } finally {
    await gen.release();
  }
  const ppl = await seq2seqPerplexity(m.full, seq2seqEvalBatches(pplPairs, o.batchSize, o.ids, o.srcLen, o.tgtLen), o.sessionConfig ?? {});
  return { exactMatch: em.exactMatch, matched: em.matched, examples: em.examples, perplexity: ppl.ppl, tokens: ppl.tokens, predictions: em.predictions };
}

/**
 * Scores the fp32 and the quantized T5 on the same examples (exact match over `emPairs`, perplexity
 * over `pplPairs`); throws ExactMatchRejectedError naming both figures and the bound when the exact
 * match falls by more than `maxExactMatchDrop`.
 * @example await gateSeq2seq(cfg, fp32, int8, val.slice(0, 64), val, { method: 'int8-dynamic', maxExactMatchDrop: 0.02, eosId: 1, srcLen: 16, tgtLen: 8, batchSize: 8, ids: cfg })
 */
export async function gateSeq2seq(cfg: T5Config, fp32: T5Models, quant: T5Models, emPairs: Seq2seqPair[], pplPairs: Seq2seqPair[], o: Seq2seqGateOptions): Promise<Seq2seqGateResult> {
  if (!(o.maxExactMatchDrop >= 0 && o.maxExactMatchDrop <= 1)) throw new EngineError('config', `maxExactMatchDrop: ${o.maxExactMatchDrop} is not a fraction between 0 and 1 (0.01 is one point)`);
  if (emPairs.length === 0) throw new EngineError('config', `validate ${o.method}: no validation examples`);
  const s32 = await score(fp32, cfg, emPairs, pplPairs, o);
  const sq = await score(quant, cfg, emPairs, pplPairs, o);
  const drop = s32.exactMatch - sq.exactMatch;
  if (drop > o.maxExactMatchDrop) throw new ExactMatchRejectedError(o.method, s32.exactMatch, sq.exactMatch, drop, o.maxExactMatchDrop, emPairs.length);
  const same = (a: number[], b: number[]) => a.length === b.length && a.every((t, i) => t === b[i]);
  return { fp32: s32, quant: sq, drop, bound: o.maxExactMatchDrop, flips: s32.predictions.filter((p, i) => !same(p, sq.predictions[i])).length };
}
