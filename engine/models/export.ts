// Inference-graph export of our GPT (gpt.ts) for serving, quantization and evaluation.
//
// The training builder sizes batch and sequence at build time; a served model must take any batch
// and any length up to block_size, and decoding wants a key/value cache. So this file rebuilds the
// same forward from the shared blocks with symbolic dims ("batch", "seq", "past") and, with
// `kvCache`, past/present key-value tensors in the Hugging Face layout:
//   inputs  input_ids int64 (batch, seq), past_key_values.{i}.key|value float32 (batch, nh, past, hs)
//   outputs logits (batch, seq, V), present.{i}.key|value (batch, nh, past + seq, hs)
// The first decoding call passes past tensors with past = 0. Weights are initializers; the LM head
// is one Gemm over wte (transB=1) so the tied matrix is stored once and never transposed at run time.

import { Graph, tensor, type Value } from '../graph/ir';
import { add, concat, gather, layerNorm, matmul, mul, reshape, scalar, softmax, transpose, unsqueeze } from '../graph/ops';
import { layerNormBlock, linear, mlp, type ParamLookup } from './blocks';
import { gptParams, GptConfigSchema, type GptConfig } from './gpt';
import { hasVariantOptions } from './variants';

export interface GptExportOptions {
  /** Adds past_key_values inputs and present outputs for incremental decoding (default false). */
  kvCache?: boolean;
  graphName?: string;
}

/** Graph I/O names of an exported decoder, shared by the exporter and the generation loop. */
export const pastKeyName = (layer: number) => `past_key_values.${layer}.key`;
export const pastValueName = (layer: number) => `past_key_values.${layer}.value`;
export const presentKeyName = (layer: number) => `present.${layer}.key`;
export const presentValueName = (layer: number) => `present.${layer}.value`;

/** What a caller needs to drive an exported decoder: cache layout and vocabulary. */
export interface DecoderInfo {
  kvCache: boolean;
  nLayer: number;
  nHead: number;
  headDim: number;
  vocabSize: number;
  blockSize: number;
}

export function decoderInfo(cfg: GptConfig, kvCache: boolean): DecoderInfo {
  return { kvCache, nLayer: cfg.n_layer, nHead: cfg.n_head, headDim: cfg.n_embd / cfg.n_head, vocabSize: cfg.vocab_size, blockSize: cfg.block_size };
}

/**
 * Builds the inference graph of a GPT with the given weights (as `Trainer.params()` returns them).
 * @example const g = exportGpt(cfg, trainer.params(), { kvCache: true }); saveModel(g, 'gpt.onnx')
 */
export function exportGpt(cfgIn: GptConfig, weights: Map<string, Float32Array>, opts: GptExportOptions = {}): Graph {
  const cfg = GptConfigSchema.parse(cfgIn);
  if (hasVariantOptions({ ...cfg, dropout: undefined })) {
    // This forward is GPT-2's; a variant (RoPE, GQA, untied head, ...) would be exported wrong.
    // Dropout alone is fine: inference has none.
    throw new Error('exportGpt: model variants (pos, norm, norm_eps, mlp, n_inner, n_kv_head, tie_embeddings) have no export yet; only the GPT-2 layout (dropout allowed) exports');
  }
  const g = new Graph(opts.graphName ?? (opts.kvCache ? 'gpt_decoder_kv' : 'gpt_decoder'));
  const C = cfg.n_embd;
  const nh = cfg.n_head;
  const hs = C / nh;
  const params = new Map<string, Value>();
  for (const spec of gptParams(cfg)) {
    const w = weights.get(spec.name);
    if (!w) throw new Error(`exportGpt: weight "${spec.name}" is missing`);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (w.length !== n) throw new Error(`exportGpt: weight "${spec.name}" has ${w.length} values, shape [${spec.shape.join(', ')}] needs ${n}`);
    params.set(spec.name, g.initializer(spec.name, { dtype: 'float32', dims: spec.shape, data: w }));
  }
  const p: ParamLookup = (name) => {
    const v = params.get(name);
    if (!v) throw new Error(`exportGpt: the forward reads "${name}", which gptParams does not list`);
    return v;
  };

  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const past = opts.kvCache
    ? Array.from({ length: cfg.n_layer }, (_, i) => ({
        key: g.input(pastKeyName(i), 'float32', ['batch', nh, 'past', hs]),
        value: g.input(pastValueName(i), 'float32', ['batch', nh, 'past', hs]),
      }))
    : null;

  const idsShape = g.op('Shape', [ids])[0]; // [batch, seq]
  const seqLen = g.op('Gather', [idsShape, g.const(tensor('int64', [], [1]), 'axis1')], { axis: 0 })[0]; // scalar seq
  const pastLen = past
    ? g.op('Gather', [g.op('Shape', [past[0].key])[0], g.const(tensor('int64', [], [2]), 'axis2')], { axis: 0 })[0] // scalar past
    : g.const(tensor('int64', [], [0]), 'zero');
  const total = add(pastLen, seqLen); // scalar past + seq
  const one = g.const(tensor('int64', [], [1]), 'one');
  const qPos = g.op('Range', [pastLen, total, one])[0]; // (seq): positions of the new tokens
  const kPos = g.op('Range', [g.const(tensor('int64', [], [0]), 'zero'), total, one])[0]; // (past + seq)
  // Query i may attend to key j when j <= past + i: (seq, 1) >= (1, past + seq) → (seq, past + seq).
  const allowed = g.op('GreaterOrEqual', [unsqueeze(qPos, [1]), unsqueeze(kPos, [0])])[0];
  const minusInf = g.const(tensor('float32', [], [-Infinity]), 'minus_inf');

  const tok = gather(p('wte'), ids); // (batch, seq, C)
  const pos = gather(p('wpe'), qPos); // (seq, C)
  let x = reshape(add(tok, pos), [-1, C]); // (batch·seq, C)
  const headsShape = concat([idsShape, g.vector([nh, hs])], 0); // [batch, seq, nh, hs]
  const presents: { key: Value; value: Value }[] = [];
  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}`;
    const qkv = linear(layerNormBlock(x, p, `${h}.ln_1`, cfg.bias), p, `${h}.attn.c_attn`, cfg.bias); // (batch·seq, 3C)
    const [q0, k0, v0] = g.op('Split', [qkv, g.vector([C, C, C])], { axis: 1 }, { outputs: 3 }); // 3 × (batch·seq, C)
    const heads = (t: Value) => transpose(g.op('Reshape', [t, headsShape])[0], [0, 2, 1, 3]); // (batch, nh, seq, hs)
    let k = heads(k0);
    let v = heads(v0);
    if (past) {
      k = concat([past[i].key, k], 2); // (batch, nh, past + seq, hs)
      v = concat([past[i].value, v], 2); // (batch, nh, past + seq, hs)
      presents.push({ key: k, value: v });
    }
    const q = mul(heads(q0), scalar(x, 1 / Math.sqrt(hs))); // (batch, nh, seq, hs), scaled like training
    const att = matmul(q, transpose(k, [0, 1, 3, 2])); // (batch, nh, seq, hs) @ (batch, nh, hs, past + seq) → (batch, nh, seq, past + seq)
    const masked = g.op('Where', [allowed, att, minusInf])[0];
    const y = matmul(softmax(masked, -1), v); // (batch, nh, seq, past + seq) @ (batch, nh, past + seq, hs) → (batch, nh, seq, hs)
    const merged = reshape(transpose(y, [0, 2, 1, 3]), [-1, C]); // (batch, seq, nh, hs) → (batch·seq, C)
    x = add(x, linear(merged, p, `${h}.attn.c_proj`, cfg.bias));
    x = add(x, mlp(layerNormBlock(x, p, `${h}.ln_2`, cfg.bias), p, `${h}.mlp`, cfg.bias));
  }
  x = layerNorm(x, p('ln_f.weight'), cfg.bias ? p('ln_f.bias') : null, 1e-5);
  // Tied head: (batch·seq, C) @ wteᵀ (C, V) → (batch·seq, V), wte read in place.
  const flat = g.op('Gemm', [x, p('wte')], { transB: 1 }, { name: 'lm_head' })[0];
  const logits = g.op('Reshape', [flat, concat([idsShape, g.vector([cfg.vocab_size])], 0)])[0]; // (batch, seq, V)
  g.output(logits, 'logits');
  presents.forEach((pr, i) => {
    g.output(pr.key, presentKeyName(i));
    g.output(pr.value, presentValueName(i));
  });
  return g;
}
