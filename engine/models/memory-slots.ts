// GPT whose chosen layers read learned memory slots by cross-attention; reachable from a spec as `model.variant: { kind: memory, ... }`
// (spec/training.ts), trained by the LM shard step (engine/train/shard.ts).
//
// The slots are shared by every sequence (memory.slots (n_memory, C), no HF analogue: our
// encoder_hidden_states); the cross-attention weights are named as in HF GPT-2 with
// add_cross_attention: h.N.ln_cross_attn, h.N.crossattention.{q_attn,c_attn,c_proj}.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, matmul, mul, reshape, scalar, softmax, split, transpose } from '../graph/ops';
import { linear, type ParamLookup, type ParamSpec } from './blocks';
import { dropout, GptConfigSchema, gptHidden, gptOptions, gptParams, knownBatchSeq, lmHead, lmLoss, norm, trainingDropout, type BlockHook, type DropoutContext, type GptConfig } from './gpt';

export const MemoryGptConfigSchema = z
  .object({
    gpt: GptConfigSchema,
    /** Learned memory slots M, shared by every sequence. */
    n_memory: z.number().int().positive(),
    /** Layers (0-based) whose blocks read the memory by cross-attention after self-attention. */
    memory_layers: z.array(z.number().int().nonnegative()).min(1),
  })
  .superRefine((c, ctx) => {
    c.memory_layers.forEach((l, i) => {
      if (l >= c.gpt.n_layer) ctx.addIssue({ code: 'custom', path: ['memory_layers', i], message: `layer ${l} does not exist (n_layer ${c.gpt.n_layer})` });
    });
    if (new Set(c.memory_layers).size !== c.memory_layers.length) ctx.addIssue({ code: 'custom', path: ['memory_layers'], message: 'lists a layer twice' });
  });
export type MemoryGptConfig = z.infer<typeof MemoryGptConfigSchema>;

/**
 * The memory variant as a pipeline spec names it (`model.variant`): the GPT config stays the
 * model's own `config`, this adds the slots and the layers that read them.
 */
export const MemoryVariantSchema = z.strictObject({
  kind: z.literal('memory'),
  n_memory: z.number().int().positive().max(65536),
  memory_layers: z.array(z.number().int().nonnegative()).min(1),
});
export type MemoryVariant = z.infer<typeof MemoryVariantSchema>;

/** The MemoryGptConfig of a GPT config and its memory variant. */
export function memoryConfigOf(gpt: GptConfig, v: MemoryVariant): MemoryGptConfig {
  return MemoryGptConfigSchema.parse({ gpt, n_memory: v.n_memory, memory_layers: v.memory_layers });
}

export function memoryGptParams(cfg: MemoryGptConfig): ParamSpec[] {
  const g = cfg.gpt;
  const C = g.n_embd;
  const v = gptOptions(g);
  const projStd = 0.02 / Math.sqrt(2 * g.n_layer);
  const specs = [...gptParams(g), { name: 'memory.slots', shape: [cfg.n_memory, C], init: { kind: 'normal', std: 0.02 } } as ParamSpec];
  const lin = (name: string, nIn: number, nOut: number, std: number) => {
    specs.push({ name: `${name}.weight`, shape: [nIn, nOut], init: { kind: 'normal', std } });
    if (g.bias) specs.push({ name: `${name}.bias`, shape: [nOut], init: { kind: 'zeros' } });
  };
  for (const l of [...cfg.memory_layers].sort((a, b) => a - b)) {
    const h = `h.${l}`;
    specs.push({ name: `${h}.ln_cross_attn.weight`, shape: [C], init: { kind: 'ones' } });
    if (v.norm === 'layernorm' && g.bias) specs.push({ name: `${h}.ln_cross_attn.bias`, shape: [C], init: { kind: 'zeros' } });
    lin(`${h}.crossattention.q_attn`, C, C, 0.02);
    lin(`${h}.crossattention.c_attn`, C, 2 * C, 0.02);
    lin(`${h}.crossattention.c_proj`, C, C, projStd);
  }
  return specs;
}

/**
 * Cross-attention from the residual stream (B·T, C) to the memory slots (M, C): keys and values
 * are computed once from the slots and broadcast over the batch; no mask (every slot is visible).
 */
function memoryRead(x: Value, slots: Value, p: ParamLookup, prefix: string, cfg: GptConfig, B: number, T: number, M: number): Value {
  const [C, nh] = [cfg.n_embd, cfg.n_head];
  const hs = C / nh;
  const q = transpose(reshape(linear(x, p, `${prefix}.q_attn`, cfg.bias), [B, T, nh, hs]), [0, 2, 1, 3]); // (B·T, C) → (B, nh, T, hs)
  const [k0, v0] = split(linear(slots, p, `${prefix}.c_attn`, cfg.bias), [C, C], 1); // (M, C) @ (C, 2C) → 2 × (M, C)
  const kT = transpose(reshape(k0, [M, nh, hs]), [1, 2, 0]); // (nh, hs, M)
  const val = transpose(reshape(v0, [M, nh, hs]), [1, 0, 2]); // (nh, M, hs)
  const scores = matmul(mul(q, scalar(q, 1 / Math.sqrt(hs))), kT); // (B, nh, T, hs) @ (nh, hs, M) → (B, nh, T, M)
  const y = matmul(softmax(scores, -1), val); // (B, nh, T, M) @ (nh, M, hs) → (B, nh, T, hs)
  const merged = reshape(transpose(y, [0, 2, 1, 3]), [B * T, C]); // (B, T, nh, hs) → (B·T, C)
  return linear(merged, p, `${prefix}.c_proj`, cfg.bias);
}

/**
 * The same read for rows of any count (the inference export's symbolic batch·seq): no row needs
 * another, so the heads attend over (N, M) without splitting N into batch and sequence. Not used
 * in training, whose graph keeps memoryRead's arithmetic (resumed runs stay bit-identical).
 */
function memoryReadRows(x: Value, slots: Value, p: ParamLookup, prefix: string, cfg: GptConfig, M: number): Value {
  const [C, nh] = [cfg.n_embd, cfg.n_head];
  const hs = C / nh;
  const q = transpose(reshape(linear(x, p, `${prefix}.q_attn`, cfg.bias), [-1, nh, hs]), [1, 0, 2]); // (N, C) → (nh, N, hs)
  const [k0, v0] = split(linear(slots, p, `${prefix}.c_attn`, cfg.bias), [C, C], 1); // (M, C) @ (C, 2C) → 2 × (M, C)
  const kT = transpose(reshape(k0, [M, nh, hs]), [1, 2, 0]); // (nh, hs, M)
  const val = transpose(reshape(v0, [M, nh, hs]), [1, 0, 2]); // (nh, M, hs)
  const scores = matmul(mul(q, scalar(q, 1 / Math.sqrt(hs))), kT); // (nh, N, hs) @ (nh, hs, M) → (nh, N, M)
  const y = matmul(softmax(scores, -1), val); // (nh, N, M) @ (nh, M, hs) → (nh, N, hs)
  return linear(reshape(transpose(y, [1, 0, 2]), [-1, C]), p, `${prefix}.c_proj`, cfg.bias); // (N, nh, hs) → (N, C)
}

/** The block hook of the memory layers: x + read(ln_cross_attn(x), memory) after self-attention. */
function memoryHook(cfg: MemoryGptConfig, p: ParamLookup, read: (x: Value, slots: Value, prefix: string) => Value, d: DropoutContext | null): BlockHook {
  const layers = new Set(cfg.memory_layers);
  const slots = p('memory.slots'); // (M, C)
  return (h: Value, layer: number): Value => {
    if (!layers.has(layer)) return h;
    const r = read(norm(h, p, `h.${layer}.ln_cross_attn`, cfg.gpt), slots, `h.${layer}.crossattention`);
    // Salt 4·layer + 4: the GPT's own sites are 0 and 4·i + 1..3, so masks never repeat across sites.
    return add(h, dropout(r, d, 4 * layer + 4));
  };
}

/** Logits (B·T, V); blocks in `memory_layers` add x + read(ln_cross_attn(x), memory) after their self-attention. */
export function memoryGptLogits(cfg: MemoryGptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null): Value {
  const [B, T] = knownBatchSeq(idx);
  const hook = memoryHook(cfg, p, (x, slots, prefix) => memoryRead(x, slots, p, prefix, cfg.gpt, B, T, cfg.n_memory), d);
  return lmHead(cfg.gpt, gptHidden(cfg.gpt, idx, p, d, hook), p);
}

/** The memory layers' hook for the inference export (engine/models/export.ts): any number of rows, no dropout. */
export function memoryExportHook(cfg: MemoryGptConfig, p: ParamLookup): BlockHook {
  return memoryHook(cfg, p, (x, slots, prefix) => memoryReadRows(x, slots, p, prefix, cfg.gpt, cfg.n_memory), null);
}

/** Inputs tokens and targets int64 (B, T); next-token loss. */
export function memoryGptTrainLoss(cfg: MemoryGptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    return lmLoss(memoryGptLogits(cfg, tokens, p, trainingDropout(cfg.gpt, g)), targets);
  };
}
