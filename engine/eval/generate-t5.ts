// T5 generation (encoder-decoder), greedy or seeded sampling, as Hugging Face's
// model.generate(do_sample=…, num_beams=1) decodes: the decoder starts from
// decoder_start_token_id (T5: the pad id, 0) and each step appends the picked token.
//
// With the cache (default) the encoder graph runs once per source and also yields every decoder
// layer's cross-attention keys and values; the decoder-step graph then feeds one token per step
// with the self-attention past of the previous step (export-t5-cached.ts). Without it every step
// reruns the cache-free exportT5 graph (encoder included) on the whole decoder prefix. Both pick
// tokens with the same pickToken and the same seeded draws, so greedy output and seeded samples are
// the same either way. T5's positions are relative, so the decoder has no block_size to slide past.

import * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import type { Graph } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { mulberry32 } from '../models/blocks';
import { exportT5 } from '../models/export-bert-t5';
import {
  exportT5DecoderStep,
  exportT5Encoder,
  t5CrossKey,
  t5CrossValue,
  t5DecodeInfo,
  t5EncoderCrossKey,
  t5EncoderCrossValue,
  t5PastSelfKey,
  t5PastSelfValue,
  t5PresentSelfKey,
  t5PresentSelfValue,
  type T5DecodeInfo,
} from '../models/export-t5-cached';
import type { T5ConfigInput } from '../models/t5';
import { createSession, type SessionConfig } from '../runtime';
import { pickToken, type SamplingOptions } from './generate';

type Model = Graph | Uint8Array | string;
const bytesOf = (m: Model) => (typeof m === 'string' || m instanceof Uint8Array ? m : serializeModel(m).model);
const int64 = (ids: number[]) => new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);

/** The sessions of one way to decode: the cached pair, or the single cache-free graph. */
type Sessions = { kind: 'cached'; encoder: ort.InferenceSession; decoder: ort.InferenceSession } | { kind: 'plain'; model: ort.InferenceSession };

/** A loaded T5 for generation. */
export class T5Generator {
  private constructor(
    private readonly s: Sessions,
    readonly info: T5DecodeInfo,
  ) {}

  /**
   * Builds the graphs from a config and weights (HF T5 names, as t5Params lists them).
   * @example const g = await T5Generator.create(cfg, weights); const ids = await g.generate(src, { maxNewTokens: 20, stopToken: 1 })
   */
  static async create(cfg: T5ConfigInput, weights: Map<string, Float32Array>, o: { kvCache?: boolean; session?: SessionConfig } = {}): Promise<T5Generator> {
    const info = t5DecodeInfo(cfg);
    if (o.kvCache === false) return T5Generator.load({ model: exportT5(cfg, weights) }, info, o.session);
    return T5Generator.load({ encoder: exportT5Encoder(cfg, weights), decoder: exportT5DecoderStep(cfg, weights) }, info, o.session);
  }

  /**
   * From stored graphs: the cached pair (exportT5Encoder + exportT5DecoderStep) or the cache-free
   * exportT5 graph, as graphs, ONNX bytes or paths. Each must have the inputs its role needs.
   */
  static async load(models: { encoder: Model; decoder: Model } | { model: Model }, info: T5DecodeInfo, cfg: SessionConfig = {}): Promise<T5Generator> {
    const open = async (m: Model, role: string, needs: string[]) => {
      const s = await createSession(bytesOf(m), { graphOptimizationLevel: 'all', ...cfg });
      const missing = needs.filter((n) => !s.inputNames.includes(n));
      if (missing.length) {
        await s.release();
        throw new EngineError('input', `T5Generator: the ${role} model has no input ${missing.join(', ')} (has ${s.inputNames.join(', ')})`);
      }
      return s;
    };
    if ('model' in models) return new T5Generator({ kind: 'plain', model: await open(models.model, 'cache-free', ['input_ids', 'attention_mask', 'decoder_input_ids']) }, info);
    const encoder = await open(models.encoder, 'encoder', ['input_ids', 'attention_mask']);
    const decoder = await open(models.decoder, 'decoder-step', ['decoder_input_ids', 'encoder_attention_mask', t5PastSelfKey(0), t5CrossKey(0)]).catch(async (err: unknown) => {
      await encoder.release();
      throw err;
    });
    return new T5Generator({ kind: 'cached', encoder, decoder }, info);
  }

  get kvCache(): boolean {
    return this.s.kind === 'cached';
  }

  /**
   * The new tokens for source `inputIds`: up to `maxNewTokens`, ending at `stopToken` (T5's eos,
   * id 1, as HF does) when it is given. The decoder start token is not included.
   */
  async generate(inputIds: number[], opts: SamplingOptions): Promise<number[]> {
    if (inputIds.length === 0) throw new EngineError('input', 'T5 generate: the source must hold at least one token');
    const rand = mulberry32(opts.seed ?? 0);
    const out: number[] = [];
    const step = this.s.kind === 'cached' ? await this.cachedSteps(this.s, inputIds) : this.plainSteps(this.s.model, inputIds);
    let next = this.info.decoderStartTokenId;
    for (let i = 0; i < opts.maxNewTokens; i++) {
      next = pickToken(await step(next), opts, rand());
      out.push(next);
      if (next === opts.stopToken) break;
    }
    return out;
  }

  /** Each call feeds the latest decoder token and returns the logits row for the next one. */
  private plainSteps(model: ort.InferenceSession, src: number[]): (token: number) => Promise<Float32Array> {
    const decoded: number[] = [];
    const ids = int64(src);
    const mask = int64(src.map(() => 1));
    return async (token) => {
      decoded.push(token);
      const r = await model.run({ input_ids: ids, attention_mask: mask, decoder_input_ids: int64(decoded) }, ['logits']);
      return this.lastRow(r.logits);
    };
  }

  private async cachedSteps(s: Extract<Sessions, { kind: 'cached' }>, src: number[]): Promise<(token: number) => Promise<Float32Array>> {
    const { nLayer, nHead, dKv } = this.info;
    const mask = int64(src.map(() => 1));
    const enc = await s.encoder.run({ input_ids: int64(src), attention_mask: mask });
    const feeds: Record<string, ort.Tensor> = { encoder_attention_mask: mask };
    for (let l = 0; l < nLayer; l++) {
      feeds[t5CrossKey(l)] = enc[t5EncoderCrossKey(l)];
      feeds[t5CrossValue(l)] = enc[t5EncoderCrossValue(l)];
      feeds[t5PastSelfKey(l)] = new ort.Tensor('float32', new Float32Array(0), [1, nHead, 0, dKv]);
      feeds[t5PastSelfValue(l)] = new ort.Tensor('float32', new Float32Array(0), [1, nHead, 0, dKv]);
    }
    return async (token) => {
      feeds.decoder_input_ids = int64([token]);
      const r = await s.decoder.run(feeds);
      for (let l = 0; l < nLayer; l++) {
        feeds[t5PastSelfKey(l)] = r[t5PresentSelfKey(l)];
        feeds[t5PastSelfValue(l)] = r[t5PresentSelfValue(l)];
      }
      return this.lastRow(r.logits);
    };
  }

  private lastRow(logits: ort.Tensor): Float32Array {
    const V = this.info.vocabSize;
    const data = logits.data as Float32Array;
    return data.subarray(data.length - V);
  }

  async release(): Promise<void> {
    if (this.s.kind === 'plain') await this.s.model.release();
    else await Promise.all([this.s.encoder.release(), this.s.decoder.release()]);
  }
}
