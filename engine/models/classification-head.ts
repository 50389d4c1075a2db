// GPT with a sequence-classification head trained jointly with the LM; reachable from a spec as
// `model.variant: { kind: domain-head, n_classes }` with `task: classification` (spec/training.ts),
// trained on labelled documents by engine/train/domain.ts.
//
// An extra head on the last hidden state: loss = lm_weight · LM + cls_weight · CE(class). Its
// weight is named after its Hugging Face analogue, GPT2ForSequenceClassification.score:
// score.weight (n_classes, C), torch layout.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, gather, mul, reshape, scalar, slice, softmaxCrossEntropy } from '../graph/ops';
import type { ParamLookup, ParamSpec } from './blocks';
import { GptConfigSchema, gptHidden, gptParams, knownBatchSeq, lmHead, lmLoss, trainingDropout, type DropoutContext, type GptConfig } from './gpt';
import { hfLinear } from './layers';

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

/**
 * The domain head as a pipeline spec names it (`model.variant`): the GPT config stays the model's
 * own `config`, this adds the head's classes and the weights of the joint loss.
 */
export const DomainHeadVariantSchema = z.strictObject({
  kind: z.literal('domain-head'),
  /** Classes of the head: the dataset's labels, sorted by name ("ham" < "spam" is 0, 1). */
  n_classes: z.number().int().min(2).max(65536),
  lm_weight: z.number().min(0).max(1e3).default(1),
  cls_weight: z.number().min(0).max(1e3).default(1),
});
export type DomainHeadVariant = z.infer<typeof DomainHeadVariantSchema>;

/** The DomainGptConfig of a GPT config and its domain-head variant. */
export function domainConfigOf(gpt: GptConfig, v: DomainHeadVariant): DomainGptConfig {
  return DomainGptConfigSchema.parse({ gpt, n_classes: v.n_classes, lm_weight: v.lm_weight, cls_weight: v.cls_weight });
}

export function domainGptParams(cfg: DomainGptConfig): ParamSpec[] {
  return [...gptParams(cfg.gpt), { name: 'score.weight', shape: [cfg.n_classes, cfg.gpt.n_embd], init: { kind: 'normal', std: 0.02 } }];
}

/**
 * LM logits (B·T, V) and class logits (B, n_classes). The class head reads the last position,
 * which in a causal model is the only one that has seen the whole row (HF
 * GPT2ForSequenceClassification pools the last non-padding token; our rows have no padding).
 */
export function domainGptLogits(cfg: DomainGptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null, pool: Value | null = null): { lm: Value; cls: Value } {
  const [B, T] = knownBatchSeq(idx);
  const C = cfg.gpt.n_embd;
  const hidden = gptHidden(cfg.gpt, idx, p, d); // (B·T, C)
  // `pool` (B) int64: the flat row b·T + (n_b - 1) of each row's last real token, for rows padded
  // on the right (a causal model's real tokens never see the padding after them).
  const last = pool ? gather(hidden, pool) : reshape(slice(reshape(hidden, [B, T, C]), [T - 1], [T], [1]), [B, C]); // (B, C)
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
    const lmPart = lmLoss(lm, targets);
    const clsPart = softmaxCrossEntropy(cls, labels);
    g.output(lmPart, 'lm_loss');
    g.output(clsPart, 'cls_loss');
    return add(mul(lmPart, scalar(lmPart, cfg.lm_weight)), mul(clsPart, scalar(clsPart, cfg.cls_weight)));
  };
}

/**
 * The pipeline's step on labelled documents padded on the right: inputs tokens, targets (B, T)
 * int64 (-100 at padding: no LM loss there), labels (B) and pool (B) int64 (the flat index of each
 * row's last real token); the joint loss, with `lm_loss` and `cls_loss` as extra outputs.
 */
export function domainGptPooledTrainLoss(cfg: DomainGptConfig, batch: number, seq: number) {
  return (g: Graph, p: ParamLookup): Value => {
    const tokens = g.input('tokens', 'int64', [batch, seq]);
    const targets = g.input('targets', 'int64', [batch, seq]);
    const labels = g.input('labels', 'int64', [batch]);
    const pool = g.input('pool', 'int64', [batch]);
    const { lm, cls } = domainGptLogits(cfg, tokens, p, trainingDropout(cfg.gpt, g), pool);
    const lmPart = softmaxCrossEntropy(lm, reshape(targets, [-1]), -100); // (B·T, V), (B·T)
    const clsPart = softmaxCrossEntropy(cls, labels);
    g.output(lmPart, 'lm_loss');
    g.output(clsPart, 'cls_loss');
    return add(mul(lmPart, scalar(lmPart, cfg.lm_weight)), mul(clsPart, scalar(clsPart, cfg.cls_weight)));
  };
}
