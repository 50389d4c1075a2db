// Text generation with an exported decoder (engine/models/export.ts), with or without its KV cache.
//
// Without a cache every step re-runs the whole (cropped) context, as nanoGPT's generate() does; with
// one, the prompt is run once with an empty past and each later step feeds one token and the
// previous step's present tensors. Sampling is seeded: (seed, step) fixes every draw, so the same
// call gives the same text.

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

  /** The most new tokens a KV-cache decoder can add to a prompt of this many tokens (the last one is never fed back). */
  room(promptLength: number): number {
    return this.info.blockSize - promptLength + 1;
  }

  /** Continues `prompt` (token ids) and returns only the new tokens. */
  async generate(prompt: number[], opts: SamplingOptions): Promise<number[]> {
    if (prompt.length === 0) throw new Error('generate: the prompt must hold at least one token');
    const rand = mulberry32(opts.seed ?? 0);
    return this.info.kvCache ? this.withCache(prompt, opts, rand) : this.withoutCache(prompt, opts, rand);
  }

  private lastRow(logits: ort.Tensor): Float32Array {
    const V = this.info.vocabSize;
    const data = logits.data as Float32Array;
    return data.subarray(data.length - V);
  }

  private async withoutCache(prompt: number[], opts: SamplingOptions, rand: () => number): Promise<number[]> {
    const ctx = [...prompt];
    const out: number[] = [];
    for (let i = 0; i < opts.maxNewTokens; i++) {
      const window = ctx.slice(-this.info.blockSize); // crop like nanoGPT: positions stop at block_size
      const ids = new ort.Tensor('int64', BigInt64Array.from(window, BigInt), [1, window.length]);
      const r = await this.session.run({ input_ids: ids }, ['logits']);
      const next = pickToken(this.lastRow(r.logits), opts, rand());
      out.push(next);
      ctx.push(next);
      if (next === opts.stopToken) break;
    }
    return out;
  }

  private async withCache(prompt: number[], opts: SamplingOptions, rand: () => number): Promise<number[]> {
    const { nLayer, nHead, headDim, blockSize } = this.info;
    // The cache has no window to crop: every position must exist.
    if (prompt.length > blockSize) throw new EngineError('config', `generate: the prompt is ${prompt.length} tokens, longer than block_size ${blockSize}`);
    if (opts.maxNewTokens > this.room(prompt.length)) {
      throw new EngineError('config', 
        `generate: prompt (${prompt.length}) + maxNewTokens (${opts.maxNewTokens}) needs ${prompt.length + opts.maxNewTokens - 1} positions, block_size is ${blockSize}: at most ${this.room(prompt.length)} new tokens fit`,
      );
    }
    const feeds: Record<string, ort.Tensor> = {};
    for (let l = 0; l < nLayer; l++) {
      feeds[pastKeyName(l)] = new ort.Tensor('float32', new Float32Array(0), [1, nHead, 0, headDim]);
      feeds[pastValueName(l)] = new ort.Tensor('float32', new Float32Array(0), [1, nHead, 0, headDim]);
    }
    let input = prompt;
    const out: number[] = [];
    for (let i = 0; i < opts.maxNewTokens; i++) {
      feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from(input, BigInt), [1, input.length]);
      const r = await this.session.run(feeds);
      const next = pickToken(this.lastRow(r.logits), opts, rand());
      out.push(next);
      if (next === opts.stopToken) break;
      for (let l = 0; l < nLayer; l++) {
        feeds[pastKeyName(l)] = r[presentKeyName(l)];
        feeds[pastValueName(l)] = r[presentValueName(l)];
      }
      input = [next];
    }
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
