// GPT reading image feature vectors as a projected prefix of the tokens (LLaVA-style); reachable from a spec as
// `model.variant: { kind: image-prefix, image_dim, n_image_tokens }` with an image-captions corpus
// (spec/training.ts), trained on captions by engine/train/image-prefix.ts.
//
// The projector's weights are named as in Hugging Face LlavaForConditionalGeneration (torch
// layout): multi_modal_projector.linear_{1,2}.{weight,bias}.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, concat, gather, gelu, reshape, slice, softmaxCrossEntropy } from '../graph/ops';
import type { ParamLookup, ParamSpec } from './blocks';
import { fixedContext, GptConfigSchema, gptOptions, gptParams, knownBatchSeq, lmHead, lmLoss, trainingDropout, transformer, type DropoutContext, type GptConfig } from './gpt';
import { hfLinear } from './layers';

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

/** The image prefix as a pipeline spec names it (`model.variant`); the GPT config stays the model's own `config`. */
export const ImagePrefixVariantSchema = z.strictObject({
  kind: z.literal('image-prefix'),
  image_dim: z.number().int().min(1).max(65536),
  n_image_tokens: z.number().int().min(1).max(4096),
  projector_hidden: z.number().int().min(1).max(65536).optional(),
});
export type ImagePrefixVariant = z.infer<typeof ImagePrefixVariantSchema>;

/** The MultimodalGptConfig of a GPT config and its image-prefix variant. */
export function imagePrefixConfigOf(gpt: GptConfig, v: ImagePrefixVariant): MultimodalGptConfig {
  return MultimodalGptConfigSchema.parse({ gpt, image_dim: v.image_dim, n_image_tokens: v.n_image_tokens, ...(v.projector_hidden !== undefined ? { projector_hidden: v.projector_hidden } : {}) });
}

export function multimodalGptParams(cfg: MultimodalGptConfig): ParamSpec[] {
  const C = cfg.gpt.n_embd;
  const H = cfg.projector_hidden ?? C;
  const lin = (name: string, nOut: number, nIn: number): ParamSpec[] => [
    { name: `multi_modal_projector.${name}.weight`, shape: [nOut, nIn], init: { kind: 'normal', std: 0.02 } },
    { name: `multi_modal_projector.${name}.bias`, shape: [nOut], init: { kind: 'zeros' } },
  ];
  return [...gptParams(cfg.gpt), ...lin('linear_1', H, cfg.image_dim), ...lin('linear_2', C, H)];
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
  if (gptOptions(cfg.gpt).pos === 'learned') x = add(x, gather(p('wpe'), idx.graph.vector(Array.from({ length: S }, (_, i) => i)))); // + (S, C)
  const ctx = fixedContext(cfg.gpt, idx.graph, B, S, d);
  const hidden = transformer(cfg.gpt, reshape(x, [B * S, C]), p, ctx).hidden; // (B·S, C)
  const text = reshape(slice(reshape(hidden, [B, S, C]), [P], [S], [1]), [B * T, C]); // (B, T, C) → (B·T, C)
  return lmHead(cfg.gpt, text, p);
}

/** Inputs image_features float32 (B, P, D), tokens and targets int64 (B, T); next-token loss on the text. */
export function multimodalGptTrainLoss(cfg: MultimodalGptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const image = g.input('image_features', 'float32', [batch, cfg.n_image_tokens, cfg.image_dim]);
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    return lmLoss(multimodalGptLogits(cfg, image, tokens, p, trainingDropout(cfg.gpt, g)), targets);
  };
}

/**
 * The pipeline's caption loss: inputs image_features float32 (B, P, D), tokens and targets int64
 * (B, T), targets -100 on padding (no loss there); the mean (training) or the sum (evaluation)
 * next-token loss over the caption tokens.
 */
export function multimodalGptCaptionLoss(cfg: MultimodalGptConfig, batch: number, seq: number, reduction: 'mean' | 'sum' = 'mean', train = true) {
  return (g: Graph, p: ParamLookup): Value => {
    const image = g.input('image_features', 'float32', [batch, cfg.n_image_tokens, cfg.image_dim]);
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    const logits = multimodalGptLogits(cfg, image, tokens, p, train ? trainingDropout(cfg.gpt, g) : null); // (B·T, V)
    return softmaxCrossEntropy(logits, reshape(targets, [-1]), -100, reduction);
  };
}
