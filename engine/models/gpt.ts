// GPT, top to bottom as in nanoGPT model.py: config → attention → MLP → block → GPT (params,
// forward, loss). One builder: GPT-2 is its default configuration, and RoPE, RMSNorm, SwiGLU,
// grouped-query attention (n_kv_head), biases on or off, dropout and an untied LM head are options
// of the same code. The training graphs (fixed B, T) and the exported inference graph (export.ts:
// run-time dims, KV cache) both build their blocks here.
//
// Parameter names are Hugging Face GPT-2's whatever the options, so weights map key by key and an
// option never renames a weight (LoRA targets and checkpoints keep their keys). Linear weights are
// (in, out) like HF Conv1D. Weights the options add get GPT-2 / HF names:
//   untied head      lm_head.weight (V, C), torch layout like HF GPT2LMHeadModel.lm_head
//   SwiGLU           mlp.c_fc.weight (C, 2H) holds [gate | up]; mlp.c_proj (H, C) is down
//   GQA              attn.c_attn.weight (C, C + 2·n_kv_head·hs) holds [q | k | v]
//   RMSNorm          ln_1 / ln_2 / ln_f .weight only (no bias, as in Llama)
//   RoPE             no weights; wpe is dropped
// With pos 'rope', norm 'rmsnorm', mlp 'swiglu', bias false this is HF LlamaForCausalLM, whose
// weights llama-to-gpt.ts converts to these names.

import { z } from 'zod';
import { seededDropout } from '../autodiff/dropout';
import { EngineError } from '../errors';
import type { Graph, Value } from '../graph/ir';
import { add, concat, gather, gelu, layerNorm, matmul, mul, reshape, rmsNorm, scalar, sigmoid, softmax, softmaxCrossEntropy, split, transpose } from '../graph/ops';
import { causalMask, linear, type ParamLookup, type ParamSpec } from './blocks';
import { reshapeTo } from './layers';

// ---------------------------------------------------------------- config

/** Fields beyond GPT-2's: optional without defaults, so an existing config parses to exactly what it parsed to before. */
export const gptOptionFields = {
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
  n_inner: z.number().int().positive().max(2 ** 18).nullish(),
  /** Key/value heads for grouped-query attention; must divide n_head; default n_head. */
  n_kv_head: z.number().int().positive().optional(),
  /** Dropout ratio on embeddings, attention probabilities and both residual branches, training graphs only. */
  dropout: z.number().min(0).lt(1).optional(),
  /** Dropout masks are a pure function of (dropout_seed, step, site, element); default 0. */
  dropout_seed: z.number().int().nonnegative().optional(),
  /** LM head tied to wte (GPT-2) or its own lm_head.weight (V, C). */
  tie_embeddings: z.boolean().optional(),
  /**
   * How attention runs (as HF's attn_implementation, no effect on the weights): MatMul/Softmax ops
   * ('explicit', the default) or one com.microsoft MultiHeadAttention per layer ('fused'), whose
   * gradient recomputes the probabilities per query block instead of saving (B, nh, T, T) of them
   * (engine/autodiff/rules/attention.ts). Exported graphs (run-time dims, KV cache) stay explicit.
   */
  attention: z.enum(['explicit', 'fused']).optional(),
};

/**
 * The largest sizes a config may name: beyond any published model (GPT-3 has 96 layers, Llama 3
 * a 128k vocabulary), small enough that every shape and count stays exact. Whether a model of
 * such a size can train on a worker is the memory estimate's question (engine/models/memory.ts).
 */
export const GPT_SIZE_LIMITS = { vocab_size: 2 ** 21, block_size: 2 ** 20, n_layer: 1024, n_head: 1024, n_embd: 2 ** 16 } as const;

/** A GPT config. Strict: an unknown key is an error (a typo must not be dropped); see StoredGptConfigSchema. */
export const GptConfigSchema = z
  .strictObject({
    vocab_size: z.number().int().positive().max(GPT_SIZE_LIMITS.vocab_size),
    block_size: z.number().int().positive().max(GPT_SIZE_LIMITS.block_size),
    n_layer: z.number().int().positive().max(GPT_SIZE_LIMITS.n_layer),
    n_head: z.number().int().positive().max(GPT_SIZE_LIMITS.n_head),
    n_embd: z.number().int().positive().max(GPT_SIZE_LIMITS.n_embd),
    bias: z.boolean().default(true),
    ...gptOptionFields,
  })
  .superRefine((c, ctx) => {
    if (c.n_embd % c.n_head !== 0) {
      ctx.addIssue({ code: 'custom', path: ['n_head'], message: `must divide n_embd (${c.n_embd} % ${c.n_head} != 0)` });
    }
    if (c.n_kv_head !== undefined && c.n_head % c.n_kv_head !== 0) {
      ctx.addIssue({ code: 'custom', path: ['n_kv_head'], message: `must divide n_head (${c.n_head} % ${c.n_kv_head} != 0)` });
    }
    if (c.attention === 'fused' && c.n_kv_head !== undefined && c.n_kv_head !== c.n_head) {
      ctx.addIssue({ code: 'custom', path: ['attention'], message: `'fused' needs n_kv_head = n_head (MultiHeadAttention has no key/value groups), got n_kv_head ${c.n_kv_head}` });
    }
    if (c.attention === 'fused' && (c.dropout ?? 0) > 0) {
      ctx.addIssue({ code: 'custom', path: ['attention'], message: `'fused' has no dropout on attention probabilities; set dropout to 0 or attention to 'explicit' (dropout ${c.dropout})` });
    }
    if (c.pos === 'rope' && c.n_embd % c.n_head === 0 && (c.n_embd / c.n_head) % 2 !== 0) {
      ctx.addIssue({ code: 'custom', path: ['pos'], message: `rope needs an even head size (n_embd / n_head = ${c.n_embd / c.n_head})` });
    }
  });
export type GptConfig = z.infer<typeof GptConfigSchema>;

/**
 * GptConfigSchema for configs read back from files that other versions or other tools wrote
 * (a checkpoint's checkpoint.json, a published model's manifest): keys it does not know are
 * dropped, not refused, so an older or newer file still loads.
 */
export const StoredGptConfigSchema = GptConfigSchema.strip();

/** Every option with its default (GPT-2's) filled in. */
export interface GptOptions {
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

export function gptOptions(cfg: GptConfig): GptOptions {
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

/**
 * Every option spelled out (gptOptions' defaults), so a stored config (a checkpoint's modelConfig)
 * records everything the math depends on and never depends on a default that may change.
 */
export function explicitGptConfig(cfg: GptConfig): GptConfig {
  const o = gptOptions(cfg);
  return {
    ...cfg,
    pos: o.pos,
    ...(o.pos === 'rope' ? { rope_theta: o.ropeTheta } : {}),
    norm: o.norm,
    norm_eps: o.normEps,
    mlp: o.mlp,
    n_inner: o.nInner,
    n_kv_head: o.nKvHead,
    dropout: o.dropout,
    dropout_seed: o.dropoutSeed,
    tie_embeddings: o.tie,
  };
}

// ---------------------------------------------------------------- positions and dropout

/** Rotary constants: cos (T, hs) and sin with its first half negated (HF layout: the hs/2 frequencies repeated twice). */
export interface Rope {
  cos: Value;
  sinSigned: Value;
}

/** Rotary tables for positions 0..T-1, or, given `positions` (T'), the rows at those positions. */
export function ropeConsts(g: Graph, T: number, hs: number, theta: number, positions?: Value): Rope {
  const half = hs / 2;
  const cos = new Float32Array(T * hs);
  const sin = new Float32Array(T * hs);
  // rotate_half(x)·sin = [-x2, x1]·sin = [x2, x1]·[-sin1, sin2]: the sign lives in the table, so
  // the graph needs no Neg.
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = t * Math.pow(theta, (-2 * i) / hs);
      cos[t * hs + i] = cos[t * hs + i + half] = Math.cos(a);
      sin[t * hs + i] = -Math.sin(a);
      sin[t * hs + i + half] = Math.sin(a);
    }
  }
  const cosT = g.const({ dtype: 'float32', dims: [T, hs], data: cos }, 'rope_cos');
  const sinT = g.const({ dtype: 'float32', dims: [T, hs], data: sin }, 'rope_sin');
  if (!positions) return { cos: cosT, sinSigned: sinT };
  return { cos: gather(cosT, positions), sinSigned: gather(sinT, positions) }; // 2 × (T', hs)
}

/** x·cos + rotate_half(x)·sin on (B, heads, T, hs), pairing dims i and i + hs/2 (HF apply_rotary_pos_emb). */
export function applyRope(x: Value, r: Rope): Value {
  const hs = x.shape![3] as number;
  const [x1, x2] = split(x, [hs / 2, hs / 2], 3); // 2 × (B, h, T, hs/2)
  const swapped = concat([x2, x1], 3); // (B, h, T, hs)
  return add(mul(x, r.cos), mul(swapped, r.sinSigned));
}

/** Where dropout masks come from in a training graph: the step input and a seed constant. */
export interface DropoutContext {
  ratio: number;
  seed: Value;
  step: Value;
}

/** Dropout context of a training-step graph (buildTrainStep declares `step`), or null when dropout is 0. */
export function trainingDropout(cfg: GptConfig, g: Graph): DropoutContext | null {
  const o = gptOptions(cfg);
  if (o.dropout === 0) return null;
  const step = g.values.get('step');
  if (!step) throw new Error(`gpt: dropout ${o.dropout} needs the training graph's "step" input (build the graph with buildTrainStep)`);
  return { ratio: o.dropout, step, seed: g.scalar(o.dropoutSeed, 'int64') };
}

/** Dropout at site `salt`: the embeddings are 0, layer i's sites 4i + 1..3, so no two sites share a mask. */
export const dropout = (x: Value, d: DropoutContext | null, salt: number) => (d ? seededDropout(x, d.ratio, d.seed, d.step, salt) : x);

// ---------------------------------------------------------------- attention

/** What every block's attention reads besides its weights and input; built once per forward. */
export interface ForwardContext {
  /**
   * Leading dims (B, T) of the per-head reshapes: numbers in graphs built for one size, or the
   * int64 Shape (2) of the input ids in exported graphs, whose batch and length are run-time.
   */
  bt: (number | Value)[];
  /** Additive causal mask (T, past + T): 0 where the key may be seen, -inf where not. */
  mask: Value;
  rope: Rope | null;
  dropout: DropoutContext | null;
}

/** One layer's keys and values, (B, n_kv_head, T, hs): what a KV cache holds. */
export interface KeyValue {
  key: Value;
  value: Value;
}

/**
 * Causal self-attention on the 2-D residual stream (B·T, C) with the fused qkv projection of
 * GPT-2 (`c_attn`). Under grouped-query attention the query heads of each key/value group are
 * stacked along the query axis, so each group is one batched MatMul against its own keys and no
 * key/value tensor is repeated (HF repeat_kv order: query head h reads kv head ⌊h / (n_head /
 * n_kv_head)⌋). `past` keys and values (a decoding cache) go before this call's; the keys and
 * values attended to are returned for the next call.
 */
export function causalSelfAttention(x: Value, p: ParamLookup, prefix: string, cfg: GptConfig, ctx: ForwardContext, salt: number, past: KeyValue | null = null): { y: Value; kv: KeyValue } {
  const [nh, nkv, C] = [cfg.n_head, gptOptions(cfg).nKvHead, cfg.n_embd];
  const hs = C / nh;
  const heads = (t: Value, n: number) => transpose(reshapeTo(t, [...ctx.bt, n, hs]), [0, 2, 1, 3]); // (B·T, n·hs) → (B, T, n, hs) → (B, n, T, hs)
  // Group reshapes copy batch and key length (0) so they hold for run-time dims too; MHA needs none.
  const toGroups = (t: Value, last: number) => (nkv === nh ? t : reshape(t, [0, nkv, -1, last])); // (B, nh, T, ·) → (B, nkv, rep·T, ·)
  const toHeads = (t: Value, last: number) => (nkv === nh ? t : reshape(t, [0, nh, -1, last])); // (B, nkv, rep·T, ·) → (B, nh, T, ·)

  const qkv = linear(x, p, `${prefix}.c_attn`, cfg.bias); // (B·T, C) @ (C, C + 2·nkv·hs) → (B·T, C + 2·nkv·hs)
  // Split (whose gradient is one Concat) rather than Gather per head group (a scatter each).
  const [q0, k0, v0] = split(qkv, [C, nkv * hs, nkv * hs], 1); // (B·T, C), 2 × (B·T, nkv·hs)
  let q = heads(q0, nh); // (B, nh, T, hs)
  let k = heads(k0, nkv); // (B, nkv, T, hs)
  let v = heads(v0, nkv); // (B, nkv, T, hs)
  if (ctx.rope) {
    q = applyRope(q, ctx.rope);
    k = applyRope(k, ctx.rope);
  }
  if (past) {
    k = concat([past.key, k], 2); // (B, nkv, Tk, hs), Tk = past + T
    v = concat([past.value, v], 2); // (B, nkv, Tk, hs)
  }
  // Fused only in graphs built for one (B, T) (training and evaluation): exported graphs, with
  // run-time dims or a KV cache, stay explicit standard ONNX that any runtime takes.
  if (cfg.attention === 'fused' && !past && ctx.bt.every((d) => typeof d === 'number')) {
    // One fused kernel, causal (unidirectional); it reads (B, T, C) and scales by 1/√hs itself.
    // Without RoPE the per-head transposes above are dead and pruned: MHA splits heads itself.
    const flat = (t: Value, raw: Value) => reshapeTo(ctx.rope ? transpose(t, [0, 2, 1, 3]) : raw, [...ctx.bt, C]); // (B, nh, T, hs) → (B, T, nh, hs), or (B·T, C) → (B, T, C)
    const [q3, k3, v3] = [flat(q, q0), flat(k, k0), reshapeTo(v0, [...ctx.bt, C])];
    const y3 = x.graph.op('MultiHeadAttention', [q3, k3, v3], { num_heads: nh, unidirectional: 1 }, { domain: 'com.microsoft' })[0]; // (B, T, C)
    return { y: linear(reshape(y3, [-1, C]), p, `${prefix}.c_proj`, cfg.bias), kv: { key: k, value: v } }; // (B·T, C) @ (C, C) → (B·T, C)
  }
  const qs = mul(q, scalar(q, 1 / Math.sqrt(hs))); // scale q: B·T·C multiplies instead of B·nh·T·Tk
  const scores = matmul(toGroups(qs, hs), transpose(k, [0, 1, 3, 2])); // (B, nkv, rep·T, hs) @ (B, nkv, hs, Tk) → (B, nkv, rep·T, Tk)
  const att = add(toHeads(scores, 0), ctx.mask); // (B, nh, T, Tk)
  const probs = dropout(softmax(att, -1), ctx.dropout, salt);
  const y = toHeads(matmul(toGroups(probs, 0), v), hs); // (B, nkv, rep·T, Tk) @ (B, nkv, Tk, hs) → (B, nkv, rep·T, hs) → (B, nh, T, hs)
  const merged = reshape(transpose(y, [0, 2, 1, 3]), [-1, C]); // (B, T, nh, hs) → (B·T, C)
  return { y: linear(merged, p, `${prefix}.c_proj`, cfg.bias), kv: { key: k, value: v } }; // (B·T, C) @ (C, C) → (B·T, C)
}

// ---------------------------------------------------------------- MLP, norm, block

/** GELU(tanh) or SwiGLU MLP on (B·T, C). */
export function mlp(x: Value, p: ParamLookup, prefix: string, cfg: GptConfig): Value {
  const o = gptOptions(cfg);
  const h = linear(x, p, `${prefix}.c_fc`, cfg.bias); // (B·T, C) @ (C, H or 2H) → (B·T, H or 2H)
  let act: Value;
  if (o.mlp === 'gelu') act = gelu(h, 'tanh'); // (B·T, H)
  else {
    const [gate, up] = split(h, [o.nInner, o.nInner], 1); // 2 × (B·T, H)
    act = mul(mul(gate, sigmoid(gate)), up); // silu(gate) ⊙ up
  }
  return linear(act, p, `${prefix}.c_proj`, cfg.bias); // (B·T, H) @ (H, C) → (B·T, C)
}

export function norm(x: Value, p: ParamLookup, prefix: string, cfg: GptConfig): Value {
  const o = gptOptions(cfg);
  if (o.norm === 'rmsnorm') return rmsNorm(x, p(`${prefix}.weight`), o.normEps);
  return layerNorm(x, p(`${prefix}.weight`), cfg.bias ? p(`${prefix}.bias`) : null, o.normEps);
}

/** Extra sub-layer after a block's attention (a memory read, ...); returns the new residual stream. */
export type BlockHook = (x: Value, layer: number) => Value;

/** Pre-norm residual block `h.{layer}`: x + attn(ln_1(x)), [hook], then + mlp(ln_2(x)). */
export function block(x: Value, p: ParamLookup, layer: number, cfg: GptConfig, ctx: ForwardContext, hook?: BlockHook, past: KeyValue | null = null): { x: Value; kv: KeyValue } {
  // A region per block: what activation checkpointing recomputes (engine/train/checkpointing.ts).
  return x.graph.region(blockRegion(layer), () => blockBody(x, p, layer, cfg, ctx, hook, past));
}

/** The region name of block `layer` in a GPT graph. */
export const blockRegion = (layer: number) => `block:h.${layer}`;

function blockBody(x: Value, p: ParamLookup, layer: number, cfg: GptConfig, ctx: ForwardContext, hook: BlockHook | undefined, past: KeyValue | null): { x: Value; kv: KeyValue } {
  const h = `h.${layer}`;
  const d = ctx.dropout;
  const attn = causalSelfAttention(norm(x, p, `${h}.ln_1`, cfg), p, `${h}.attn`, cfg, ctx, 4 * layer + 1, past);
  let out = add(x, dropout(attn.y, d, 4 * layer + 2));
  if (hook) out = hook(out, layer);
  out = add(out, dropout(mlp(norm(out, p, `${h}.ln_2`, cfg), p, `${h}.mlp`, cfg), d, 4 * layer + 3));
  return { x: out, kv: attn.kv };
}

// ---------------------------------------------------------------- GPT

/** Parameter list with GPT-2 init: N(0, 0.02), residual projections N(0, 0.02/√(2·n_layer)), norms 1/0. */
export function gptParams(cfg: GptConfig): ParamSpec[] {
  const o = gptOptions(cfg);
  const C = cfg.n_embd;
  const kvC = o.nKvHead * (C / cfg.n_head);
  const std = 0.02;
  const projStd = 0.02 / Math.sqrt(2 * cfg.n_layer);
  const specs: ParamSpec[] = [{ name: 'wte', shape: [cfg.vocab_size, C], init: { kind: 'normal', std } }];
  if (o.pos === 'learned') specs.push({ name: 'wpe', shape: [cfg.block_size, C], init: { kind: 'normal', std } });
  const normSpecs = (name: string) => {
    specs.push({ name: `${name}.weight`, shape: [C], init: { kind: 'ones' } });
    if (o.norm === 'layernorm' && cfg.bias) specs.push({ name: `${name}.bias`, shape: [C], init: { kind: 'zeros' } });
  };
  const linearSpecs = (name: string, nIn: number, nOut: number, s: number) => {
    specs.push({ name: `${name}.weight`, shape: [nIn, nOut], init: { kind: 'normal', std: s } });
    if (cfg.bias) specs.push({ name: `${name}.bias`, shape: [nOut], init: { kind: 'zeros' } });
  };
  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}`;
    normSpecs(`${h}.ln_1`);
    linearSpecs(`${h}.attn.c_attn`, C, C + 2 * kvC, std);
    linearSpecs(`${h}.attn.c_proj`, C, C, projStd);
    normSpecs(`${h}.ln_2`);
    linearSpecs(`${h}.mlp.c_fc`, C, o.mlp === 'swiglu' ? 2 * o.nInner : o.nInner, std);
    linearSpecs(`${h}.mlp.c_proj`, o.nInner, C, projStd);
  }
  normSpecs('ln_f');
  if (!o.tie) specs.push({ name: 'lm_head.weight', shape: [cfg.vocab_size, C], init: { kind: 'normal', std } });
  return specs;
}

/** Token embeddings of ids (B, T), plus the learned positions `positions` (T) unless RoPE; flattened to (B·T, C). */
export function embed(cfg: GptConfig, idx: Value, p: ParamLookup, positions: Value): Value {
  const tok = gather(p('wte'), idx); // (B, T, C)
  const x = gptOptions(cfg).pos === 'learned' ? add(tok, gather(p('wpe'), positions)) : tok; // + (T, C)
  return reshape(x, [-1, cfg.n_embd]); // (B, T, C) → (B·T, C)
}

/** Context of a graph built for batch B and sequence length S (positions 0..S-1, no cache). */
export function fixedContext(cfg: GptConfig, g: Graph, B: number, S: number, d: DropoutContext | null): ForwardContext {
  if (S > cfg.block_size) throw new EngineError('config', `gpt: sequence length ${S} exceeds block_size ${cfg.block_size}`);
  const o = gptOptions(cfg);
  const rope = o.pos === 'rope' ? ropeConsts(g, S, cfg.n_embd / cfg.n_head, o.ropeTheta) : null;
  return { bt: [B, S], mask: causalMask(g, S), rope, dropout: d };
}

/**
 * The transformer on embeddings (B·T, C): embedding dropout, n_layer blocks (with `hook` after
 * each attention; `past` caches before each layer's keys), final norm. Returns the hidden states
 * (B·T, C) and each layer's keys and values.
 */
export function transformer(cfg: GptConfig, x0: Value, p: ParamLookup, ctx: ForwardContext, hook?: BlockHook, past?: KeyValue[] | null): { hidden: Value; kv: KeyValue[] } {
  let x = dropout(x0, ctx.dropout, 0);
  const kv: KeyValue[] = [];
  for (let i = 0; i < cfg.n_layer; i++) {
    const b = block(x, p, i, cfg, ctx, hook, past ? past[i] : null);
    x = b.x;
    kv.push(b.kv);
  }
  return { hidden: norm(x, p, 'ln_f', cfg), kv };
}

/** LM head: (N, C) → (N, V), through wteᵀ (tied) or lm_head.weight (V, C) read in place by Gemm. */
export function lmHead(cfg: GptConfig, x: Value, p: ParamLookup): Value {
  if (gptOptions(cfg).tie) return matmul(x, transpose(p('wte'), [1, 0])); // (N, C) @ (C, V) → (N, V)
  return x.graph.op('Gemm', [x, p('lm_head.weight')], { transB: 1 })[0]; // (N, C) @ (V, C)ᵀ → (N, V)
}

/**
 * Final hidden states (B·T, C) for int64 token ids `idx` of shape (B, T); B and T must be known
 * numbers (the causal mask and the head reshapes are sized at build time). `d` turns dropout on
 * (training graphs).
 */
export function gptHidden(cfg: GptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null, hook?: BlockHook): Value {
  const [B, T] = knownBatchSeq(idx);
  const g = idx.graph;
  const ctx = fixedContext(cfg, g, B, T, d);
  const x = embed(cfg, idx, p, g.vector(Array.from({ length: T }, (_, i) => i))); // (B·T, C)
  return transformer(cfg, x, p, ctx, hook).hidden;
}

/** Logits (B·T, V) for token ids (B, T); see gptHidden. */
export function gptLogits(cfg: GptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null): Value {
  return lmHead(cfg, gptHidden(cfg, idx, p, d), p);
}

/** Mean next-token cross-entropy of logits (B·T, V) against int64 targets (B, T). */
export const lmLoss = (logits: Value, targets: Value) => softmaxCrossEntropy(logits, reshape(targets, [-1])); // (B·T, V), (B·T)

/** Mean next-token cross-entropy over all B·T positions; `targets` int64 (B, T). */
export function gptLoss(cfg: GptConfig, idx: Value, targets: Value, p: ParamLookup, train = false): Value {
  // Dropout only in training graphs, where buildTrainStep's `step` input seeds the masks.
  return lmLoss(gptLogits(cfg, idx, p, train ? trainingDropout(cfg, idx.graph) : null), targets);
}

/** Declares the `tokens` and `targets` inputs of a (batch, seq) training graph and returns the loss. */
export function gptTrainLoss(cfg: GptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    return gptLoss(cfg, tokens, targets, p, true);
  };
}

/**
 * Training FLOPs per token (nanoGPT estimate_mfu / PaLM appendix B): 6·N + 12·n_layer·T·C, where
 * N counts the matmul weights (blocks + tied head; LayerNorm, biases and wpe do no matmul work)
 * and 12·L·T·C is QKᵀ and AV forward (2·2·T·C per layer) times 3 for backward. Causal masking's
 * skipped half is counted, as both references do.
 */
export function gptTrainFlopsPerToken(cfg: GptConfig, seq: number): number {
  const C = cfg.n_embd;
  const matmulParams = cfg.n_layer * 12 * C * C + cfg.vocab_size * C;
  return 6 * matmulParams + 12 * cfg.n_layer * seq * C;
}

export function knownBatchSeq(idx: Value): [number, number] {
  const s = idx.shape;
  if (!s || s.length !== 2 || typeof s[0] !== 'number' || typeof s[1] !== 'number') {
    throw new Error(`gpt: input ${idx.name} must be int64 (B, T) with known B and T, got [${s?.join(', ')}]`);
  }
  return [s[0], s[1]];
}
