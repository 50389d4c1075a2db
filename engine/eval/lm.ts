// Language-model evaluation: feeds for exported decoders and token-weighted perplexity.
//
// Perplexity runs the model's own graph with a loss head appended (SoftmaxCrossEntropyLoss with
// reduction 'sum' over logits), so only one scalar per batch leaves ORT instead of (B, T, V)
// logits, and a quantized graph is scored exactly as it will be served.

import * as ort from 'onnxruntime-node';
import { evalLmBatches, type LmBatch } from '../data/sampler';
import { EngineError } from '../errors';
import type { Graph } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { createSession, type SessionConfig } from '../runtime';
import { rewriteSites } from '../quant/rewrite';

export type Feeds = Record<string, ort.Tensor>;

/**
 * Feeds for one (B, T) token batch: `input_ids`, plus empty (B, nh, 0, hs) past tensors for every
 * past_key_values input of a KV-cache graph (a first decoding step scores like no cache at all).
 */
export function lmFeeds(graph: Graph, tokens: BigInt64Array, dims: [number, number]): Feeds {
  const feeds: Feeds = {};
  for (const v of graph.inputs) {
    if (v.name === 'input_ids') feeds[v.name] = new ort.Tensor('int64', tokens, dims);
    else if (v.name.startsWith('past_key_values.')) {
      const [, nh, , hs] = v.shape ?? [];
      if (typeof nh !== 'number' || typeof hs !== 'number') throw new Error(`lmFeeds: input ${v.name} needs static heads and head size, has [${v.shape?.join(', ')}]`);
      feeds[v.name] = new ort.Tensor('float32', new Float32Array(0), [dims[0], nh, 0, hs]);
    } else if (v.name !== 'targets') throw new Error(`lmFeeds: graph ${graph.name} has input "${v.name}", which a language-model batch cannot feed`);
  }
  if (!feeds.input_ids) throw new Error(`lmFeeds: graph ${graph.name} has no input_ids input`);
  return feeds;
}

/** A copy of an LM graph whose only output is `nll_sum`, the summed next-token NLL of `targets`. */
export function withNllHead(src: Graph): Graph {
  const g = rewriteSites(src, [], () => {
    throw new Error('unreachable');
  });
  const logits = g.outputs.find((v) => v.name === 'logits');
  if (!logits) throw new Error(`perplexity: graph ${src.name} has no "logits" output`);
  const V = logits.shape?.[logits.shape.length - 1];
  if (typeof V !== 'number') throw new Error(`perplexity: logits of ${src.name} need a static vocabulary dim, have [${logits.shape?.join(', ')}]`);
  const targets = g.input('targets', 'int64', ['batch', 'seq']);
  const flat = g.op('Reshape', [logits, g.vector([-1, V])], {}, { name: 'nll/reshape_logits' })[0]; // (B·T, V)
  const labels = g.op('Reshape', [targets, g.vector([-1])], {}, { name: 'nll/reshape_targets' })[0]; // (B·T)
  const nll = g.op('SoftmaxCrossEntropyLoss', [flat, labels], { reduction: 'sum' }, { outputs: 1, name: 'nll/loss' })[0];
  g.outputs.length = 0;
  g.output(nll, 'nll_sum');
  return g;
}

/**
 * The evaluation batches of a split, made on demand each time they are iterated (a whole
 * validation split is never held as int64 batches at once), with their counts known up front.
 */
export interface EvalWindows extends Iterable<LmBatch> {
  /** Batches one iteration yields. */
  readonly batches: number;
  /** Target tokens over all of them. */
  readonly tokens: number;
  /** Rows of a full batch and tokens of a full window. */
  readonly batchSize: number;
  readonly contextLength: number;
}

/**
 * Evaluation batches of `ids` in non-overlapping windows of `contextLength` tokens, or of the
 * model's block_size (the longest it takes) when that is null. With `batches: null` they cover
 * the whole split: every token after the first is a target exactly once, the last, shorter window
 * included as a batch of its own (an exported decoder takes any length), so the tokens scored are
 * ids.length - 1. A number keeps only that many first batches. This is where a window too long
 * for the model's positions is refused.
 * @example const val = lmEvalWindows(valIds, cfg.block_size, { batchSize: 8, contextLength: null, batches: null })
 */
export function lmEvalWindows(ids: Uint16Array | Uint32Array, blockSize: number, o: { batchSize: number; contextLength: number | null; batches: number | null }): EvalWindows {
  const T = o.contextLength ?? blockSize;
  if (T > blockSize) throw new EngineError('config', `contextLength ${T} exceeds the model's block_size ${blockSize}`);
  if (ids.length < 2) throw new EngineError('config', `${ids.length} tokens are too few to score: a window needs at least 2`);
  const B = o.batchSize;
  const windows = Math.floor((ids.length - 1) / T);
  const rest = (ids.length - 1) % T; // targets after the last full window
  const full = Math.min(Math.ceil(windows / B), o.batches ?? Infinity);
  const tail = rest > 0 && full < (o.batches ?? Infinity);
  const fullWindows = Math.min(windows, full * B);
  return {
    batches: full + (tail ? 1 : 0),
    tokens: fullWindows * T + (tail ? rest : 0),
    batchSize: Math.min(B, Math.max(windows, 1)),
    contextLength: windows > 0 ? T : rest,
    *[Symbol.iterator]() {
      let n = 0;
      for (const b of evalLmBatches(ids, B, T)) {
        if (n++ >= full) return;
        yield b;
      }
      if (tail) {
        const start = ids.length - 1 - rest;
        yield { tokens: BigInt64Array.from(ids.subarray(start, start + rest), BigInt), targets: BigInt64Array.from(ids.subarray(start + 1, start + rest + 1), BigInt), dims: [1, rest] };
      }
    },
  };
}

export interface PerplexityResult {
  /** exp(total NLL / total tokens). */
  ppl: number;
  /** Mean NLL per token in nats. */
  nll: number;
  tokens: number;
  batches: number;
}

/**
 * Token-weighted perplexity of an LM graph over evaluation batches (e.g. `evalLmBatches` on the
 * validation shards): every target token counts once, so a short last batch weighs less.
 * `onBatch(done, of)` runs after each batch (`of` is NaN when the iterable does not say), for heartbeats.
 * @example const { ppl } = await lmPerplexity(exportGpt(cfg, weights), evalLmBatches(val, 8, 64))
 */
export async function lmPerplexity(graph: Graph, batches: Iterable<LmBatch>, cfg: SessionConfig = {}, onBatch?: (done: number, of: number) => void): Promise<PerplexityResult> {
  const count = Array.isArray(batches) ? batches.length : typeof (batches as Partial<EvalWindows>).batches === 'number' ? (batches as EvalWindows).batches : NaN;
  const head = withNllHead(graph);
  const session = await createSession(serializeModel(head).model, { graphOptimizationLevel: 'all', ...cfg });
  let total = 0;
  let tokens = 0;
  let n = 0;
  try {
    for (const b of batches) {
      const feeds = lmFeeds(head, b.tokens, b.dims);
      feeds.targets = new ort.Tensor('int64', b.targets, b.dims);
      const r = await session.run(feeds);
      const s = (r.nll_sum.data as Float32Array)[0];
      if (!Number.isFinite(s)) throw new Error(`perplexity: batch ${n} of graph ${graph.name} gave a non-finite NLL (${s})`);
      total += s;
      tokens += b.dims[0] * b.dims[1];
      n++;
      onBatch?.(n, count);
    }
  } finally {
    await session.release();
  }
  if (tokens === 0) throw new Error(`perplexity: no evaluation batches for graph ${graph.name} (validation split too short for the context length?)`);
  return { ppl: Math.exp(total / tokens), nll: total / tokens, tokens, batches: n };
}
