// GPT variants by config: rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention,
// dropout and an untied LM head, as optional fields of GptConfig (gpt.ts). Left out, every field
// means GPT-2, and gpt.ts keeps building GPT-2 with its own code, so the default model is the
// same graph as before these options existed. Any non-default option routes gptParams /
// gptLogits / gptTrainLoss here.
//
// Parameter names stay GPT-2's whatever the options (an option never renames a weight, so LoRA
// targets and checkpoints keep their keys); new weights get GPT-2 / HF names:
//   untied head      lm_head.weight (V, C), torch layout like HF GPT2LMHeadModel.lm_head
//   SwiGLU           mlp.c_fc.weight (C, 2H) holds [gate | up]; mlp.c_proj (H, C) is down
//   GQA              attn.c_attn.weight (C, C + 2·n_kv_head·hs) holds [q | k | v]
//   RMSNorm          ln_1 / ln_2 / ln_f .weight only (no bias, as in Llama)
//   RoPE             no weights; wpe is dropped
// With pos 'rope', norm 'rmsnorm', mlp 'swiglu', bias false this is HF LlamaForCausalLM, and
// llamaToGpt / gptToLlama (llama-names.ts) convert weights key by key:
//   model.embed_tokens.weight ↔ wte               model.norm.weight ↔ ln_f.weight
//   model.layers.N.input_layernorm ↔ h.N.ln_1      post_attention_layernorm ↔ h.N.ln_2
//   self_attn.{q,k,v}_proj ↔ h.N.attn.c_attn (column blocks, transposed)
//   self_attn.o_proj ↔ h.N.attn.c_proj (transposed) mlp.{gate,up}_proj ↔ h.N.mlp.c_fc (blocks, transposed)
//   mlp.down_proj ↔ h.N.mlp.c_proj (transposed)    lm_head.weight ↔ lm_head.weight

import { z } from 'zod';
import { seededDropout } from '../autodiff/dropout';
import type { Graph, Value } from '../graph/ir';
import { add, concat, gather, layerNorm, matmul, mul, reshape, rmsNorm, scalar, sigmoid, softmax, split, transpose } from '../graph/ops';
import { causalMask, linear, type ParamLookup, type ParamSpec } from './blocks';
import type { GptConfig } from './gpt';

/** The optional variant fields GptConfigSchema spreads into its object. */
export const gptVariantFields = {
  /** Learned absolute positions (wpe, GPT-2) or rotary embeddings on q and k (RoPE, HF rotate_half layout). */
  pos: z.enum(['learned', 'rope']).optional(),
  /** RoPE base θ: rotation frequencies θ^(-2i/hs) (HF rope_theta). */
  rope_theta: z.number().positive().optional(),
  /** LayerNorm (weight + bias when `bias`) or RMSNorm (weight only). */
  norm: z.enum(['layernorm', 'rmsnorm']).optional(),
  /** Norm epsilon (HF layer_norm_epsilon / rms_norm_eps); default 1e-5. */
  norm_eps: z.number().positive().optional(),
  /** GELU(tanh) MLP (GPT-2) or SwiGLU: down(silu(gate·x) ⊙ up·x). */
  mlp: z.enum(['gelu', 'swiglu']).optional(),
  /**
   * MLP hidden width H (HF n_inner / intermediate_size); default 4C for gelu, 8C/3 rounded up to
   * a multiple of 8 for swiglu. Null means the default, as in HF GPT2Config (configFromHf passes it).
   */
  n_inner: z.number().int().positive().nullish(),
  /** Key/value heads for grouped-query attention; must divide n_head; default n_head. */
  n_kv_head: z.number().int().positive().optional(),
  /** Dropout ratio on embeddings, attention probabilities and both residual branches, training graphs only. */
  dropout: z.number().min(0).lt(1).optional(),
  /** Dropout masks are a pure function of (dropout_seed, step, site, element); default 0. */
  dropout_seed: z.number().int().nonnegative().optional(),
  /** LM head tied to wte (GPT-2) or its own lm_head.weight (V, C). */
  tie_embeddings: z.boolean().optional(),
};

/** Field checks run by GptConfigSchema's superRefine. */
export function checkVariantFields(c: { n_head: number; n_embd: number; n_kv_head?: number; pos?: string }, ctx: z.RefinementCtx): void {
  if (c.n_kv_head !== undefined && c.n_head % c.n_kv_head !== 0) {
    ctx.addIssue({ code: 'custom', path: ['n_kv_head'], message: `must divide n_head (${c.n_head} % ${c.n_kv_head} != 0)` });
  }
  if (c.pos === 'rope' && c.n_embd % c.n_head === 0 && (c.n_embd / c.n_head) % 2 !== 0) {
    ctx.addIssue({ code: 'custom', path: ['pos'], message: `rope needs an even head size (n_embd / n_head = ${c.n_embd / c.n_head})` });
  }
}

/** Every variant option with its default filled in. */
export interface Variant {
  pos: 'learned' | 'rope';
  ropeTheta: number;
  norm: 'layernorm' | 'rmsnorm';
  normEps: number;
  mlp: 'gelu' | 'swiglu';
  nInner: number;
  nKvHead: number;
  dropout: number;
  dropoutSeed: number;
  tie: boolean;
}

export function resolveVariant(cfg: GptConfig): Variant {
  const C = cfg.n_embd;
  const mlpKind = cfg.mlp ?? 'gelu';
  return {
    pos: cfg.pos ?? 'learned',
    ropeTheta: cfg.rope_theta ?? 10000,
    norm: cfg.norm ?? 'layernorm',
    normEps: cfg.norm_eps ?? 1e-5,
    mlp: mlpKind,
    nInner: cfg.n_inner ?? (mlpKind === 'gelu' ? 4 * C : 8 * Math.ceil((8 * C) / 3 / 8)),
    nKvHead: cfg.n_kv_head ?? cfg.n_head,
    dropout: cfg.dropout ?? 0,
    dropoutSeed: cfg.dropout_seed ?? 0,
    tie: cfg.tie_embeddings ?? true,
  };
}

/** True when some option differs from GPT-2, i.e. gpt.ts must build through this file. */
export function hasVariantOptions(cfg: GptConfig): boolean {
  const v = resolveVariant(cfg);
  return v.pos !== 'learned' || v.norm !== 'layernorm' || v.normEps !== 1e-5 || v.mlp !== 'gelu' || v.nInner !== 4 * cfg.n_embd || v.nKvHead !== cfg.n_head || v.dropout !== 0 || !v.tie;
}

/** Parameter list with GPT-2 init (N(0, 0.02), residual projections N(0, 0.02/√(2·n_layer)), norms 1/0). */
export function variantGptParams(cfg: GptConfig): ParamSpec[] {
  const v = resolveVariant(cfg);
  const C = cfg.n_embd;
  const kvC = v.nKvHead * (C / cfg.n_head);
  const std = 0.02;
  const projStd = 0.02 / Math.sqrt(2 * cfg.n_layer);
  const specs: ParamSpec[] = [{ name: 'wte', shape: [cfg.vocab_size, C], init: { kind: 'normal', std } }];
  if (v.pos === 'learned') specs.push({ name: 'wpe', shape: [cfg.block_size, C], init: { kind: 'normal', std } });
  const norm = (name: string) => {
    specs.push({ name: `${name}.weight`, shape: [C], init: { kind: 'ones' } });
    if (v.norm === 'layernorm' && cfg.bias) specs.push({ name: `${name}.bias`, shape: [C], init: { kind: 'zeros' } });
  };
  const lin = (name: string, nIn: number, nOut: number, s: number) => {
    specs.push({ name: `${name}.weight`, shape: [nIn, nOut], init: { kind: 'normal', std: s } });
    if (cfg.bias) specs.push({ name: `${name}.bias`, shape: [nOut], init: { kind: 'zeros' } });
  };
  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}`;
    norm(`${h}.ln_1`);
    lin(`${h}.attn.c_attn`, C, C + 2 * kvC, std);
    lin(`${h}.attn.c_proj`, C, C, projStd);
    norm(`${h}.ln_2`);
    lin(`${h}.mlp.c_fc`, C, v.mlp === 'swiglu' ? 2 * v.nInner : v.nInner, std);
    lin(`${h}.mlp.c_proj`, v.nInner, C, projStd);
  }
  norm('ln_f');
  if (!v.tie) specs.push({ name: 'lm_head.weight', shape: [cfg.vocab_size, C], init: { kind: 'normal', std } });
  return specs;
}

/** Where dropout masks come from in a training graph: the step input and a seed constant. */
export interface DropoutContext {
  ratio: number;
  seed: Value;
  step: Value;
}

/** Dropout context of a training-step graph (buildTrainStep declares `step`), or null when dropout is 0. */
export function trainingDropout(cfg: GptConfig, g: Graph): DropoutContext | null {
  const v = resolveVariant(cfg);
  if (v.dropout === 0) return null;
  const step = g.values.get('step');
  if (!step) throw new Error(`gpt: dropout ${v.dropout} needs the training graph's "step" input (build the graph with buildTrainStep)`);
  return { ratio: v.dropout, step, seed: g.scalar(v.dropoutSeed, 'int64') };
}

const drop = (x: Value, d: DropoutContext | null, salt: number) => (d ? seededDropout(x, d.ratio, d.seed, d.step, salt) : x);

/** Rotary tables cos, sin as (T, hs) float32 (HF layout: the hs/2 frequencies repeated twice), positions offset..offset+T-1. */
export function ropeTables(T: number, hs: number, theta: number, offset = 0): { cos: Float32Array; sin: Float32Array } {
  const half = hs / 2;
  const cos = new Float32Array(T * hs);
  const sin = new Float32Array(T * hs);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = (offset + t) * Math.pow(theta, (-2 * i) / hs);
      cos[t * hs + i] = cos[t * hs + i + half] = Math.cos(a);
      sin[t * hs + i] = sin[t * hs + i + half] = Math.sin(a);
    }
  }
  return { cos, sin };
}

/** Rotary constants for a graph: cos (T, hs) and sin with its first half negated. */
export interface Rope {
  cos: Value;
  sinSigned: Value;
}

export function ropeConsts(g: Graph, T: number, hs: number, theta: number): Rope {
  const { cos, sin } = ropeTables(T, hs, theta);
  // rotate_half(x)·sin = [-x2, x1]·sin = [x2, x1]·[-sin1, sin2]: the sign lives in the table, so
  // the graph needs no Neg.
  for (let t = 0; t < T; t++) for (let i = 0; i < hs / 2; i++) sin[t * hs + i] = -sin[t * hs + i];
  return {
    cos: g.const({ dtype: 'float32', dims: [T, hs], data: cos }, 'rope_cos'),
    sinSigned: g.const({ dtype: 'float32', dims: [T, hs], data: sin }, 'rope_sin'),
  };
}

/** x·cos + rotate_half(x)·sin on (B, heads, T, hs), pairing dims i and i + hs/2 (HF apply_rotary_pos_emb). */
export function applyRope(x: Value, r: Rope): Value {
  const hs = x.shape![3] as number;
  const [x1, x2] = split(x, [hs / 2, hs / 2], 3); // 2 × (B, h, T, hs/2)
  const swapped = concat([x2, x1], 3); // (B, h, T, hs)
  return add(mul(x, r.cos), mul(swapped, r.sinSigned));
}

export interface StackShape {
  batch: number;
  /** Sequence length S the blocks see (text, or image prefix + text). */
  seq: number;
}

/** Extra sub-layer inserted after a block's attention (memory read, ...); returns the new residual stream. */
export type BlockHook = (x: Value, layer: number) => Value;

/**
 * Grouped-query causal self-attention on the 2-D residual stream (B·S, C). Query heads are
 * stacked per key/value group along the query axis, so each group is one batched MatMul against
 * its own keys and no key/value tensor is ever repeated (HF repeat_kv order: query head h reads
 * kv head ⌊h / (n_head / n_kv_head)⌋).
 */
export function groupedSelfAttention(x: Value, p: ParamLookup, prefix: string, cfg: GptConfig, s: StackShape, mask: Value, rope: Rope | null, d: DropoutContext | null, salt: number): Value {
  const v = resolveVariant(cfg);
  const [B, T, nh, nkv, C] = [s.batch, s.seq, cfg.n_head, v.nKvHead, cfg.n_embd];
  const hs = C / nh;
  const rep = nh / nkv;
  const qkv = linear(x, p, `${prefix}.c_attn`, cfg.bias); // (B·T, C) @ (C, C + 2·nkv·hs) → (B·T, C + 2·nkv·hs)
  const [q0, k0, v0] = split(qkv, [C, nkv * hs, nkv * hs], 1); // (B·T, C), 2 × (B·T, nkv·hs)
  let q = transpose(reshape(q0, [B, T, nh, hs]), [0, 2, 1, 3]); // (B, nh, T, hs)
  let k = transpose(reshape(k0, [B, T, nkv, hs]), [0, 2, 1, 3]); // (B, nkv, T, hs)
  const val = transpose(reshape(v0, [B, T, nkv, hs]), [0, 2, 1, 3]); // (B, nkv, T, hs)
  if (rope) {
    q = applyRope(q, rope);
    k = applyRope(k, rope);
  }
  const qs = reshape(mul(q, scalar(q, 1 / Math.sqrt(hs))), [B, nkv, rep * T, hs]); // (B, nkv, rep·T, hs)
  const scores = matmul(qs, transpose(k, [0, 1, 3, 2])); // (B, nkv, rep·T, hs) @ (B, nkv, hs, T) → (B, nkv, rep·T, T)
  const att = add(reshape(scores, [B, nh, T, T]), mask); // (B, nh, T, T)
  const probs = drop(softmax(att, -1), d, salt);
  const y = matmul(reshape(probs, [B, nkv, rep * T, T]), val); // (B, nkv, rep·T, T) @ (B, nkv, T, hs) → (B, nkv, rep·T, hs)
  const merged = reshape(transpose(reshape(y, [B, nh, T, hs]), [0, 2, 1, 3]), [B * T, C]); // (B, T, nh, hs) → (B·T, C)
  return linear(merged, p, `${prefix}.c_proj`, cfg.bias);
}

/** GELU(tanh) or SwiGLU MLP on (B·S, C). */
export function variantMlp(x: Value, p: ParamLookup, prefix: string, cfg: GptConfig): Value {
  const v = resolveVariant(cfg);
  const h = linear(x, p, `${prefix}.c_fc`, cfg.bias); // (B·S, C) @ (C, H or 2H)
  let act: Value;
  if (v.mlp === 'gelu') act = x.graph.op('Gelu', [h], { approximate: 'tanh' })[0]; // (B·S, H)
  else {
    const [gate, up] = split(h, [v.nInner, v.nInner], 1); // 2 × (B·S, H)
    act = mul(mul(gate, sigmoid(gate)), up); // silu(gate) ⊙ up
  }
  return linear(act, p, `${prefix}.c_proj`, cfg.bias); // (B·S, H) @ (H, C) → (B·S, C)
}

export function variantNorm(x: Value, p: ParamLookup, prefix: string, cfg: GptConfig): Value {
  const v = resolveVariant(cfg);
  if (v.norm === 'rmsnorm') return rmsNorm(x, p(`${prefix}.weight`), v.normEps);
  return layerNorm(x, p(`${prefix}.weight`), cfg.bias ? p(`${prefix}.bias`) : null, v.normEps);
}

/** Token embeddings (B, T) → (B, T, C), plus learned positions 0..T-1 when pos is 'learned'. */
export function embedTokens(cfg: GptConfig, idx: Value, p: ParamLookup, positionOffset = 0): Value {
  const tok = gather(p('wte'), idx); // (B, T, C)
  if (resolveVariant(cfg).pos === 'rope') return tok;
  const T = idx.shape![1] as number;
  const pos = gather(p('wpe'), idx.graph.vector(Array.from({ length: T }, (_, i) => positionOffset + i))); // (T, C)
  return add(tok, pos);
}

/**
 * The transformer stack on embeddings (B·S, C): embedding dropout, n_layer pre-norm blocks (with
 * `hook` after each attention), final norm. Returns hidden states (B·S, C).
 */
export function gptStack(cfg: GptConfig, x0: Value, p: ParamLookup, s: StackShape, d: DropoutContext | null, hook?: BlockHook): Value {
  const v = resolveVariant(cfg);
  const g = x0.graph;
  if (s.seq > cfg.block_size) throw new Error(`gpt: sequence length ${s.seq} exceeds block_size ${cfg.block_size}`);
  const mask = causalMask(g, s.seq);
  const rope = v.pos === 'rope' ? ropeConsts(g, s.seq, cfg.n_embd / cfg.n_head, v.ropeTheta) : null;
  let x = drop(x0, d, 0);
  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}`;
    x = add(x, drop(groupedSelfAttention(variantNorm(x, p, `${h}.ln_1`, cfg), p, `${h}.attn`, cfg, s, mask, rope, d, 4 * i + 1), d, 4 * i + 2));
    if (hook) x = hook(x, i);
    x = add(x, drop(variantMlp(variantNorm(x, p, `${h}.ln_2`, cfg), p, `${h}.mlp`, cfg), d, 4 * i + 3));
  }
  return variantNorm(x, p, 'ln_f', cfg);
}

/** LM head: (N, C) → (N, V), through wteᵀ (tied) or lm_head.weight (V, C) read in place by Gemm. */
export function lmHead(cfg: GptConfig, x: Value, p: ParamLookup): Value {
  if (resolveVariant(cfg).tie) return matmul(x, transpose(p('wte'), [1, 0])); // (N, C) @ (C, V) → (N, V)
  return x.graph.op('Gemm', [x, p('lm_head.weight')], { transB: 1 })[0]; // (N, C) @ (V, C)ᵀ → (N, V)
}

/** Logits (B·T, V) of the variant GPT; `d` turns dropout on (training graphs). */
export function variantGptLogits(cfg: GptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null): Value {
  const [B, T] = knownBatchSeq(idx);
  const x = reshape(embedTokens(cfg, idx, p), [B * T, cfg.n_embd]); // (B, T, C) → (B·T, C)
  return lmHead(cfg, gptStack(cfg, x, p, { batch: B, seq: T }, d), p);
}

export function knownBatchSeq(idx: Value): [number, number] {
  const s = idx.shape;
  if (!s || s.length !== 2 || typeof s[0] !== 'number' || typeof s[1] !== 'number') {
    throw new Error(`gpt: input ${idx.name} must be int64 (B, T) with known B and T, got [${s?.join(', ')}]`);
  }
  return [s[0], s[1]];
}
