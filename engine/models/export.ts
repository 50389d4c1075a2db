// Inference-graph export of our GPT (gpt.ts, every variant of variants.ts) for serving,
// quantization and evaluation. BERT and T5 export in export-encoders.ts.
//
// The training builder sizes batch and sequence at build time; a served model must take any batch
// and any length up to block_size, and decoding wants a key/value cache. So this file rebuilds the
// same forward from the shared blocks with symbolic dims ("batch", "seq", "past") and, with
// `kvCache`, past/present key-value tensors in the Hugging Face layout:
//   inputs  input_ids int64 (batch, seq), past_key_values.{i}.key|value float32 (batch, n_kv, past, hs)
//   outputs logits (batch, seq, V), present.{i}.key|value (batch, n_kv, past + seq, hs)
// n_kv is n_kv_head (grouped-query attention caches one key/value per group, as HF Llama does),
// n_head otherwise. The first decoding call passes past tensors with past = 0. Weights are
// initializers; the LM head is one Gemm (transB=1) over wte (tied) or lm_head.weight (V, C), so the
// matrix is stored once and never transposed at run time. Positions (learned wpe rows, or RoPE
// cos/sin rows of a block_size table) are gathered at past..past+seq-1.

import { Graph, type Value } from '../graph/ir';
import { add, concat, gather, matmul, mul, reshape, scalar, softmax, transpose, unsqueeze } from '../graph/ops';
import { linear, type ParamLookup, type ParamSpec } from './blocks';
import { gptParams, GptConfigSchema, type GptConfig } from './gpt';
import { applyRope, resolveVariant, ropeTables, variantMlp, variantNorm, type Rope } from './variants';

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
  /** Heads of each past/present tensor: n_kv_head under grouped-query attention, else n_head. */
  nHead: number;
  headDim: number;
  vocabSize: number;
  blockSize: number;
}

export function decoderInfo(cfgIn: GptConfig, kvCache: boolean): DecoderInfo {
  const cfg = GptConfigSchema.parse(cfgIn);
  const nHead = resolveVariant(cfg).nKvHead;
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
 * Builds the inference graph of a GPT (any variant; dropout is left out) with the given weights
 * (as `Trainer.params()` returns them).
 * @example const g = exportGpt(cfg, trainer.params(), { kvCache: true }); saveModel(g, 'gpt.onnx')
 */
export function exportGpt(cfgIn: GptConfig, weights: Map<string, Float32Array>, opts: GptExportOptions = {}): Graph {
  const cfg = GptConfigSchema.parse(cfgIn);
  const v = resolveVariant(cfg);
  const g = new Graph(opts.graphName ?? (opts.kvCache ? 'gpt_decoder_kv' : 'gpt_decoder'));
  const C = cfg.n_embd;
  const nh = cfg.n_head;
  const nkv = v.nKvHead;
  const hs = C / nh;
  const p = initializerParams(g, gptParams(cfg), weights, 'exportGpt');

  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const past = opts.kvCache
    ? Array.from({ length: cfg.n_layer }, (_, i) => ({
        key: g.input(pastKeyName(i), 'float32', ['batch', nkv, 'past', hs]),
        value: g.input(pastValueName(i), 'float32', ['batch', nkv, 'past', hs]),
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
  const minusInf = g.scalar(-Infinity);

  let x = gather(p('wte'), ids); // (batch, seq, C)
  if (v.pos === 'learned') x = add(x, gather(p('wpe'), qPos)); // + (seq, C)
  x = reshape(x, [-1, C]); // (batch·seq, C)
  const rope = v.pos === 'rope' ? ropeAt(g, cfg.block_size, hs, v.ropeTheta, qPos) : null;
  const heads = (t: Value, n: number) => transpose(g.op('Reshape', [t, concat([idsShape, g.vector([n, hs])], 0)])[0], [0, 2, 1, 3]); // (batch·seq, n·hs) → (batch, n, seq, hs)

  const presents: { key: Value; value: Value }[] = [];
  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}`;
    const qkv = linear(variantNorm(x, p, `${h}.ln_1`, cfg), p, `${h}.attn.c_attn`, cfg.bias); // (batch·seq, C + 2·nkv·hs)
    const [q0, k0, v0] = g.op('Split', [qkv, g.vector([C, nkv * hs, nkv * hs])], { axis: 1 }, { outputs: 3 }); // (batch·seq, C), 2 × (batch·seq, nkv·hs)
    let q = heads(q0, nh); // (batch, nh, seq, hs)
    let k = heads(k0, nkv); // (batch, nkv, seq, hs)
    let val = heads(v0, nkv); // (batch, nkv, seq, hs)
    if (rope) {
      q = applyRope(q, rope);
      k = applyRope(k, rope);
    }
    if (past) {
      k = concat([past[i].key, k], 2); // (batch, nkv, past + seq, hs)
      val = concat([past[i].value, val], 2); // (batch, nkv, past + seq, hs)
      presents.push({ key: k, value: val });
    }
    const y = cachedAttention(mul(q, scalar(q, 1 / Math.sqrt(hs))), k, val, allowed, minusInf, nh, nkv); // (batch, nh, seq, hs)
    const merged = reshape(transpose(y, [0, 2, 1, 3]), [-1, C]); // (batch, seq, nh, hs) → (batch·seq, C)
    x = add(x, linear(merged, p, `${h}.attn.c_proj`, cfg.bias));
    x = add(x, variantMlp(variantNorm(x, p, `${h}.ln_2`, cfg), p, `${h}.mlp`, cfg));
  }
  x = variantNorm(x, p, 'ln_f', cfg);
  // (batch·seq, C) @ (V, C)ᵀ → (batch·seq, V), the head matrix read in place.
  const flat = g.op('Gemm', [x, p(v.tie ? 'wte' : 'lm_head.weight')], { transB: 1 }, { name: 'lm_head' })[0];
  const logits = g.op('Reshape', [flat, concat([idsShape, g.vector([cfg.vocab_size])], 0)])[0]; // (batch, seq, V)
  g.output(logits, 'logits');
  presents.forEach((pr, i) => {
    g.output(pr.key, presentKeyName(i));
    g.output(pr.value, presentValueName(i));
  });
  return g;
}

/** RoPE rows for positions `pos` (seq) from block_size tables: cos (seq, hs) and sin with its first half negated (see ropeConsts). */
function ropeAt(g: Graph, blockSize: number, hs: number, theta: number, pos: Value): Rope {
  const { cos, sin } = ropeTables(blockSize, hs, theta);
  for (let t = 0; t < blockSize; t++) for (let i = 0; i < hs / 2; i++) sin[t * hs + i] = -sin[t * hs + i];
  const cosT = g.const({ dtype: 'float32', dims: [blockSize, hs], data: cos }, 'rope_cos');
  const sinT = g.const({ dtype: 'float32', dims: [blockSize, hs], data: sin }, 'rope_sin');
  return { cos: gather(cosT, pos), sinSigned: gather(sinT, pos) }; // 2 × (seq, hs)
}

/**
 * Masked attention of scaled queries q (batch, nh, seq, hs) over k, v (batch, nkv, past + seq, hs).
 * With groups (nkv < nh) the query heads of a group are stacked along the query axis, as in
 * groupedSelfAttention, so keys and values are never repeated.
 */
function cachedAttention(q: Value, k: Value, v: Value, allowed: Value, minusInf: Value, nh: number, nkv: number): Value {
  const g = q.graph;
  const hs = q.shape![3] as number;
  const grouped = nkv !== nh;
  // Reshape 0 copies that input dim: batch, and the key length past + seq.
  const toGroups = (t: Value, last: number) => g.op('Reshape', [t, g.vector([0, nkv, -1, last])])[0]; // (batch, nh, seq, ·) → (batch, nkv, rep·seq, ·)
  const toHeads = (t: Value, last: number) => g.op('Reshape', [t, g.vector([0, nh, -1, last])])[0]; // (batch, nkv, rep·seq, ·) → (batch, nh, seq, ·)
  const kT = transpose(k, [0, 1, 3, 2]); // (batch, nkv, hs, past + seq)
  let att = matmul(grouped ? toGroups(q, hs) : q, kT); // (batch, nkv, rep·seq, hs) @ (batch, nkv, hs, past + seq) → (batch, nkv, rep·seq, past + seq)
  if (grouped) att = toHeads(att, 0); // (batch, nh, seq, past + seq)
  const probs = softmax(g.op('Where', [allowed, att, minusInf])[0], -1);
  const y = matmul(grouped ? toGroups(probs, 0) : probs, v); // (batch, nkv, rep·seq, past + seq) @ (batch, nkv, past + seq, hs) → (batch, nkv, rep·seq, hs)
  return grouped ? toHeads(y, hs) : y; // (batch, nh, seq, hs)
}
