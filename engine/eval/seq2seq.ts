// Seq2seq (T5) evaluation:
//   - perplexity: the mean cross-entropy of every target token (labels ≠ −100) with teacher
//     forcing, token-weighted over every batch given (seq2seqEvalBatches of a whole validation
//     split covers each example once), run on the model's own inference graph (exportT5, or its
//     quantized rewrite) with a loss head appended, so a quantized model scores as it is served;
//   - exact match: greedy generation (T5Generator, cached or not) against the target ids, EOS
//     included, so an answer with trailing extra tokens does not count.

import * as ort from 'onnxruntime-node';
import type { Seq2seqPair } from '../data/t5-span';
import { EngineError } from '../errors';
import type { Graph, TensorData } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { rewriteSites } from '../quant/rewrite';
import { createSession, type SessionConfig } from '../runtime';
import type { T5Generator } from './generate-t5';

export interface Seq2seqPerplexity {
  /** Mean NLL (nats) per target token. */
  nll: number;
  ppl: number;
  /** Target tokens scored (labels ≠ −100). */
  tokens: number;
  /** Examples (rows) and batches seen. */
  examples: number;
  batches: number;
}

/**
 * A copy of a T5 inference graph (inputs input_ids, attention_mask, decoder_input_ids; output logits
 * (batch, tgt_seq, V)) whose only output is `nll_sum`, the summed cross-entropy of `labels`
 * (batch, tgt_seq) with −100 ignored.
 */
export function withSeq2seqNllHead(src: Graph): Graph {
  const g = rewriteSites(src, [], () => {
    throw new Error('unreachable');
  });
  const logits = g.outputs.find((v) => v.name === 'logits');
  if (!logits) throw new EngineError('input', `seq2seq perplexity: graph ${src.name} has no "logits" output`);
  for (const name of ['input_ids', 'attention_mask', 'decoder_input_ids']) {
    if (!g.inputs.some((v) => v.name === name)) throw new EngineError('input', `seq2seq perplexity: graph ${src.name} has no input ${name} (an exportT5 graph has input_ids, attention_mask, decoder_input_ids)`);
  }
  const V = logits.shape?.[logits.shape.length - 1];
  if (typeof V !== 'number') throw new Error(`seq2seq perplexity: logits of ${src.name} need a static vocabulary dim, have [${logits.shape?.join(', ')}]`);
  const labels = g.input('labels', 'int64', ['batch', 'tgt_seq']);
  const flat = g.op('Reshape', [logits, g.vector([-1, V])], {}, { name: 'nll/reshape_logits' })[0]; // (B·Tt, V)
  const flatLabels = g.op('Reshape', [labels, g.vector([-1])], {}, { name: 'nll/reshape_labels' })[0]; // (B·Tt)
  const nll = g.op('SoftmaxCrossEntropyLoss', [flat, flatLabels], { reduction: 'sum', ignore_index: -100 }, { outputs: 1, name: 'nll/loss' })[0];
  g.outputs.length = 0;
  g.output(nll, 'nll_sum');
  return g;
}

const toOrt = (t: TensorData) => new ort.Tensor(t.dtype === 'int64' ? 'int64' : 'float32', t.data as BigInt64Array | Float32Array, t.dims);

/**
 * Token-weighted perplexity of a T5 graph over seq2seq batches (seq2seqBatch / seq2seqEvalBatches
 * feeds: input_ids, attention_mask, decoder_input_ids, labels). It covers exactly the batches given.
 * @example const r = await seq2seqPerplexity(exportT5(cfg, weights), seq2seqEvalBatches(val, 8, cfg, srcLen, tgtLen))
 */
export async function seq2seqPerplexity(graph: Graph, batches: Iterable<Record<string, TensorData>>, cfg: SessionConfig = {}, onBatch?: (done: number) => void): Promise<Seq2seqPerplexity> {
  const head = withSeq2seqNllHead(graph);
  const session = await createSession(serializeModel(head).model, { graphOptimizationLevel: 'all', ...cfg });
  let total = 0;
  let tokens = 0;
  let examples = 0;
  let n = 0;
  try {
    for (const b of batches) {
      for (const k of ['input_ids', 'attention_mask', 'decoder_input_ids', 'labels']) if (!b[k]) throw new EngineError('input', `seq2seq perplexity: batch ${n} has no ${k}`);
      const r = await session.run({ input_ids: toOrt(b.input_ids), attention_mask: toOrt(b.attention_mask), decoder_input_ids: toOrt(b.decoder_input_ids), labels: toOrt(b.labels) });
      const s = (r.nll_sum.data as Float32Array)[0];
      if (!Number.isFinite(s)) throw new EngineError('non-finite', `seq2seq perplexity: batch ${n} of graph ${graph.name} gave a non-finite NLL (${s})`);
      total += s;
      for (const l of b.labels.data as BigInt64Array) if (l !== -100n) tokens++;
      examples += b.labels.dims[0];
      n++;
      onBatch?.(n);
    }
  } finally {
    await session.release();
  }
  if (tokens === 0) throw new EngineError('input', `seq2seq perplexity: no target tokens to score for graph ${graph.name}`);
  return { nll: total / tokens, ppl: Math.exp(total / tokens), tokens, examples, batches: n };
}

export interface ExactMatch {
  /** matched / examples. */
  exactMatch: number;
  matched: number;
  examples: number;
  /** Generated ids per example, EOS included when generated. */
  predictions: number[][];
}

/**
 * Greedy generation of every example's source, compared with its target ids (EOS included).
 * `maxNewTokens` defaults to the longest target.
 * @example const em = await seq2seqExactMatch(await T5Generator.create(cfg, merged), pairs, { eosId: 1 })
 */
export async function seq2seqExactMatch(gen: T5Generator, pairs: Seq2seqPair[], o: { eosId: number; maxNewTokens?: number }): Promise<ExactMatch> {
  if (pairs.length === 0) throw new EngineError('input', 'exact match: no examples');
  const maxNewTokens = o.maxNewTokens ?? Math.max(...pairs.map((p) => p.targets.length));
  const predictions: number[][] = [];
  let matched = 0;
  for (const p of pairs) {
    const out = await gen.generate(p.inputs, { maxNewTokens, stopToken: o.eosId, temperature: 0 });
    predictions.push(out);
    if (out.length === p.targets.length && out.every((t, i) => t === p.targets[i])) matched++;
  }
  return { exactMatch: matched / pairs.length, matched, examples: pairs.length, predictions };
}
