// The publish gate for classifiers: a quantized sequence classifier is re-loaded from its bytes (a
// fresh ORT session on exactly those bytes), scored on the same validation documents as fp32, and
// refused when its accuracy falls by more than `maxAccuracyDrop` (absolute: 0.01 is one point).
// The perplexity gate (validate.ts) is for language models; this one is for `classification` runs.

import { EngineError } from '../errors';
import { classificationMetrics, type ClassificationMetrics } from '../eval/classify';
import type { Feeds } from '../eval/lm';
import { createSession, type SessionConfig } from '../runtime';
import './rules';

export class AccuracyRejectedError extends EngineError {
  /** Why, without the method: what a report or a rejected model's manifest records. */
  readonly reason: string;
  constructor(
    readonly method: string,
    readonly fp32Accuracy: number,
    readonly quantAccuracy: number,
    readonly drop: number,
    readonly bound: number,
    readonly examples: number,
  ) {
    const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
    const reason = `validation accuracy ${pct(quantAccuracy)} vs fp32 ${pct(fp32Accuracy)} over ${examples} documents is ${(100 * drop).toFixed(2)} points lower, above the bound maxAccuracyDrop = ${(100 * bound).toFixed(2)} points`;
    super('quant-rejected', `${method} model rejected: ${reason}`);
    this.reason = reason;
  }
}

export interface ClassifierBatchFeeds {
  feeds: Feeds;
  labels: number[];
}

export interface AccuracyGateResult {
  fp32: ClassificationMetrics;
  quant: ClassificationMetrics;
  /** fp32 accuracy − quantized accuracy (negative when the quantized model scores higher). */
  drop: number;
  bound: number;
  /** Documents whose predicted class differs between the two models. */
  flips: number;
}

async function predict(model: Uint8Array, batches: ClassifierBatchFeeds[], numLabels: number, cfg: SessionConfig): Promise<number[]> {
  const session = await createSession(model, cfg);
  try {
    const out: number[] = [];
    for (const b of batches) {
      const r = await session.run(b.feeds, ['logits']);
      const data = r.logits.data as Float32Array;
      if (data.length !== b.labels.length * numLabels) throw new EngineError('config', `classifier gate: logits of ${data.length} values for ${b.labels.length} documents × ${numLabels} labels`);
      for (let i = 0; i < b.labels.length; i++) {
        const row = data.subarray(i * numLabels, (i + 1) * numLabels);
        if (!row.every(Number.isFinite)) throw new EngineError('non-finite', `classifier gate: non-finite logits for document ${out.length}`);
        let best = 0;
        for (let c = 1; c < numLabels; c++) if (row[c] > row[best]) best = c;
        out.push(best);
      }
    }
    return out;
  } finally {
    await session.release();
  }
}

/**
 * Scores the fp32 and the quantized classifier (ONNX bytes with a `logits` output, (B, num_labels))
 * on the same documents; throws AccuracyRejectedError naming both figures and the bound when the
 * accuracy drop is above `maxAccuracyDrop`.
 * @example await gateClassifier(fp32Bytes, int8Bytes, batches, { method: 'int8-dynamic', numLabels: 2, maxAccuracyDrop: 0.01 })
 */
export async function gateClassifier(
  fp32: Uint8Array,
  quant: Uint8Array,
  batches: ClassifierBatchFeeds[],
  opts: { method: string; numLabels: number; maxAccuracyDrop: number; sessionConfig?: SessionConfig },
): Promise<AccuracyGateResult> {
  if (!(opts.maxAccuracyDrop >= 0 && opts.maxAccuracyDrop <= 1)) throw new EngineError('config', `maxAccuracyDrop: ${opts.maxAccuracyDrop} is not a fraction between 0 and 1 (0.01 is one point)`);
  const labels = batches.flatMap((b) => b.labels);
  if (labels.length === 0) throw new EngineError('config', `validate ${opts.method}: no validation documents`);
  const [p32, pq] = [await predict(fp32, batches, opts.numLabels, opts.sessionConfig ?? {}), await predict(quant, batches, opts.numLabels, opts.sessionConfig ?? {})];
  const m32 = classificationMetrics(p32, labels, opts.numLabels);
  const mq = classificationMetrics(pq, labels, opts.numLabels);
  const drop = m32.accuracy - mq.accuracy;
  if (drop > opts.maxAccuracyDrop) throw new AccuracyRejectedError(opts.method, m32.accuracy, mq.accuracy, drop, opts.maxAccuracyDrop, labels.length);
  return { fp32: m32, quant: mq, drop, bound: opts.maxAccuracyDrop, flips: p32.filter((p, i) => p !== pq[i]).length };
}
