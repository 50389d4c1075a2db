// GPT-2-style decoder, top to bottom as in nanoGPT model.py: config → parameters → forward → loss.
// Parameter names follow Hugging Face GPT-2 (wte, wpe, h.N.attn.c_attn, ln_f) so weights map
// key by key; Linear weights are (in, out) like HF Conv1D. The LM head is tied to wte.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, gather, layerNorm, matmul, reshape, transpose } from '../graph/ops';
import { block, causalMask, type ParamLookup, type ParamSpec } from './blocks';
import { checkVariantFields, gptVariantFields, hasVariantOptions, trainingDropout, variantGptLogits, variantGptParams } from './variants';

export const GptConfigSchema = z
  .object({
    vocab_size: z.number().int().positive(),
    block_size: z.number().int().positive(),
    n_layer: z.number().int().positive(),
    n_head: z.number().int().positive(),
    n_embd: z.number().int().positive(),
    bias: z.boolean().default(true),
    // RoPE, RMSNorm, SwiGLU, n_kv_head, dropout, untied head (variants.ts); optional without
    // defaults, so an existing config parses to exactly what it parsed to before.
    ...gptVariantFields,
  })
  .superRefine((c, ctx) => {
    if (c.n_embd % c.n_head !== 0) {
      ctx.addIssue({ code: 'custom', path: ['n_head'], message: `must divide n_embd (${c.n_embd} % ${c.n_head} != 0)` });
    }
    checkVariantFields(c, ctx);
  });
export type GptConfig = z.infer<typeof GptConfigSchema>;

/** Parameter list with GPT-2 init: N(0, 0.02), residual projections N(0, 0.02/√(2·n_layer)), LN 1/0. */
export function gptParams(cfg: GptConfig): ParamSpec[] {
  if (hasVariantOptions(cfg)) return variantGptParams(cfg);
  const C = cfg.n_embd;
  const std = 0.02;
  const projStd = 0.02 / Math.sqrt(2 * cfg.n_layer);
  const specs: ParamSpec[] = [
    { name: 'wte', shape: [cfg.vocab_size, C], init: { kind: 'normal', std } },
    { name: 'wpe', shape: [cfg.block_size, C], init: { kind: 'normal', std } },
  ];
  const ln = (name: string) => {
    specs.push({ name: `${name}.weight`, shape: [C], init: { kind: 'ones' } });
    if (cfg.bias) specs.push({ name: `${name}.bias`, shape: [C], init: { kind: 'zeros' } });
  };
  const lin = (name: string, nIn: number, nOut: number, s: number) => {
    specs.push({ name: `${name}.weight`, shape: [nIn, nOut], init: { kind: 'normal', std: s } });
    if (cfg.bias) specs.push({ name: `${name}.bias`, shape: [nOut], init: { kind: 'zeros' } });
  };
  for (let i = 0; i < cfg.n_layer; i++) {
    const h = `h.${i}`;
    ln(`${h}.ln_1`);
    lin(`${h}.attn.c_attn`, C, 3 * C, std);
    lin(`${h}.attn.c_proj`, C, C, projStd);
    ln(`${h}.ln_2`);
    lin(`${h}.mlp.c_fc`, C, 4 * C, std);
    lin(`${h}.mlp.c_proj`, 4 * C, C, projStd);
  }
  ln('ln_f');
  return specs;
}

/**
 * Logits (B·T, V) for int64 token ids `idx` of shape (B, T); B and T must be known numbers
 * (the causal mask and the head reshapes are sized at build time).
 */
export function gptLogits(cfg: GptConfig, idx: Value, p: ParamLookup): Value {
  if (hasVariantOptions(cfg)) return variantGptLogits(cfg, idx, p);
  const g = idx.graph;
  const [B, T] = knownBatchSeq(idx);
  if (T > cfg.block_size) throw new Error(`gpt: sequence length ${T} exceeds block_size ${cfg.block_size}`);
  const C = cfg.n_embd;
  const tok = gather(p('wte'), idx); // (B, T, C)
  const pos = gather(p('wpe'), g.vector(Array.from({ length: T }, (_, i) => i))); // (T, C)
  let x = reshape(add(tok, pos), [B * T, C]); // (B, T, C) → (B·T, C)
  const mask = causalMask(g, T);
  const shape = { batch: B, seq: T, nHead: cfg.n_head, nEmbd: C };
  for (let i = 0; i < cfg.n_layer; i++) x = block(x, p, `h.${i}`, shape, mask, cfg.bias);
  x = layerNorm(x, p('ln_f.weight'), cfg.bias ? p('ln_f.bias') : null, 1e-5);
  return matmul(x, transpose(p('wte'), [1, 0])); // (B·T, C) @ (C, V) → (B·T, V)
}

/** Mean next-token cross-entropy over all B·T positions; `targets` int64 (B, T). */
export function gptLoss(cfg: GptConfig, idx: Value, targets: Value, p: ParamLookup, train = false): Value {
  // Dropout only in training graphs, where buildTrainStep's `step` input seeds the masks.
  const logits = train && hasVariantOptions(cfg) ? variantGptLogits(cfg, idx, p, trainingDropout(cfg, idx.graph)) : gptLogits(cfg, idx, p); // (B·T, V)
  const flat = reshape(targets, [-1]); // (B·T)
  return idx.graph.op('SoftmaxCrossEntropyLoss', [logits, flat], { reduction: 'mean' }, { outputs: 1 })[0];
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

function knownBatchSeq(idx: Value): [number, number] {
  const s = idx.shape;
  if (!s || s.length !== 2 || typeof s[0] !== 'number' || typeof s[1] !== 'number') {
    throw new Error(`gpt: input ${idx.name} must be int64 (B, T) with known B and T, got [${s?.join(', ')}]`);
  }
  return [s[0], s[1]];
}
