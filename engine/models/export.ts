// Inference-graph export of our GPT (gpt.ts, any options) for serving, quantization and
// evaluation. BERT and T5 export in export-bert-t5.ts.
//
// The training graphs size batch and sequence at build time; a served model must take any batch
// and any length up to block_size, and decoding wants a key/value cache. So this file builds the
// same blocks (gpt.ts embed / transformer) on symbolic dims ("batch", "seq", "past") and, with
// `kvCache`, past/present key-value tensors in the Hugging Face layout:
//   inputs  input_ids int64 (batch, seq), past_key_values.{i}.key|value float32 (batch, n_kv, past, hs)
//   outputs logits (batch, seq, V), present.{i}.key|value (batch, n_kv, past + seq, hs)
// n_kv is n_kv_head (grouped-query attention caches one key/value per group, as HF Llama does),
// n_head otherwise. The first decoding call passes past tensors with past = 0. Weights are
// initializers; the LM head is one Gemm (transB=1) over wte (tied) or lm_head.weight (V, C), so the
// matrix is stored once and never transposed at run time. Positions (learned wpe rows, or RoPE
// cos/sin rows of a block_size table) are gathered at past..past+seq-1.

import { Graph, type Value } from '../graph/ir';
import { add, concat, unsqueeze } from '../graph/ops';
import type { ParamLookup, ParamSpec } from './blocks';
import { embed, gptOptions, gptParams, GptConfigSchema, ropeConsts, transformer, type ForwardContext, type GptConfig } from './gpt';
import { memoryConfigOf, memoryExportHook, memoryGptParams, type MemoryVariant } from './memory-slots';

export interface GptExportOptions {
  /** Adds past_key_values inputs and present outputs for incremental decoding (default false). */
  kvCache?: boolean;
  graphName?: string;
  /** The memory-augmented GPT's slots and the layers that read them (`model.variant: { kind: memory }`). */
  memory?: MemoryVariant | null;
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
  /** Heads of each past/present tensor: n_kv_head under grouped-query attention, else n_head. */
  nHead: number;
  headDim: number;
  vocabSize: number;
  blockSize: number;
}

export function decoderInfo(cfgIn: GptConfig, kvCache: boolean): DecoderInfo {
  const cfg = GptConfigSchema.parse(cfgIn);
  const nHead = gptOptions(cfg).nKvHead;
  return { kvCache, nLayer: cfg.n_layer, nHead, headDim: cfg.n_embd / cfg.n_head, vocabSize: cfg.vocab_size, blockSize: cfg.block_size };
}

/**
 * Weights as initializers of `g`, checked against `specs` (missing or wrong-sized weights are
 * named); a weight the forward reads that `specs` does not list is an error too. Weights in the
 * map that the specs do not list (a task head the export leaves out) are ignored.
 */
export function initializerParams(g: Graph, specs: ParamSpec[], weights: Map<string, Float32Array>, who: string): ParamLookup {
  const params = new Map<string, Value>();
  for (const spec of specs) {
    const w = weights.get(spec.name);
    if (!w) throw new Error(`${who}: weight "${spec.name}" is missing`);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    if (w.length !== n) throw new Error(`${who}: weight "${spec.name}" has ${w.length} values, shape [${spec.shape.join(', ')}] needs ${n}`);
    params.set(spec.name, g.initializer(spec.name, { dtype: 'float32', dims: spec.shape, data: w }));
  }
  return (name) => {
    const v = params.get(name);
    if (!v) throw new Error(`${who}: the forward reads "${name}", which the parameter list does not hold`);
    return v;
  };
}

/**
 * Builds the inference graph of a GPT (any options, the memory variant too; dropout is left out)
 * with the given weights (as `Trainer.params()` returns them).
 * @example const g = exportGpt(cfg, trainer.params(), { kvCache: true }); saveModel(g, 'gpt.onnx')
 */
export function exportGpt(cfgIn: GptConfig, weights: Map<string, Float32Array>, opts: GptExportOptions = {}): Graph {
  const cfg = GptConfigSchema.parse(cfgIn);
  const o = gptOptions(cfg);
  const g = new Graph(opts.graphName ?? (opts.kvCache ? 'gpt_decoder_kv' : 'gpt_decoder'));
  const hs = cfg.n_embd / cfg.n_head;
  const memory = opts.memory ? memoryConfigOf(cfg, opts.memory) : null;
  const p = initializerParams(g, memory ? memoryGptParams(memory) : gptParams(cfg), weights, 'exportGpt');

  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const past = opts.kvCache
    ? Array.from({ length: cfg.n_layer }, (_, i) => ({
        key: g.input(pastKeyName(i), 'float32', ['batch', o.nKvHead, 'past', hs]),
        value: g.input(pastValueName(i), 'float32', ['batch', o.nKvHead, 'past', hs]),
      }))
    : null;

  const idsShape = g.op('Shape', [ids])[0]; // [batch, seq]
  const seqLen = g.op('Gather', [idsShape, g.scalar(1, 'int64')], { axis: 0 })[0]; // scalar seq
  const pastLen = past ? g.op('Gather', [g.op('Shape', [past[0].key])[0], g.scalar(2, 'int64')], { axis: 0 })[0] : g.scalar(0, 'int64'); // scalar past
  const total = add(pastLen, seqLen); // scalar past + seq
  const one = g.scalar(1, 'int64');
  const qPos = g.op('Range', [pastLen, total, one])[0]; // (seq): positions of the new tokens
  const kPos = g.op('Range', [g.scalar(0, 'int64'), total, one])[0]; // (past + seq)
  // Query i may attend to key j when j <= past + i: (seq, 1) >= (1, past + seq) → (seq, past + seq).
  const allowed = g.op('GreaterOrEqual', [unsqueeze(qPos, [1]), unsqueeze(kPos, [0])])[0];
  const ctx: ForwardContext = {
    bt: [idsShape],
    mask: g.op('Where', [allowed, g.scalar(0), g.scalar(-Infinity)])[0], // (seq, past + seq)
    rope: o.pos === 'rope' ? ropeConsts(g, cfg.block_size, hs, o.ropeTheta, qPos) : null,
    dropout: null,
  };
  // A memory GPT's chosen blocks read the slots after self-attention; the slots need no cache.
  const hook = memory ? memoryExportHook(memory, p) : undefined;
  const { hidden, kv } = transformer(cfg, embed(cfg, ids, p, qPos), p, ctx, hook, past); // (batch·seq, C)
  // (batch·seq, C) @ (V, C)ᵀ → (batch·seq, V), the head matrix read in place.
  const flat = g.op('Gemm', [hidden, p(o.tie ? 'wte' : 'lm_head.weight')], { transB: 1 }, { name: 'lm_head' })[0];
  const logits = g.op('Reshape', [flat, concat([idsShape, g.vector([cfg.vocab_size])], 0)])[0]; // (batch, seq, V)
  g.output(logits, 'logits');
  if (past) {
    kv.forEach((pr, i) => {
      g.output(pr.key, presentKeyName(i));
      g.output(pr.value, presentValueName(i));
    });
  }
  return g;
}
