// T5 inference export for generation with a cache, in two graphs (the layout of Hugging Face
// Optimum's encoder / decoder-with-past ONNX exports):
//
//   encoder  input_ids, attention_mask int64 (batch, src_seq)
//            → last_hidden_state (batch, src_seq, d_model),
//              present.{i}.encoder.key|value (batch, n_heads, src_seq, d_kv) for every decoder layer i:
//              the cross-attention keys and values, computed once per source
//   decoder  decoder_input_ids int64 (batch, seq), encoder_attention_mask int64 (batch, src_seq),
//            past_key_values.{i}.decoder.key|value (batch, n_heads, past, d_kv),
//            past_key_values.{i}.encoder.key|value (the encoder graph's presents)
//            → logits (batch, seq, V), present.{i}.decoder.key|value (batch, n_heads, past + seq, d_kv)
//
// The first decoder call passes decoder past tensors with past = 0. The decoder's new tokens sit at
// positions past..past+seq-1: their causal relative-position buckets (key - query, T5's learned
// bias of block 0, shared by every layer) and their causal mask are computed from those positions,
// so a step over one token equals the last row of the cache-free decoder (t5.ts t5Decoder) over
// the whole sequence. Weights are initializers; each graph holds only the weights it reads.
// exportT5 (export-bert-t5.ts) stays the cache-free graph that reruns everything per call.

import { Graph, type Value } from '../graph/ir';
import { add, concat, gather, matmul, mul, reshape, scalar, softmax, sub, transpose, unsqueeze } from '../graph/ops';
import type { ParamLookup } from './blocks';
import { initializerParams } from './export';
import { batchAndSeq, hfLinear, paddingMask, relativePositionBucket, reshapeTo, rmsNorm, t5FeedForward, type SeqLen } from './layers';
import { t5Encoder, t5Params, T5ConfigSchema, type T5Config, type T5ConfigInput } from './t5';

/** Graph I/O names of the cached T5 export, shared by the exporter and the generation loop. */
export const t5PastSelfKey = (layer: number) => `past_key_values.${layer}.decoder.key`;
export const t5PastSelfValue = (layer: number) => `past_key_values.${layer}.decoder.value`;
export const t5PresentSelfKey = (layer: number) => `present.${layer}.decoder.key`;
export const t5PresentSelfValue = (layer: number) => `present.${layer}.decoder.value`;
export const t5CrossKey = (layer: number) => `past_key_values.${layer}.encoder.key`;
export const t5CrossValue = (layer: number) => `past_key_values.${layer}.encoder.value`;
export const t5EncoderCrossKey = (layer: number) => `present.${layer}.encoder.key`;
export const t5EncoderCrossValue = (layer: number) => `present.${layer}.encoder.value`;

/** What the generation loop needs to drive the two graphs. */
export interface T5DecodeInfo {
  /** Decoder layers (num_decoder_layers, else num_layers). */
  nLayer: number;
  nHead: number;
  dKv: number;
  vocabSize: number;
  decoderStartTokenId: number;
}

export function t5DecodeInfo(cfgIn: T5ConfigInput): T5DecodeInfo {
  const cfg = T5ConfigSchema.parse(cfgIn);
  return { nLayer: cfg.num_decoder_layers ?? cfg.num_layers, nHead: cfg.num_heads, dKv: cfg.d_kv, vocabSize: cfg.vocab_size, decoderStartTokenId: cfg.decoder_start_token_id };
}

const crossName = (i: number, w: 'k' | 'v') => `decoder.block.${i}.layer.1.EncDecAttention.${w}.weight`;

/** (B·T, nh·dkv) → (B, nh, T, dkv). */
const heads = (x: Value, T: SeqLen, cfg: T5Config) => transpose(reshapeTo(x, [-1, T, cfg.num_heads, cfg.d_kv]), [0, 2, 1, 3]);

/**
 * The encoder graph: encoder output and, per decoder layer, the cross-attention keys and values.
 * @example const enc = exportT5Encoder(cfg, weights); saveModel(enc, 't5-encoder.onnx')
 */
export function exportT5Encoder(cfgIn: T5ConfigInput, weights: Map<string, Float32Array>, opts: { graphName?: string } = {}): Graph {
  const cfg = T5ConfigSchema.parse(cfgIn);
  const layers = cfg.num_decoder_layers ?? cfg.num_layers;
  const reads = (n: string) => n === 'shared.weight' || n.startsWith('encoder.') || /^decoder\.block\.\d+\.layer\.1\.EncDecAttention\.[kv]\.weight$/.test(n);
  const g = new Graph(opts.graphName ?? 't5_encoder');
  const p = initializerParams(g, t5Params(cfg).filter((s) => reads(s.name)), weights, 'exportT5Encoder');
  const ids = g.input('input_ids', 'int64', ['batch', 'src_seq']);
  const mask = g.input('attention_mask', 'int64', ['batch', 'src_seq']);
  const [, Ts] = batchAndSeq(ids, 'exportT5Encoder');
  const enc = t5Encoder(cfg, ids, mask, p); // (B·Ts, d)
  g.output(reshapeTo(enc, [-1, Ts, cfg.d_model]), 'last_hidden_state'); // (B, Ts, d)
  for (let i = 0; i < layers; i++) {
    g.output(heads(hfLinear(enc, p, crossName(i, 'k').slice(0, -'.weight'.length), false), Ts, cfg), t5EncoderCrossKey(i)); // (B·Ts, nh·dkv) → (B, nh, Ts, dkv)
    g.output(heads(hfLinear(enc, p, crossName(i, 'v').slice(0, -'.weight'.length), false), Ts, cfg), t5EncoderCrossValue(i));
  }
  return g;
}

/**
 * Causal relative-position bias (1, nh, Tq, Tk) for queries at `qPos` (Tq) and keys at `kPos` (Tk),
 * from the (num_buckets, nh) table of decoder block 0: the bucket of key - query, clipped to
 * ±max_distance first (every distance beyond it shares the last bucket, so clipping is exact).
 */
function decoderPositionBias(g: Graph, p: ParamLookup, cfg: T5Config, qPos: Value, kPos: Value): Value {
  const M = cfg.relative_attention_max_distance;
  const table = Array.from({ length: 2 * M + 1 }, (_, r) => relativePositionBucket(r - M, false, cfg.relative_attention_num_buckets, M));
  const rel = sub(unsqueeze(kPos, [0]), unsqueeze(qPos, [1])); // key - query: (1, Tk) - (Tq, 1) → (Tq, Tk)
  const clipped = g.op('Max', [g.op('Min', [rel, g.scalar(M, 'int64')])[0], g.scalar(-M, 'int64')])[0]; // (Tq, Tk) in [-M, M]
  const idx = gather(g.vector(table), add(clipped, g.scalar(M, 'int64'))); // (Tq, Tk) bucket ids
  const values = gather(p('decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'), idx); // (Tq, Tk, nh)
  return unsqueeze(transpose(values, [2, 0, 1]), [0]); // (nh, Tq, Tk) → (1, nh, Tq, Tk)
}

/** softmax(q·kᵀ + bias)·v over (B, nh, Tq, dkv) × (B, nh, Tk, dkv), heads merged and projected by `o`. T5 does not scale by 1/√d. */
function attend(q: Value, k: Value, v: Value, bias: Value | null, p: ParamLookup, o: string, cfg: T5Config): Value {
  let att = matmul(q, transpose(k, [0, 1, 3, 2])); // (B, nh, Tq, dkv) @ (B, nh, dkv, Tk) → (B, nh, Tq, Tk)
  if (bias) att = add(att, bias);
  const y = matmul(softmax(att, -1), v); // (B, nh, Tq, Tk) @ (B, nh, Tk, dkv) → (B, nh, Tq, dkv)
  const merged = reshape(transpose(y, [0, 2, 1, 3]), [-1, cfg.num_heads * cfg.d_kv]); // (B, Tq, nh, dkv) → (B·Tq, nh·dkv)
  return hfLinear(merged, p, o, false); // (B·Tq, nh·dkv) @ (d, nh·dkv)ᵀ → (B·Tq, d)
}

/**
 * The decoder-step graph: new decoder tokens against the cached self-attention keys/values and the
 * encoder's cross-attention keys/values; logits of the new tokens and the grown cache.
 * @example const dec = exportT5DecoderStep(cfg, weights); saveModel(dec, 't5-decoder-kv.onnx')
 */
export function exportT5DecoderStep(cfgIn: T5ConfigInput, weights: Map<string, Float32Array>, opts: { graphName?: string } = {}): Graph {
  const cfg = T5ConfigSchema.parse(cfgIn);
  const layers = cfg.num_decoder_layers ?? cfg.num_layers;
  const reads = (n: string) => n === 'shared.weight' || n === 'lm_head.weight' || (n.startsWith('decoder.') && !/EncDecAttention\.[kv]\.weight$/.test(n));
  const g = new Graph(opts.graphName ?? 't5_decoder_kv');
  const p = initializerParams(g, t5Params(cfg).filter((s) => reads(s.name)), weights, 'exportT5DecoderStep');
  const { num_heads: nh, d_kv: dkv } = cfg;
  const ids = g.input('decoder_input_ids', 'int64', ['batch', 'seq']);
  const encMask = g.input('encoder_attention_mask', 'int64', ['batch', 'src_seq']);
  const past = Array.from({ length: layers }, (_, i) => ({
    key: g.input(t5PastSelfKey(i), 'float32', ['batch', nh, 'past', dkv]),
    value: g.input(t5PastSelfValue(i), 'float32', ['batch', nh, 'past', dkv]),
    crossKey: g.input(t5CrossKey(i), 'float32', ['batch', nh, 'src_seq', dkv]),
    crossValue: g.input(t5CrossValue(i), 'float32', ['batch', nh, 'src_seq', dkv]),
  }));
  const [, Tt] = batchAndSeq(ids, 'exportT5DecoderStep');
  const seqLen = g.op('Gather', [g.op('Shape', [ids])[0], g.scalar(1, 'int64')], { axis: 0 })[0]; // scalar seq
  const pastLen = g.op('Gather', [g.op('Shape', [past[0].key])[0], g.scalar(2, 'int64')], { axis: 0 })[0]; // scalar past
  const one = g.scalar(1, 'int64');
  const qPos = g.op('Range', [pastLen, add(pastLen, seqLen), one])[0]; // (seq): positions of the new tokens
  const kPos = g.op('Range', [g.scalar(0, 'int64'), add(pastLen, seqLen), one])[0]; // (past + seq)
  const allowed = g.op('GreaterOrEqual', [unsqueeze(qPos, [1]), unsqueeze(kPos, [0])])[0]; // query i sees key j ≤ past + i: (seq, past + seq)
  const causal = g.op('Where', [allowed, g.scalar(0), g.scalar(-Infinity)])[0]; // (seq, past + seq)
  const selfBias = add(decoderPositionBias(g, p, cfg, qPos, kPos), causal); // (1, nh, seq, past + seq)
  const crossBias = paddingMask(encMask); // (B, 1, 1, src_seq)
  const eps = cfg.layer_norm_epsilon;

  let y = reshape(gather(p('shared.weight'), ids), [-1, cfg.d_model]); // (B, seq, d) → (B·seq, d)
  for (let i = 0; i < layers; i++) {
    const l = `decoder.block.${i}.layer`;
    const sa = `${l}.0.SelfAttention`;
    const h = rmsNorm(y, p, `${l}.0.layer_norm`, eps);
    const k = concat([past[i].key, heads(hfLinear(h, p, `${sa}.k`, false), Tt, cfg)], 2); // (B, nh, past + seq, dkv)
    const v = concat([past[i].value, heads(hfLinear(h, p, `${sa}.v`, false), Tt, cfg)], 2); // (B, nh, past + seq, dkv)
    g.output(k, t5PresentSelfKey(i));
    g.output(v, t5PresentSelfValue(i));
    y = add(y, attend(heads(hfLinear(h, p, `${sa}.q`, false), Tt, cfg), k, v, selfBias, p, `${sa}.o`, cfg));
    const ca = `${l}.1.EncDecAttention`;
    const c = rmsNorm(y, p, `${l}.1.layer_norm`, eps);
    y = add(y, attend(heads(hfLinear(c, p, `${ca}.q`, false), Tt, cfg), past[i].crossKey, past[i].crossValue, crossBias, p, `${ca}.o`, cfg));
    y = add(y, t5FeedForward(rmsNorm(y, p, `${l}.2.layer_norm`, eps), p, `${l}.2.DenseReluDense`, cfg.feed_forward_proj));
  }
  y = rmsNorm(y, p, 'decoder.final_layer_norm', eps); // (B·seq, d)
  // The tied head reuses the input embedding and rescales by d_model^-0.5, as t5Logits does.
  const flat = cfg.tie_word_embeddings ? hfLinear(mul(y, scalar(y, cfg.d_model ** -0.5)), p, 'shared', false) : hfLinear(y, p, 'lm_head', false); // (B·seq, V)
  g.output(reshapeTo(flat, [-1, Tt, cfg.vocab_size]), 'logits'); // (B, seq, V)
  return g;
}
