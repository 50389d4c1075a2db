// T5-style encoder-decoder, top to bottom: config → parameters → encoder → decoder → LM head →
// seq2seq loss.
//
// Parameter names are Hugging Face T5ForConditionalGeneration's (shared.weight,
// encoder.block.N.layer.0.SelfAttention.q.weight, decoder.block.N.layer.1.EncDecAttention.k.weight,
// …DenseReluDense.wi.weight, encoder.final_layer_norm.weight) with torch (out, in) Linear weights, so
// an HF safetensors file loads key by key. T5 specifics: RMSNorm without bias (eps 1e-6), no
// Linear biases, no 1/√d attention scaling (folded into the init), a learned relative-position
// bias computed once in block 0 and shared by every layer, and a tied head that scales the
// decoder output by d_model^-0.5 (T5 v1.0).

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, gather, mul, reshape, scalar } from '../graph/ops';
import type { ParamLookup, ParamSpec } from './blocks';
import { GptConfigSchema, type GptConfig } from './gpt';
import { attention, batchAndSeq, causalMaskOf, hfLinear, paddingMask, relativePositionBias, rmsNorm, t5FeedForward, type AttentionOptions, type SeqLen } from './layers';

export const T5ConfigSchema = z
  .strictObject({
    vocab_size: z.number().int().positive(),
    d_model: z.number().int().positive(),
    d_kv: z.number().int().positive(),
    d_ff: z.number().int().positive(),
    num_layers: z.number().int().positive(),
    /** Defaults to num_layers, as HF does. */
    num_decoder_layers: z.number().int().positive().nullable().default(null),
    num_heads: z.number().int().positive(),
    relative_attention_num_buckets: z.number().int().min(2).default(32),
    relative_attention_max_distance: z.number().int().positive().default(128),
    layer_norm_epsilon: z.number().positive().default(1e-6),
    feed_forward_proj: z.enum(['relu', 'gated-gelu']).default('relu'),
    /** true: lm_head is shared.weight and the decoder output is scaled by d_model^-0.5 (T5 v1.0). */
    tie_word_embeddings: z.boolean().default(true),
    initializer_factor: z.number().positive().default(1),
    pad_token_id: z.number().int().nonnegative().default(0),
    decoder_start_token_id: z.number().int().nonnegative().default(0),
  })
  .superRefine((c, ctx) => {
    if (c.relative_attention_max_distance <= c.relative_attention_num_buckets / 4) {
      ctx.addIssue({
        code: 'custom',
        path: ['relative_attention_max_distance'],
        message: `must exceed relative_attention_num_buckets / 4 (${c.relative_attention_max_distance} <= ${c.relative_attention_num_buckets / 4})`,
      });
    }
  });
export type T5Config = z.infer<typeof T5ConfigSchema>;
export type T5ConfigInput = z.input<typeof T5ConfigSchema>;

const decoderLayers = (cfg: T5Config) => cfg.num_decoder_layers ?? cfg.num_layers;
const relBiasName = (stack: 'encoder' | 'decoder') => `${stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight`;

// ---------------------------------------------------------------- parameters

/** Every weight, with HF T5's init (T5PreTrainedModel._init_weights, initializer_factor 1). */
export function t5Params(cfg: T5Config): ParamSpec[] {
  const { d_model: d, d_kv: dkv, d_ff: dff, num_heads: nh } = cfg;
  const inner = nh * dkv;
  const fct = cfg.initializer_factor;
  const specs: ParamSpec[] = [];
  const w = (name: string, shape: number[], std: number) => specs.push({ name: `${name}.weight`, shape, init: { kind: 'normal', std } });
  const norm = (name: string) => specs.push({ name: `${name}.weight`, shape: [d], init: { kind: 'ones' } });
  const attn = (prefix: string) => {
    w(`${prefix}.q`, [inner, d], fct * (d * dkv) ** -0.5);
    w(`${prefix}.k`, [inner, d], fct * d ** -0.5);
    w(`${prefix}.v`, [inner, d], fct * d ** -0.5);
    w(`${prefix}.o`, [d, inner], fct * inner ** -0.5);
  };
  const ff = (prefix: string) => {
    if (cfg.feed_forward_proj === 'relu') w(`${prefix}.wi`, [dff, d], fct * d ** -0.5);
    else for (const wi of ['wi_0', 'wi_1']) w(`${prefix}.${wi}`, [dff, d], fct * d ** -0.5);
    w(`${prefix}.wo`, [d, dff], fct * dff ** -0.5);
  };
  w('shared', [cfg.vocab_size, d], fct);
  for (let i = 0; i < cfg.num_layers; i++) {
    const b = `encoder.block.${i}`;
    attn(`${b}.layer.0.SelfAttention`);
    if (i === 0) specs.push({ name: relBiasName('encoder'), shape: [cfg.relative_attention_num_buckets, nh], init: { kind: 'normal', std: fct * d ** -0.5 } });
    norm(`${b}.layer.0.layer_norm`);
    ff(`${b}.layer.1.DenseReluDense`);
    norm(`${b}.layer.1.layer_norm`);
  }
  norm('encoder.final_layer_norm');
  for (let i = 0; i < decoderLayers(cfg); i++) {
    const b = `decoder.block.${i}`;
    attn(`${b}.layer.0.SelfAttention`);
    if (i === 0) specs.push({ name: relBiasName('decoder'), shape: [cfg.relative_attention_num_buckets, nh], init: { kind: 'normal', std: fct * d ** -0.5 } });
    norm(`${b}.layer.0.layer_norm`);
    attn(`${b}.layer.1.EncDecAttention`);
    norm(`${b}.layer.1.layer_norm`);
    ff(`${b}.layer.2.DenseReluDense`);
    norm(`${b}.layer.2.layer_norm`);
  }
  norm('decoder.final_layer_norm');
  if (!cfg.tie_word_embeddings) w('lm_head', [cfg.vocab_size, d], fct);
  return specs;
}

/**
 * Our name for a key of an HF T5 safetensors file, or null for the tied aliases of shared.weight
 * (encoder/decoder embed_tokens, and lm_head when the head is tied).
 */
export function hfT5Name(key: string, cfg: T5Config): string | null {
  if (key === 'encoder.embed_tokens.weight' || key === 'decoder.embed_tokens.weight') return null;
  if (key === 'lm_head.weight' && cfg.tie_word_embeddings) return null;
  return key;
}

// ---------------------------------------------------------------- encoder

function attnOptions(cfg: T5Config, qLen: SeqLen, kLen: SeqLen, scoreBias: Value | null): AttentionOptions {
  return { qLen, kLen, nHead: cfg.num_heads, headDim: cfg.d_kv, scale: false, bias: false, scoreBias };
}

const attnNames = (prefix: string) => ({ q: `${prefix}.q`, k: `${prefix}.k`, v: `${prefix}.v`, o: `${prefix}.o` });

/** Encoder output (B·Ts, d_model) for int64 input_ids (B, Ts) and an optional attention_mask (B, Ts). */
export function t5Encoder(cfg: T5Config, inputIds: Value, attentionMask: Value | null, p: ParamLookup): Value {
  const g = inputIds.graph;
  const [, Ts] = batchAndSeq(inputIds, 't5 encoder');
  const eps = cfg.layer_norm_epsilon;
  let x = reshape(gather(p('shared.weight'), inputIds), [-1, cfg.d_model]); // (B, Ts, d) → (B·Ts, d)
  const posBias = relativePositionBias(g, p, relBiasName('encoder'), Ts, Ts, true, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance); // (1, nh, Ts, Ts)
  const bias = attentionMask ? add(posBias, paddingMask(attentionMask)) : posBias; // (B, nh, Ts, Ts)
  for (let i = 0; i < cfg.num_layers; i++) {
    const l = `encoder.block.${i}.layer`;
    const h = rmsNorm(x, p, `${l}.0.layer_norm`, eps);
    x = add(x, attention(h, h, p, attnNames(`${l}.0.SelfAttention`), attnOptions(cfg, Ts, Ts, bias)));
    x = add(x, t5FeedForward(rmsNorm(x, p, `${l}.1.layer_norm`, eps), p, `${l}.1.DenseReluDense`, cfg.feed_forward_proj));
  }
  return rmsNorm(x, p, 'encoder.final_layer_norm', eps);
}

// ---------------------------------------------------------------- decoder

/**
 * Decoder output (B·Tt, d_model): causal self-attention with causal relative buckets, then
 * cross-attention over the encoder output `enc` (B·Ts, d_model) masked by the encoder's mask.
 */
export function t5Decoder(cfg: T5Config, decoderInputIds: Value, enc: Value, encSeq: SeqLen, encMask: Value | null, p: ParamLookup): Value {
  const g = decoderInputIds.graph;
  const [, Tt] = batchAndSeq(decoderInputIds, 't5 decoder');
  const eps = cfg.layer_norm_epsilon;
  let y = reshape(gather(p('shared.weight'), decoderInputIds), [-1, cfg.d_model]); // (B, Tt, d) → (B·Tt, d)
  const posBias = relativePositionBias(g, p, relBiasName('decoder'), Tt, Tt, false, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance); // (1, nh, Tt, Tt)
  const selfBias = add(posBias, causalMaskOf(g, Tt)); // (1, nh, Tt, Tt)
  const crossBias = encMask ? paddingMask(encMask) : null; // (B, 1, 1, Ts); cross-attention has no position bias
  for (let i = 0; i < decoderLayers(cfg); i++) {
    const l = `decoder.block.${i}.layer`;
    const h = rmsNorm(y, p, `${l}.0.layer_norm`, eps);
    y = add(y, attention(h, h, p, attnNames(`${l}.0.SelfAttention`), attnOptions(cfg, Tt, Tt, selfBias)));
    const c = rmsNorm(y, p, `${l}.1.layer_norm`, eps);
    y = add(y, attention(c, enc, p, attnNames(`${l}.1.EncDecAttention`), attnOptions(cfg, Tt, encSeq, crossBias)));
    y = add(y, t5FeedForward(rmsNorm(y, p, `${l}.2.layer_norm`, eps), p, `${l}.2.DenseReluDense`, cfg.feed_forward_proj));
  }
  return rmsNorm(y, p, 'decoder.final_layer_norm', eps);
}

// ---------------------------------------------------------------- head and loss

export interface T5Inputs {
  /** int64 (B, Ts). */
  inputIds: Value;
  /** int64 (B, Ts), 1 for tokens and 0 for padding; absent = no padding. */
  attentionMask?: Value | null;
  /** int64 (B, Tt): the labels shifted right behind decoder_start_token_id (t5ShiftRight). */
  decoderInputIds: Value;
}

/** LM logits (B·Tt, V). */
export function t5Logits(cfg: T5Config, inputs: T5Inputs, p: ParamLookup): Value {
  const [, Ts] = batchAndSeq(inputs.inputIds, 't5 encoder');
  const mask = inputs.attentionMask ?? null;
  const enc = t5Encoder(cfg, inputs.inputIds, mask, p);
  let y = t5Decoder(cfg, inputs.decoderInputIds, enc, Ts, mask, p); // (B·Tt, d)
  if (cfg.tie_word_embeddings) {
    // The tied head reuses the input embedding; T5 v1.0 rescales so logits do not grow with √d.
    y = mul(y, scalar(y, cfg.d_model ** -0.5));
    return hfLinear(y, p, 'shared', false); // (B·Tt, d) @ (V, d)ᵀ → (B·Tt, V)
  }
  return hfLinear(y, p, 'lm_head', false); // (B·Tt, d) @ (V, d)ᵀ → (B·Tt, V)
}

/** Mean token cross-entropy; `labels` int64 (B, Tt) with -100 at positions to ignore (padding). */
export function t5Loss(cfg: T5Config, inputs: T5Inputs, labels: Value, p: ParamLookup): Value {
  const logits = t5Logits(cfg, inputs, p); // (B·Tt, V)
  const flat = reshape(labels, [-1]); // (B·Tt)
  return labels.graph.op('SoftmaxCrossEntropyLoss', [logits, flat], { reduction: 'mean', ignore_index: -100 }, { outputs: 1 })[0];
}

/** Declares input_ids, attention_mask (B, Ts), decoder_input_ids and labels (B, Tt); returns the loss. */
export function t5TrainLoss(cfg: T5Config, batch: number, srcLen: number, tgtLen: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const inputs: T5Inputs = {
      inputIds: g.input('input_ids', 'int64', [batch, srcLen]),
      attentionMask: g.input('attention_mask', 'int64', [batch, srcLen]),
      decoderInputIds: g.input('decoder_input_ids', 'int64', [batch, tgtLen]),
    };
    return t5Loss(cfg, inputs, g.input('labels', 'int64', [batch, tgtLen]), p);
  };
}

/**
 * HF T5 _shift_right on a row-major (B, T) label array: prepend decoder_start_token_id, drop the
 * last label, and turn -100 (ignored) into pad_token_id so every decoder input is a real id.
 */
export function t5ShiftRight(cfg: T5Config, labels: ArrayLike<number>, batch: number, seq: number): number[] {
  if (labels.length !== batch * seq) throw new Error(`t5ShiftRight: ${labels.length} labels for (B, T) = (${batch}, ${seq})`);
  const out = new Array<number>(batch * seq);
  for (let b = 0; b < batch; b++) {
    out[b * seq] = cfg.decoder_start_token_id;
    for (let t = 1; t < seq; t++) {
      const v = labels[b * seq + t - 1];
      out[b * seq + t] = v === -100 ? cfg.pad_token_id : v;
    }
  }
  return out;
}

/**
 * The GPT whose training memory the worker-memory check (spec/limits.ts) estimates for this T5 at
 * rows of `contextLength` tokens: one GPT block per encoder layer and two per decoder layer (its
 * self- and cross-attention keep about twice an encoder layer's activations), at T5's width, heads
 * and feed-forward size. An estimate, like bertMemoryEquivalent.
 */
export function t5MemoryEquivalent(cfg: T5Config, contextLength: number): GptConfig {
  const heads = cfg.d_model % cfg.num_heads === 0 ? cfg.num_heads : 1;
  return GptConfigSchema.parse({
    vocab_size: cfg.vocab_size,
    block_size: contextLength,
    n_layer: cfg.num_layers + 2 * decoderLayers(cfg),
    n_head: heads,
    n_embd: cfg.d_model,
    n_inner: cfg.feed_forward_proj === 'relu' ? cfg.d_ff : 2 * cfg.d_ff,
  });
}
