// BertModel / BertForMaskedLM / BertForSequenceClassification ⇄ our BERT (engine/models/bert.ts).
// Our BERT parameters already carry BertModel's names and torch's (out, in) layout, so weights map
// by name: task models nest the encoder under `bert.`, the MLM decoder is tied to the word
// embeddings (its weight and bias are never stored twice), and old Google checkpoints call
// LayerNorm's scale and shift gamma/beta. The head the folder's class has is part of our config.

import { z } from 'zod';
import type { TensorData } from '../graph/ir';
import type { ParamSpec } from '../models/blocks';
import { bertClassifierParams, bertMlmHeadParams, bertParams, BertConfigSchema } from '../models/bert';
import { EngineError } from '../errors';
import { HfConfigReader, type SpecialTokenIds } from './config-keys';
import type { HfFolder } from './folder';

/** Which BERT class: the bare encoder (+ pooler), the masked-LM head, or a sequence classifier. */
export const BertHeadSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('none') }),
  z.strictObject({ kind: z.literal('mlm') }),
  z.strictObject({ kind: z.literal('classification'), num_labels: z.number().int().positive(), id2label: z.record(z.string(), z.string()).optional() }),
]);

/** What a BERT checkpoint's modelConfig holds: the encoder's config (every field explicit) and its head. */
export const BertModelConfigSchema = z.object({ ...BertConfigSchema.shape, head: BertHeadSchema });
export type BertModelConfig = z.infer<typeof BertModelConfigSchema>;

const HEADS: Record<string, BertModelConfig['head']['kind']> = { BertModel: 'none', BertForMaskedLM: 'mlm', BertForSequenceClassification: 'classification' };
export const BERT_ARCHITECTURES = Object.keys(HEADS);

/** Parameter specs of the encoder and its head. */
export function bertModelParams(cfg: BertModelConfig): ParamSpec[] {
  const enc = BertConfigSchema.parse(Object.fromEntries(Object.entries(cfg).filter(([k]) => k !== 'head')));
  const head = cfg.head.kind === 'mlm' ? bertMlmHeadParams(enc) : cfg.head.kind === 'classification' ? bertClassifierParams(enc, cfg.head.num_labels) : [];
  return [...bertParams(enc), ...head];
}

const isHead = (name: string) => name.startsWith('cls.') || name.startsWith('classifier.');

/** Our name → the HF class's key. */
function hfName(cfg: BertModelConfig, name: string): string {
  return cfg.head.kind === 'none' || isHead(name) ? name : `bert.${name}`;
}

export function bertConfigFromHf(json: Record<string, unknown>, where: string, architecture: string): BertModelConfig {
  const r = new HfConfigReader(json, where);
  r.oneOf('hidden_act', 'gelu', ['gelu'], 'our BERT uses the exact (erf) GELU');
  r.oneOf('position_embedding_type', 'absolute', ['absolute'], 'our BERT has learned absolute positions only');
  r.oneOf('is_decoder', false, [false], 'our BERT is an encoder (no causal mask)');
  r.oneOf('add_cross_attention', false, [false], 'our BERT has no cross-attention');
  // hidden_dropout_prob / attention_probs_dropout_prob / classifier_dropout act in training only, which our BERT does not do yet.
  const kind = HEADS[architecture]!;
  let head: BertModelConfig['head'] = { kind: kind as 'none' | 'mlm' };
  if (kind === 'classification') {
    r.oneOf('problem_type', 'single_label_classification', ['single_label_classification'], 'our classifier is trained with softmax cross-entropy (single-label)');
    const id2label = r.json.id2label as Record<string, string> | undefined;
    const numLabels = r.has('num_labels') ? r.int('num_labels') : id2label ? Object.keys(id2label).length : 2;
    head = { kind: 'classification', num_labels: numLabels, ...(id2label ? { id2label } : {}) };
  }
  const cfg = {
    vocab_size: r.int('vocab_size', 30522),
    hidden_size: r.int('hidden_size', 768),
    num_hidden_layers: r.int('num_hidden_layers', 12),
    num_attention_heads: r.int('num_attention_heads', 12),
    intermediate_size: r.int('intermediate_size', 3072),
    max_position_embeddings: r.int('max_position_embeddings', 512),
    type_vocab_size: r.int('type_vocab_size', 2),
    layer_norm_eps: r.num('layer_norm_eps', 1e-12),
    initializer_range: r.num('initializer_range', 0.02),
    // BertModel has the pooler unless saved without it; BertForMaskedLM never has it.
    add_pooling_layer: kind !== 'mlm',
    head,
  };
  const parsed = BertModelConfigSchema.safeParse(cfg);
  if (!parsed.success) throw new EngineError('config', `${where}: ${parsed.error.issues[0]!.path.join('.')}: ${parsed.error.issues[0]!.message}`);
  return parsed.data;
}

export function readBertWeights(cfg: BertModelConfig, folder: HfFolder, onTensor?: (name: string) => void): { weights: Map<string, Float32Array>; used: Set<string> } {
  const used = new Set<string>();
  const weights = new Map<string, Float32Array>();
  // A BertModel saved without its pooler: the bare encoder.
  const specs = bertModelParams(cfg.head.kind === 'none' && !folder.has('pooler.dense.weight') ? { ...cfg, add_pooling_layer: false } : cfg);
  for (const spec of specs) {
    let src = hfName(cfg, spec.name);
    if (!folder.has(src) && /LayerNorm\.(weight|bias)$/.test(src)) src = src.replace(/\.weight$/, '.gamma').replace(/\.bias$/, '.beta');
    weights.set(spec.name, folder.tensor(src, spec.shape).data);
    used.add(src);
    onTensor?.(src);
  }
  // The MLM decoder's tied copies, when a writer kept them.
  for (const tied of ['cls.predictions.decoder.weight', 'cls.predictions.decoder.bias']) if (folder.has(tied)) used.add(tied);
  return { weights, used };
}

export function bertConfigToHf(cfg: BertModelConfig, tokens: SpecialTokenIds): Record<string, unknown> {
  const architecture = Object.entries(HEADS).find(([, k]) => k === cfg.head.kind)![0];
  const head = cfg.head;
  return {
    model_type: 'bert',
    architectures: [architecture],
    vocab_size: cfg.vocab_size,
    hidden_size: cfg.hidden_size,
    num_hidden_layers: cfg.num_hidden_layers,
    num_attention_heads: cfg.num_attention_heads,
    intermediate_size: cfg.intermediate_size,
    hidden_act: 'gelu',
    max_position_embeddings: cfg.max_position_embeddings,
    type_vocab_size: cfg.type_vocab_size,
    layer_norm_eps: cfg.layer_norm_eps,
    initializer_range: cfg.initializer_range,
    position_embedding_type: 'absolute',
    is_decoder: false,
    add_cross_attention: false,
    tie_word_embeddings: true,
    hidden_dropout_prob: 0,
    attention_probs_dropout_prob: 0,
    ...(head.kind === 'classification'
      ? { num_labels: head.num_labels, problem_type: 'single_label_classification', id2label: head.id2label ?? Object.fromEntries(Array.from({ length: head.num_labels }, (_, i) => [String(i), `LABEL_${i}`])) }
      : {}),
    ...(head.kind === 'classification' && head.id2label ? { label2id: Object.fromEntries(Object.entries(head.id2label).map(([i, l]) => [l, Number(i)])) } : {}),
    pad_token_id: tokens.pad ?? 0,
    torch_dtype: 'float32',
  };
}

export function bertWeightsToHf(cfg: BertModelConfig, weights: Map<string, Float32Array>): Map<string, TensorData> {
  const out = new Map<string, TensorData>();
  const specs = bertModelParams(cfg.head.kind === 'none' && !weights.has('pooler.dense.weight') ? { ...cfg, add_pooling_layer: false } : cfg);
  for (const spec of specs) {
    const w = weights.get(spec.name);
    if (!w) throw new EngineError('input', `export: weight "${spec.name}" is missing`);
    out.set(hfName(cfg, spec.name), { dtype: 'float32', dims: spec.shape, data: w });
  }
  return out;
}
