// The seed's advanced models, each a GPT (any variant options, variants.ts) plus one idea:
//   domain      an extra classification head on the last hidden state, trained jointly with the
//               LM loss: loss = lm_weight · LM + cls_weight · CE(class)
//   multimodal  image feature vectors through a learned projection, prefixed to the tokens
//   memory      learned memory slots read by cross-attention in chosen layers
// Each has a zod config at the top (the GPT config nested under `gpt`), a parameter list, a
// forward, and a train-loss builder for buildTrainStep. Added weights use the names of their
// Hugging Face analogue:
//   score.weight (n_classes, C)                           GPT2ForSequenceClassification.score
//   multi_modal_projector.linear_{1,2}.{weight,bias}       LlavaForConditionalGeneration (torch layout)
//   h.N.ln_cross_attn, h.N.crossattention.{q_attn,c_attn,c_proj}  GPT2 with add_cross_attention
//   memory.slots (n_memory, C)                             no HF analogue (our encoder_hidden_states)

import { z } from 'zod';
import { seededDropout } from '../autodiff/dropout';
import type { Graph, Value } from '../graph/ir';
import { add, concat, gather, gelu, matmul, mul, reshape, scalar, slice, softmax, softmaxCrossEntropy, split, transpose } from '../graph/ops';
import { linear, type ParamLookup, type ParamSpec } from './blocks';
import { GptConfigSchema, type GptConfig } from './gpt';
import { hfLinear } from './layers';
import { embedTokens, gptStack, knownBatchSeq, lmHead, resolveVariant, trainingDropout, variantGptParams, variantNorm, type DropoutContext } from './variants';

const lmLossOf = (logits: Value, targets: Value) => softmaxCrossEntropy(logits, reshape(targets, [-1])); // (B·T, V), (B·T)

// ---------------------------------------------------------------- domain-specific model

export const DomainGptConfigSchema = z
  .object({
    gpt: GptConfigSchema,
    n_classes: z.number().int().min(2),
    /** Weight of the next-token loss in the joint loss. */
    lm_weight: z.number().min(0).default(1),
    /** Weight of the classification loss in the joint loss. */
    cls_weight: z.number().min(0).default(1),
  })
  .superRefine((c, ctx) => {
    if (c.lm_weight === 0 && c.cls_weight === 0) ctx.addIssue({ code: 'custom', path: ['cls_weight'], message: 'lm_weight and cls_weight are both 0: nothing to train' });
  });
export type DomainGptConfig = z.infer<typeof DomainGptConfigSchema>;

export function domainGptParams(cfg: DomainGptConfig): ParamSpec[] {
  return [...variantGptParams(cfg.gpt), { name: 'score.weight', shape: [cfg.n_classes, cfg.gpt.n_embd], init: { kind: 'normal', std: 0.02 } }];
}

/**
 * LM logits (B·T, V) and class logits (B, n_classes). The class head reads the last position,
 * which in a causal model is the only one that has seen the whole row (HF
 * GPT2ForSequenceClassification pools the last non-padding token; our rows have no padding).
 */
export function domainGptLogits(cfg: DomainGptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null): { lm: Value; cls: Value } {
  const [B, T] = knownBatchSeq(idx);
  const C = cfg.gpt.n_embd;
  const x = reshape(embedTokens(cfg.gpt, idx, p), [B * T, C]); // (B·T, C)
  const hidden = gptStack(cfg.gpt, x, p, { batch: B, seq: T }, d); // (B·T, C)
  const last = reshape(slice(reshape(hidden, [B, T, C]), [T - 1], [T], [1]), [B, C]); // (B, 1, C) → (B, C)
  return { lm: lmHead(cfg.gpt, hidden, p), cls: hfLinear(last, p, 'score', false) }; // (B, C) @ (n_classes, C)ᵀ → (B, n_classes)
}

/**
 * Inputs tokens, targets (B, T) and labels (B) int64; returns the joint loss and also outputs
 * `lm_loss` and `cls_loss` (StepRunner reports them in `scalars`).
 */
export function domainGptTrainLoss(cfg: DomainGptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    const labels = g.input('labels', 'int64', [batch]);
    const { lm, cls } = domainGptLogits(cfg, tokens, p, trainingDropout(cfg.gpt, g));
    const lmLoss = lmLossOf(lm, targets);
    const clsLoss = softmaxCrossEntropy(cls, labels);
    g.output(lmLoss, 'lm_loss');
    g.output(clsLoss, 'cls_loss');
    return add(mul(lmLoss, scalar(lmLoss, cfg.lm_weight)), mul(clsLoss, scalar(clsLoss, cfg.cls_weight)));
  };
}

// ---------------------------------------------------------------- multimodal model

export const MultimodalGptConfigSchema = z
  .object({
    gpt: GptConfigSchema,
    /** Width D of one image feature vector (e.g. a vision encoder's patch embedding). */
    image_dim: z.number().int().positive(),
    /** Feature vectors per image, P: the prefix length. */
    n_image_tokens: z.number().int().positive(),
    /** Projector hidden width (LLaVA uses the LM width); default n_embd. */
    projector_hidden: z.number().int().positive().optional(),
  })
  .superRefine((c, ctx) => {
    if (c.n_image_tokens >= c.gpt.block_size) {
      ctx.addIssue({ code: 'custom', path: ['n_image_tokens'], message: `must leave room for text in block_size (${c.n_image_tokens} >= ${c.gpt.block_size})` });
    }
  });
export type MultimodalGptConfig = z.infer<typeof MultimodalGptConfigSchema>;

export function multimodalGptParams(cfg: MultimodalGptConfig): ParamSpec[] {
  const C = cfg.gpt.n_embd;
  const H = cfg.projector_hidden ?? C;
  const lin = (name: string, nOut: number, nIn: number): ParamSpec[] => [
    { name: `multi_modal_projector.${name}.weight`, shape: [nOut, nIn], init: { kind: 'normal', std: 0.02 } },
    { name: `multi_modal_projector.${name}.bias`, shape: [nOut], init: { kind: 'zeros' } },
  ];
  return [...variantGptParams(cfg.gpt), ...lin('linear_1', H, cfg.image_dim), ...lin('linear_2', C, H)];
}

/**
 * Text logits (B·T, V) for image features (B, P, D) float32 and token ids (B, T): the projected
 * image vectors take positions 0..P-1, the text P..P+T-1, all under one causal mask, so every
 * text token sees the whole image. Only text positions get logits.
 */
export function multimodalGptLogits(cfg: MultimodalGptConfig, image: Value, idx: Value, p: ParamLookup, d: DropoutContext | null = null): Value {
  const [B, T] = knownBatchSeq(idx);
  const [P, D, C] = [cfg.n_image_tokens, cfg.image_dim, cfg.gpt.n_embd];
  const S = P + T;
  if (S > cfg.gpt.block_size) throw new Error(`multimodal: ${P} image tokens + ${T} text tokens exceed block_size ${cfg.gpt.block_size}`);
  const shape = image.shape;
  if (!shape || shape.length !== 3 || shape[0] !== B || shape[1] !== P || shape[2] !== D) {
    throw new Error(`multimodal: input ${image.name} must be float32 (${B}, ${P}, ${D}), got [${shape?.join(', ')}]`);
  }
  const h = gelu(hfLinear(reshape(image, [B * P, D]), p, 'multi_modal_projector.linear_1')); // (B·P, D) @ (H, D)ᵀ → (B·P, H)
  const img = reshape(hfLinear(h, p, 'multi_modal_projector.linear_2'), [B, P, C]); // (B·P, H) @ (C, H)ᵀ → (B, P, C)
  let x = concat([img, gather(p('wte'), idx)], 1); // (B, P + T, C)
  if (resolveVariant(cfg.gpt).pos === 'learned') x = add(x, gather(p('wpe'), idx.graph.vector(Array.from({ length: S }, (_, i) => i)))); // + (S, C)
  const hidden = gptStack(cfg.gpt, reshape(x, [B * S, C]), p, { batch: B, seq: S }, d); // (B·S, C)
  const text = reshape(slice(reshape(hidden, [B, S, C]), [P], [S], [1]), [B * T, C]); // (B, T, C) → (B·T, C)
  return lmHead(cfg.gpt, text, p);
}

/** Inputs image_features float32 (B, P, D), tokens and targets int64 (B, T); next-token loss on the text. */
export function multimodalGptTrainLoss(cfg: MultimodalGptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const image = g.input('image_features', 'float32', [batch, cfg.n_image_tokens, cfg.image_dim]);
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    return lmLossOf(multimodalGptLogits(cfg, image, tokens, p, trainingDropout(cfg.gpt, g)), targets);
  };
}

// ---------------------------------------------------------------- memory-augmented model

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

export function memoryGptParams(cfg: MemoryGptConfig): ParamSpec[] {
  const g = cfg.gpt;
  const C = g.n_embd;
  const v = resolveVariant(g);
  const projStd = 0.02 / Math.sqrt(2 * g.n_layer);
  const specs = [...variantGptParams(g), { name: 'memory.slots', shape: [cfg.n_memory, C], init: { kind: 'normal', std: 0.02 } } as ParamSpec];
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

/** Logits (B·T, V); blocks in `memory_layers` add x + read(ln_cross_attn(x), memory) after their self-attention. */
export function memoryGptLogits(cfg: MemoryGptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null): Value {
  const [B, T] = knownBatchSeq(idx);
  const C = cfg.gpt.n_embd;
  const layers = new Set(cfg.memory_layers);
  const slots = p('memory.slots'); // (M, C)
  const x = reshape(embedTokens(cfg.gpt, idx, p), [B * T, C]); // (B·T, C)
  const hook = (h: Value, layer: number): Value => {
    if (!layers.has(layer)) return h;
    const read = memoryRead(variantNorm(h, p, `h.${layer}.ln_cross_attn`, cfg.gpt), slots, p, `h.${layer}.crossattention`, cfg.gpt, B, T, cfg.n_memory);
    // Salt 4·layer + 4: gptStack uses 0 and 4·i + 1..3, so masks never repeat across sites.
    return add(h, d ? seededDropout(read, d.ratio, d.seed, d.step, 4 * layer + 4) : read);
  };
  return lmHead(cfg.gpt, gptStack(cfg.gpt, x, p, { batch: B, seq: T }, d, hook), p);
}

/** Inputs tokens and targets int64 (B, T); next-token loss. */
export function memoryGptTrainLoss(cfg: MemoryGptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    return lmLossOf(memoryGptLogits(cfg, tokens, p, trainingDropout(cfg.gpt, g)), targets);
  };
}
