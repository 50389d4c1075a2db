// BERT-style encoder, top to bottom: config → parameters → embeddings → encoder layers → pooler →
// heads (masked LM, sequence classification) → losses.
//
// Parameter names are Hugging Face BertModel's (embeddings.word_embeddings.weight,
// encoder.layer.N.attention.self.query.weight, pooler.dense.weight, …) and Linear weights are
// (out, in) like torch nn.Linear, so an HF safetensors file loads key by key; task-model files
// prefix the encoder with `bert.` (see hfBertName). Post-LN blocks, exact GELU, LayerNorm eps 1e-12.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, gather, gelu, reshape, tanh } from '../graph/ops';
import { layerNormBlock, type ParamLookup, type ParamSpec } from './blocks';
import { GptConfigSchema, type GptConfig } from './gpt';
import { attention, batchAndSeq, hfLinear, paddingMask, positionIds, reshapeTo, type SeqLen } from './layers';

export const BertConfigSchema = z
  .strictObject({
    vocab_size: z.number().int().positive(),
    hidden_size: z.number().int().positive(),
    num_hidden_layers: z.number().int().positive(),
    num_attention_heads: z.number().int().positive(),
    intermediate_size: z.number().int().positive(),
    max_position_embeddings: z.number().int().positive().default(512),
    type_vocab_size: z.number().int().positive().default(2),
    layer_norm_eps: z.number().positive().default(1e-12),
    initializer_range: z.number().positive().default(0.02),
    add_pooling_layer: z.boolean().default(true),
  })
  .superRefine((c, ctx) => {
    if (c.hidden_size % c.num_attention_heads !== 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['num_attention_heads'],
        message: `must divide hidden_size (${c.hidden_size} % ${c.num_attention_heads} != 0)`,
      });
    }
  });
export type BertConfig = z.infer<typeof BertConfigSchema>;
export type BertConfigInput = z.input<typeof BertConfigSchema>;

// ---------------------------------------------------------------- parameters

/** Encoder (+ pooler when add_pooling_layer) with HF init: N(0, initializer_range), LN 1/0, biases 0. */
export function bertParams(cfg: BertConfig): ParamSpec[] {
  const H = cfg.hidden_size;
  const std = cfg.initializer_range;
  const specs: ParamSpec[] = [];
  const emb = (name: string, rows: number) => specs.push({ name: `${name}.weight`, shape: [rows, H], init: { kind: 'normal', std } });
  const ln = (name: string) => {
    specs.push({ name: `${name}.weight`, shape: [H], init: { kind: 'ones' } });
    specs.push({ name: `${name}.bias`, shape: [H], init: { kind: 'zeros' } });
  };
  const lin = (name: string, nIn: number, nOut: number) => {
    specs.push({ name: `${name}.weight`, shape: [nOut, nIn], init: { kind: 'normal', std } });
    specs.push({ name: `${name}.bias`, shape: [nOut], init: { kind: 'zeros' } });
  };
  emb('embeddings.word_embeddings', cfg.vocab_size);
  emb('embeddings.position_embeddings', cfg.max_position_embeddings);
  emb('embeddings.token_type_embeddings', cfg.type_vocab_size);
  ln('embeddings.LayerNorm');
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const l = `encoder.layer.${i}`;
    for (const w of ['query', 'key', 'value']) lin(`${l}.attention.self.${w}`, H, H);
    lin(`${l}.attention.output.dense`, H, H);
    ln(`${l}.attention.output.LayerNorm`);
    lin(`${l}.intermediate.dense`, H, cfg.intermediate_size);
    lin(`${l}.output.dense`, cfg.intermediate_size, H);
    ln(`${l}.output.LayerNorm`);
  }
  if (cfg.add_pooling_layer) lin('pooler.dense', H, H);
  return specs;
}

/** BertForMaskedLM's head; its decoder is tied to embeddings.word_embeddings, only the bias is new. */
export function bertMlmHeadParams(cfg: BertConfig): ParamSpec[] {
  const H = cfg.hidden_size;
  return [
    { name: 'cls.predictions.transform.dense.weight', shape: [H, H], init: { kind: 'normal', std: cfg.initializer_range } },
    { name: 'cls.predictions.transform.dense.bias', shape: [H], init: { kind: 'zeros' } },
    { name: 'cls.predictions.transform.LayerNorm.weight', shape: [H], init: { kind: 'ones' } },
    { name: 'cls.predictions.transform.LayerNorm.bias', shape: [H], init: { kind: 'zeros' } },
    { name: 'cls.predictions.bias', shape: [cfg.vocab_size], init: { kind: 'zeros' } },
  ];
}

/** BertForSequenceClassification's head on the pooled output (needs add_pooling_layer). */
export function bertClassifierParams(cfg: BertConfig, numLabels: number): ParamSpec[] {
  if (!cfg.add_pooling_layer) throw new Error('bert: the classification head reads the pooler; set add_pooling_layer: true');
  return [
    { name: 'classifier.weight', shape: [numLabels, cfg.hidden_size], init: { kind: 'normal', std: cfg.initializer_range } },
    { name: 'classifier.bias', shape: [numLabels], init: { kind: 'zeros' } },
  ];
}

/**
 * Our name for a key of an HF BERT safetensors file, or null for keys we do not keep: task
 * models store the encoder under `bert.`, and BertForMaskedLM's decoder weight/bias are tied
 * copies of word_embeddings and cls.predictions.bias.
 */
export function hfBertName(key: string): string | null {
  if (key === 'cls.predictions.decoder.weight' || key === 'cls.predictions.decoder.bias') return null;
  if (key.endsWith('position_ids')) return null; // a buffer in older checkpoints, not a weight
  const k = key.startsWith('bert.') ? key.slice('bert.'.length) : key;
  // The original Google checkpoints (bert-base-uncased) still call LayerNorm's scale/shift gamma/beta.
  return k.replace(/LayerNorm\.gamma$/, 'LayerNorm.weight').replace(/LayerNorm\.beta$/, 'LayerNorm.bias');
}

// ---------------------------------------------------------------- forward

export interface BertInputs {
  /** int64 (B, T); T is a number in training graphs, symbolic in exported ones (exportBert). */
  inputIds: Value;
  /** int64 (B, T), 1 for tokens and 0 for padding; absent = no padding. */
  attentionMask?: Value | null;
  /** int64 (B, T) segment ids; absent = all segment 0, as HF does. */
  tokenTypeIds?: Value | null;
}

/** The encoder's last hidden states, (B·T, H). */
export function bertEncoder(cfg: BertConfig, inputs: BertInputs, p: ParamLookup): Value {
  const g = inputs.inputIds.graph;
  const [, T] = batchAndSeq(inputs.inputIds, 'bert');
  if (typeof T === 'number' && T > cfg.max_position_embeddings) throw new Error(`bert: sequence length ${T} exceeds max_position_embeddings ${cfg.max_position_embeddings}`);
  const H = cfg.hidden_size;
  const nh = cfg.num_attention_heads;
  const eps = cfg.layer_norm_eps;

  const words = gather(p('embeddings.word_embeddings.weight'), inputs.inputIds); // (B, T, H)
  const positions = gather(p('embeddings.position_embeddings.weight'), positionIds(g, T)); // (T, H)
  const types = inputs.tokenTypeIds
    ? gather(p('embeddings.token_type_embeddings.weight'), inputs.tokenTypeIds) // (B, T, H)
    : gather(p('embeddings.token_type_embeddings.weight'), g.vector([0])); // (1, H), broadcast
  const summed = add(add(words, types), positions); // (B, T, H)
  let x = layerNormBlock(reshape(summed, [-1, H]), p, 'embeddings.LayerNorm', true, eps); // (B·T, H)

  const mask = inputs.attentionMask ? paddingMask(inputs.attentionMask) : null; // (B, 1, 1, T)
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const l = `encoder.layer.${i}`;
    const a = attention(
      x,
      x,
      p,
      { q: `${l}.attention.self.query`, k: `${l}.attention.self.key`, v: `${l}.attention.self.value`, o: `${l}.attention.output.dense` },
      { qLen: T, kLen: T, nHead: nh, headDim: H / nh, scale: true, bias: true, scoreBias: mask },
    );
    // Post-LN, as the original BERT: LayerNorm(x + sublayer(x)).
    x = layerNormBlock(add(x, a), p, `${l}.attention.output.LayerNorm`, true, eps);
    const h = gelu(hfLinear(x, p, `${l}.intermediate.dense`)); // (B·T, H) → (B·T, I)
    x = layerNormBlock(add(x, hfLinear(h, p, `${l}.output.dense`)), p, `${l}.output.LayerNorm`, true, eps); // (B·T, H)
  }
  return x;
}

/** tanh(dense(h_[CLS])), (B, H), from hidden states (B·T, H). */
export function bertPooler(cfg: BertConfig, hidden: Value, seq: SeqLen, p: ParamLookup): Value {
  const first = gather(reshapeTo(hidden, [-1, seq, cfg.hidden_size]), hidden.graph.scalar(0, 'int64'), 1); // (B, T, H)[:, 0] → (B, H)
  return tanh(hfLinear(first, p, 'pooler.dense'));
}

/** Masked-LM logits (B·T, V): transform (dense, GELU, LayerNorm), then the tied decoder + bias. */
export function bertMlmLogits(cfg: BertConfig, hidden: Value, p: ParamLookup): Value {
  const t = gelu(hfLinear(hidden, p, 'cls.predictions.transform.dense')); // (B·T, H)
  const n = layerNormBlock(t, p, 'cls.predictions.transform.LayerNorm', true, cfg.layer_norm_eps);
  // word_embeddings is (V, H): exactly the (out, in) layout the tied decoder needs.
  return hidden.graph.op('Gemm', [n, p('embeddings.word_embeddings.weight'), p('cls.predictions.bias')], { transB: 1 })[0]; // (B·T, H) @ (V, H)ᵀ → (B·T, V)
}

/** Sequence-classification logits (B, num_labels) from the pooled output. */
export function bertClassifierLogits(cfg: BertConfig, inputs: BertInputs, p: ParamLookup): Value {
  const [, T] = batchAndSeq(inputs.inputIds, 'bert');
  return hfLinear(bertPooler(cfg, bertEncoder(cfg, inputs, p), T, p), p, 'classifier'); // (B, H) → (B, L)
}

// ---------------------------------------------------------------- losses

/** Mean cross-entropy over masked positions; `labels` int64 (B, T) with -100 where not masked. */
export function bertMlmLoss(cfg: BertConfig, inputs: BertInputs, labels: Value, p: ParamLookup): Value {
  const logits = bertMlmLogits(cfg, bertEncoder(cfg, inputs, p), p); // (B·T, V)
  const flat = reshape(labels, [-1]); // (B·T)
  return labels.graph.op('SoftmaxCrossEntropyLoss', [logits, flat], { reduction: 'mean', ignore_index: -100 }, { outputs: 1 })[0];
}

/** Declares input_ids, attention_mask, token_type_ids and labels (B, T) and returns the MLM loss. */
export function bertMlmTrainLoss(cfg: BertConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const inputs = declareInputs(g, batch, seq);
    return bertMlmLoss(cfg, inputs, g.input('labels', 'int64', [batch, seq]), p);
  };
}

/** Declares input_ids, attention_mask, token_type_ids (B, T) and labels (B) and returns the mean cross-entropy. */
export function bertClassifierTrainLoss(cfg: BertConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const inputs = declareInputs(g, batch, seq);
    const labels = g.input('labels', 'int64', [batch]);
    const logits = bertClassifierLogits(cfg, inputs, p); // (B, L)
    return g.op('SoftmaxCrossEntropyLoss', [logits, labels], { reduction: 'mean' }, { outputs: 1 })[0];
  };
}

function declareInputs(g: Graph, batch: number, seq: number): BertInputs {
  return {
    inputIds: g.input('input_ids', 'int64', [batch, seq]),
    attentionMask: g.input('attention_mask', 'int64', [batch, seq]),
    tokenTypeIds: g.input('token_type_ids', 'int64', [batch, seq]),
  };
}

/**
 * The GPT of the same width, depth, heads, MLP width and vocabulary: its training-step memory
 * estimate (engine/models/memory.ts) stands in for this BERT's, whose layers have the same shape
 * (attention + one MLP; post-LN instead of pre-LN, a pooler and a small head on top).
 */
export function bertMemoryEquivalent(cfg: BertConfig): GptConfig {
  return GptConfigSchema.parse({ vocab_size: cfg.vocab_size, block_size: cfg.max_position_embeddings, n_layer: cfg.num_hidden_layers, n_head: cfg.num_attention_heads, n_embd: cfg.hidden_size, n_inner: cfg.intermediate_size });
}
