// Classifier metrics: accuracy, macro F1 and the confusion matrix, from predicted and true class
// ids, plus a runner that takes the argmax of a classifier graph's logits batch by batch.

import type * as ort from 'onnxruntime-node';
import type { Feeds } from './lm';

export interface ClassificationMetrics {
  accuracy: number;
  /** Unweighted mean of per-class F1 over classes that occur in labels or predictions. */
  macroF1: number;
  /** confusion[true][predicted] counts. */
  confusion: number[][];
  perClass: { precision: number; recall: number; f1: number; support: number }[];
  /** Accuracy of always predicting the most frequent true class: the bar a classifier must beat. */
  majorityBaseline: number;
  count: number;
}

/**
 * Mean cross-entropy and the metrics of per-example logit rows (each of `numClasses` values, the
 * argmax the prediction) against their true classes: what a classifier's evaluation reports.
 */
export function scoreLogitRows(rows: ArrayLike<number>[], labels: number[], numClasses: number): { loss: number } & ClassificationMetrics {
  const predicted: number[] = [];
  let lossSum = 0;
  rows.forEach((row, i) => {
    let best = 0;
    for (let c = 1; c < numClasses; c++) if (row[c] > row[best]) best = c;
    let z = 0;
    for (let c = 0; c < numClasses; c++) z += Math.exp(row[c] - row[best]);
    lossSum += Math.log(z) + row[best] - row[labels[i]];
    predicted.push(best);
  });
  return { loss: lossSum / labels.length, ...classificationMetrics(predicted, labels, numClasses) };
}

export function classificationMetrics(predicted: ArrayLike<number>, labels: ArrayLike<number>, numClasses: number): ClassificationMetrics {
  if (predicted.length !== labels.length) throw new Error(`classificationMetrics: ${predicted.length} predictions for ${labels.length} labels`);
  if (labels.length === 0) throw new Error('classificationMetrics: no examples');
  const confusion = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  let correct = 0;
  for (let i = 0; i < labels.length; i++) {
    const [t, p] = [labels[i], predicted[i]];
    if (t < 0 || t >= numClasses || p < 0 || p >= numClasses) throw new Error(`classificationMetrics: example ${i} has class ${t} / prediction ${p} outside 0..${numClasses - 1}`);
    confusion[t][p]++;
    if (t === p) correct++;
  }
  const perClass = confusion.map((row, c) => {
    const tp = row[c];
    const support = row.reduce((a, b) => a + b, 0);
    const predictedC = confusion.reduce((a, r) => a + r[c], 0);
    const precision = predictedC > 0 ? tp / predictedC : 0;
    const recall = support > 0 ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    return { precision, recall, f1, support, present: support > 0 || predictedC > 0 };
  });
  const present = perClass.filter((c) => c.present);
  const majority = Math.max(...perClass.map((c) => c.support));
  return {
    accuracy: correct / labels.length,
    macroF1: present.reduce((a, c) => a + c.f1, 0) / present.length,
    confusion,
    perClass: perClass.map(({ precision, recall, f1, support }) => ({ precision, recall, f1, support })),
    majorityBaseline: majority / labels.length,
    count: labels.length,
  };
}

export interface ClassifierBatch {
  feeds: Feeds;
  labels: ArrayLike<number>;
}

/** Runs `session` on each batch, argmaxes `logitsName` (B, numClasses) and scores the predictions. */
export async function evaluateClassifier(session: ort.InferenceSession, batches: Iterable<ClassifierBatch>, numClasses: number, logitsName = 'logits'): Promise<ClassificationMetrics> {
  const predicted: number[] = [];
  const labels: number[] = [];
  for (const b of batches) {
    const r = await session.run(b.feeds, [logitsName]);
    const logits = r[logitsName];
    const data = logits.data as Float32Array;
    const C = logits.dims[logits.dims.length - 1];
    if (C !== numClasses) throw new Error(`evaluateClassifier: ${logitsName} has ${C} classes, expected ${numClasses}`);
    const rows = data.length / C;
    if (rows !== b.labels.length) throw new Error(`evaluateClassifier: ${rows} logit rows for ${b.labels.length} labels`);
    for (let i = 0; i < rows; i++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (data[i * C + c] > data[i * C + best]) best = c;
      predicted.push(best);
      labels.push(b.labels[i]);
    }
  }
  return classificationMetrics(predicted, labels, numClasses);
}
