// How an imported model is fed the language-model sampler's (B, T) token batches: its token-id
// input, an attention mask of ones when it has one, and labels per its objective.

import { z } from 'zod';
import { mlmMask } from '../data/masking';
import type { TensorData } from '../graph/ir';

/**
 * The loss is cross-entropy on the model's `logits` output: `causal` predicts the next token,
 * `mlm` masks a share of the tokens (80/10/10) with `maskId` and predicts them (BERT-style models).
 */
export const ImportedObjectiveSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('causal') }),
  z.strictObject({ kind: z.literal('mlm'), maskId: z.number().int().nonnegative(), probability: z.number().gt(0).lt(1).default(0.15) }),
]);
export type ImportedObjective = z.output<typeof ImportedObjectiveSchema>;

/** An imported model as a fine-tune sees it. */
export interface ImportedModel {
  /** Names the model in errors (its store key). */
  name: string;
  objective: ImportedObjective;
  /** Name of the token-id input. */
  inputName: string;
}

export interface ImportedFeeder {
  objective: ImportedObjective;
  inputName: string;
  hasAttentionMask: boolean;
  vocabSize: number;
  seed: number;
}

/** Model inputs and labels for one batch; MLM masks are a pure function of (seed, stream, step). */
export function importedFeeds(f: ImportedFeeder, tokens: BigInt64Array, targets: BigInt64Array, dims: number[], stream: number, step: number): Record<string, TensorData> {
  const out: Record<string, TensorData> = {};
  if (f.objective.kind === 'mlm') {
    const m = mlmMask(tokens, { seed: f.seed, shard: stream, step }, { maskId: f.objective.maskId, vocabSize: f.vocabSize, probability: f.objective.probability });
    out[f.inputName] = { dtype: 'int64', dims, data: m.inputIds };
    out.labels = { dtype: 'int64', dims, data: m.labels };
  } else {
    out[f.inputName] = { dtype: 'int64', dims, data: tokens };
    out.labels = { dtype: 'int64', dims, data: targets };
  }
  if (f.hasAttentionMask) out.attention_mask = { dtype: 'int64', dims, data: new BigInt64Array(tokens.length).fill(1n) };
  return out;
}
