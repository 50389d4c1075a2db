// Inference-graph export of BERT (bert.ts) and T5 (t5.ts) with run-time batch and sequence dims; used by tests today and by HF import/export (issue 12) next.
//
// These call the training builders themselves on inputs whose dims are symbolic: the builders
// then read the sequence length from the input's Shape (layers.ts SeqLen), so positions,
// relative-position buckets and the decoder's causal mask are computed at run time, and the
// exported graph is the training forward op for op (exportGpt adds a KV cache around gpt.ts's
// blocks instead).
// I/O follows Hugging Face's ONNX exports:
//   BERT  input_ids, attention_mask, token_type_ids int64 (batch, seq)
//         → last_hidden_state (batch, seq, H), pooler_output (batch, H) with the pooler,
//           logits (batch, seq, V) for the MLM head or (batch, num_labels) for the classifier
//   T5    input_ids, attention_mask int64 (batch, src_seq), decoder_input_ids int64 (batch, tgt_seq)
//         → logits (batch, tgt_seq, V)

import { Graph } from '../graph/ir';
import { bertClassifierParams, bertEncoder, bertMlmHeadParams, bertMlmLogits, bertParams, bertPooler, BertConfigSchema, type BertConfigInput } from './bert';
import { initializerParams } from './export';
import { batchAndSeq, hfLinear, reshapeTo } from './layers';
import { t5Logits, t5Params, T5ConfigSchema, type T5ConfigInput } from './t5';

export interface BertExportOptions {
  /** Task head on top of the encoder: none (hidden states and pooler), masked LM, or sequence classification. */
  head?: 'none' | 'mlm' | 'classifier';
  graphName?: string;
}

/**
 * Builds the inference graph of a BERT encoder (+ pooler when add_pooling_layer) and an optional
 * head. The classifier's label count is read from `classifier.bias`.
 * @example saveModel(exportBert(cfg, weights, { head: 'mlm' }), 'bert.onnx')
 */
export function exportBert(cfgIn: BertConfigInput, weights: Map<string, Float32Array>, opts: BertExportOptions = {}): Graph {
  const cfg = BertConfigSchema.parse(cfgIn);
  const head = opts.head ?? 'none';
  const specs = bertParams(cfg);
  if (head === 'mlm') specs.push(...bertMlmHeadParams(cfg));
  if (head === 'classifier') {
    const bias = weights.get('classifier.bias');
    if (!bias) throw new Error('exportBert: head "classifier" needs weight "classifier.bias", which is missing');
    specs.push(...bertClassifierParams(cfg, bias.length));
  }
  const g = new Graph(opts.graphName ?? `bert_${head}`);
  const p = initializerParams(g, specs, weights, 'exportBert');
  const inputs = {
    inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
    attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
    tokenTypeIds: g.input('token_type_ids', 'int64', ['batch', 'seq']),
  };
  const [, T] = batchAndSeq(inputs.inputIds, 'exportBert');
  const H = cfg.hidden_size;
  const hidden = bertEncoder(cfg, inputs, p); // (batch·seq, H)
  g.output(reshapeTo(hidden, [-1, T, H]), 'last_hidden_state'); // (batch, seq, H)
  const pooled = cfg.add_pooling_layer ? bertPooler(cfg, hidden, T, p) : null; // (batch, H)
  if (pooled) g.output(pooled, 'pooler_output');
  if (head === 'mlm') g.output(reshapeTo(bertMlmLogits(cfg, hidden, p), [-1, T, cfg.vocab_size]), 'logits'); // (batch·seq, V) → (batch, seq, V)
  if (head === 'classifier') g.output(hfLinear(pooled!, p, 'classifier'), 'logits'); // (batch, H) → (batch, num_labels)
  return g;
}

/**
 * Builds the inference graph of a T5 encoder-decoder: the whole source and the decoder inputs in,
 * the LM logits of every decoder position out (no cache: each call reruns the encoder).
 * @example saveModel(exportT5(cfg, weights), 't5.onnx')
 */
export function exportT5(cfgIn: T5ConfigInput, weights: Map<string, Float32Array>, opts: { graphName?: string } = {}): Graph {
  const cfg = T5ConfigSchema.parse(cfgIn);
  const g = new Graph(opts.graphName ?? 't5');
  const p = initializerParams(g, t5Params(cfg), weights, 'exportT5');
  const inputs = {
    inputIds: g.input('input_ids', 'int64', ['batch', 'src_seq']),
    attentionMask: g.input('attention_mask', 'int64', ['batch', 'src_seq']),
    decoderInputIds: g.input('decoder_input_ids', 'int64', ['batch', 'tgt_seq']),
  };
  const [, Tt] = batchAndSeq(inputs.decoderInputIds, 'exportT5');
  g.output(reshapeTo(t5Logits(cfg, inputs, p), [-1, Tt, cfg.vocab_size]), 'logits'); // (batch·tgt_seq, V) → (batch, tgt_seq, V)
  return g;
}
