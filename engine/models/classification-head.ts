// GPT with a sequence-classification head trained jointly with the LM; used by tests; a pipeline spec naming it
// (`model.variant: { kind: domain-head }`) is refused with the reason (spec/training.ts VARIANT_REFUSALS).
//
// An extra head on the last hidden state: loss = lm_weight · LM + cls_weight · CE(class). Its
// weight is named after its Hugging Face analogue, GPT2ForSequenceClassification.score:
// score.weight (n_classes, C), torch layout.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { add, mul, reshape, scalar, slice, softmaxCrossEntropy } from '../graph/ops';
import type { ParamLookup, ParamSpec } from './blocks';
import { GptConfigSchema, gptHidden, gptParams, knownBatchSeq, lmHead, lmLoss, trainingDropout, type DropoutContext } from './gpt';
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

export function domainGptParams(cfg: DomainGptConfig): ParamSpec[] {
  return [...gptParams(cfg.gpt), { name: 'score.weight', shape: [cfg.n_classes, cfg.gpt.n_embd], init: { kind: 'normal', std: 0.02 } }];
}

/**
 * LM logits (B·T, V) and class logits (B, n_classes). The class head reads the last position,
 * which in a causal model is the only one that has seen the whole row (HF
 * GPT2ForSequenceClassification pools the last non-padding token; our rows have no padding).
 */
export function domainGptLogits(cfg: DomainGptConfig, idx: Value, p: ParamLookup, d: DropoutContext | null = null): { lm: Value; cls: Value } {
  const [B, T] = knownBatchSeq(idx);
  const C = cfg.gpt.n_embd;
  const hidden = gptHidden(cfg.gpt, idx, p, d); // (B·T, C)
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
    const lmPart = lmLoss(lm, targets);
    const clsPart = softmaxCrossEntropy(cls, labels);
    g.output(lmPart, 'lm_loss');
    g.output(clsPart, 'cls_loss');
    return add(mul(lmPart, scalar(lmPart, cfg.lm_weight)), mul(clsPart, scalar(clsPart, cfg.cls_weight)));
  };
}
