// Text generation with an exported decoder (engine/models/export.ts), with or without its KV cache,
// for as many new tokens as asked: past block_size the context slides.
//
// The window policy, which both paths follow exactly (so greedy output with the cache equals output
// without it, token for token, and a seed gives the same text either way):
// - The model sees a window of the context, never more than block_size tokens; positions (learned
//   wpe rows or RoPE angles) count from 0 at the window's first token.
// - A prompt longer than block_size is cropped to its last block_size tokens (`promptCropped`
//   says how many were dropped).
// - When the next step's window would exceed block_size, the window restarts at the last `keep`
//   tokens (default ⌊3·block_size/4⌋; `windowKeep`) and grows again up to block_size.
// Without a cache every step runs the whole window. With the cache the prompt window runs once
// with an empty past, each later step feeds one token and the previous step's present tensors,
// and a restart re-runs the kept tokens as a fresh prompt with an empty past (the cached keys
// carry their old positions, so they cannot be reused). `windowKeep: block_size` is nanoGPT's
// generate(), which crops to the last block_size tokens every step; with the cache that is a
// block_size prefill per token.
// Cost past block_size with the cache: a keep-token prefill every block_size - keep + 1 new
// tokens, about keep / (block_size - keep + 1) positions per new token on top of the one it feeds
// (48/17 ≈ 2.8 at block_size 64 and the default), against block_size positions per token without
// a cache. Once the first restart has happened, every token is predicted from at least `keep`
// tokens of context.
//
// Sampling is seeded: (seed, step) fixes every draw, so the same call gives the same text.

import * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import type { Graph } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { mulberry32 } from '../models/blocks';
import { pastKeyName, pastValueName, presentKeyName, presentValueName, type DecoderInfo } from '../models/export';
import { createSession, type SessionConfig } from '../runtime';

export interface SamplingOptions {
  maxNewTokens: number;
  /** 0 (default) is greedy argmax; otherwise logits are divided by it before sampling. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 or absent: all). */
  topP?: number;
  seed?: number;
  /** Stop after producing this token (e.g. the tokenizer's EOT). */
  stopToken?: number;
  /** Tokens kept when the context slides past block_size (1..block_size; default ⌊3·block_size/4⌋). */
  windowKeep?: number;
}

/** New tokens and what the window policy did to get them. */
export interface Generation {
  tokens: number[];
  /** Prompt tokens left out because the prompt was longer than block_size (0 when it fit). */
  promptCropped: number;
  /** Times the context was full and restarted from its last `keep` tokens. */
  slides: number;
}

/** The tokens a slide keeps: `windowKeep` checked against block_size, or its default. */
export function windowKeep(blockSize: number, keep?: number): number {
  if (keep === undefined) return Math.max(1, Math.floor((3 * blockSize) / 4));
  if (!Number.isInteger(keep) || keep < 1 || keep > blockSize) {
    throw new EngineError('config', `generate: windowKeep must be an integer in [1, ${blockSize}] (at most block_size), got ${keep}`);
  }
  return keep;
}

/** Picks the next token from one row of logits. `u` is a uniform draw in [0, 1). */
export function pickToken(logits: Float32Array, opts: SamplingOptions, u: number): number {
  const temperature = opts.temperature ?? 0;
  if (temperature < 0) throw new Error(`sampling: temperature must be ≥ 0, got ${temperature}`);
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  const k = opts.topK && opts.topK > 0 ? Math.min(opts.topK, order.length) : order.length;
  const kept = order.slice(0, k);
  const max = logits[kept[0]];
  const weights = kept.map((i) => Math.exp((logits[i] - max) / temperature));
  const sum = weights.reduce((a, b) => a + b, 0);
  let probs = weights.map((w) => w / sum);
  const topP = opts.topP ?? 1;
  if (topP <= 0 || topP > 1) throw new Error(`sampling: topP must be in (0, 1], got ${topP}`);
  let n = probs.length;
  if (topP < 1) {
    let acc = 0;
    n = 0;
    while (n < probs.length && acc < topP) acc += probs[n++];
    const s = probs.slice(0, n).reduce((a, b) => a + b, 0);
    probs = probs.slice(0, n).map((p) => p / s);
  }
  let acc = 0;
  for (let i = 0; i < n; i++) {
    acc += probs[i];
    if (u < acc) return kept[i];
  }
  return kept[n - 1];
}

/** A loaded decoder: an ORT session on an exported GPT graph (float or quantized). */
export class Decoder {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly info: DecoderInfo,
  ) {}

  /** From a graph, ONNX bytes or a model path; `info.kvCache` must match how the graph was exported. */
  static async create(model: Graph | Uint8Array | string, info: DecoderInfo, cfg: SessionConfig = {}): Promise<Decoder> {
    const bytes = typeof model === 'string' || model instanceof Uint8Array ? model : serializeModel(model).model;
    const session = await createSession(bytes, { graphOptimizationLevel: 'all', ...cfg });
    const hasPast = session.inputNames.includes(pastKeyName(0));
    if (hasPast !== info.kvCache) {
      await session.release();
      throw new Error(`Decoder: info.kvCache is ${info.kvCache} but the model ${hasPast ? 'has' : 'has no'} ${pastKeyName(0)} input`);
    }
    return new Decoder(session, info);
  }

  /** Continues `prompt` (token ids) and returns only the new tokens. */
  async generate(prompt: number[], opts: SamplingOptions): Promise<number[]> {
    return (await this.decode(prompt, opts)).tokens;
  }

  /**
   * Continues `prompt` for `maxNewTokens` tokens (fewer only at `stopToken`), sliding the context
   * past block_size as the file header describes.
   * @example const { tokens, promptCropped } = await d.decode(tok.encode('The '), { maxNewTokens: 200, temperature: 0.8, topK: 40, seed: 1 })
   */
  async decode(prompt: number[], opts: SamplingOptions): Promise<Generation> {
    if (prompt.length === 0) throw new EngineError('input', 'generate: the prompt must hold at least one token');
    const { blockSize, kvCache } = this.info;
    const keep = windowKeep(blockSize, opts.windowKeep);
    const rand = mulberry32(opts.seed ?? 0);
    const ctx = [...prompt];
    const promptCropped = Math.max(0, prompt.length - blockSize);
    let start = promptCropped; // the window is ctx[start..]
    let cached = 0; // tokens of the window already in the past tensors (cache path only)
    let slides = 0;
    const feeds = kvCache ? this.emptyPast() : {};
    const tokens: number[] = [];
    for (let i = 0; i < opts.maxNewTokens; i++) {
      if (ctx.length - start > blockSize) {
        start = ctx.length - keep;
        slides++;
        if (kvCache) Object.assign(feeds, this.emptyPast());
        cached = 0;
      }
      const input = ctx.slice(start + cached); // without a cache `cached` stays 0: the whole window
      feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(input, BigInt), [1, input.length]);
      const r = await this.session.run(feeds);
      const next = pickToken(this.lastRow(r.logits), opts, rand());
      tokens.push(next);
      if (next === opts.stopToken) break;
      if (kvCache) {
        for (let l = 0; l < this.info.nLayer; l++) {
          feeds[pastKeyName(l)] = r[presentKeyName(l)];
          feeds[pastValueName(l)] = r[presentValueName(l)];
        }
        cached = ctx.length - start;
      }
      ctx.push(next);
    }
    return { tokens, promptCropped, slides };
  }

  private emptyPast(): Record<string, ort.Tensor> {
    const { nLayer, nHead, headDim } = this.info;
    const feeds: Record<string, ort.Tensor> = {};
    for (let l = 0; l < nLayer; l++) {
      feeds[pastKeyName(l)] = new ort.Tensor('float32', new Float32Array(0), [1, nHead, 0, headDim]);
      feeds[pastValueName(l)] = new ort.Tensor('float32', new Float32Array(0), [1, nHead, 0, headDim]);
    }
    return feeds;
  }

  private lastRow(logits: ort.Tensor): Float32Array {
    const V = this.info.vocabSize;
    const data = logits.data as Float32Array;
    return data.subarray(data.length - V);
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
