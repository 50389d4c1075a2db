// Evaluation: LM perplexity, classifier metrics, speed and size, and generation with a KV cache.

export { lmEvalWindows, lmFeeds, lmPerplexity, withNllHead, type EvalWindows, type Feeds, type PerplexityResult } from './lm';
export { classificationMetrics, evaluateClassifier, type ClassificationMetrics, type ClassifierBatch } from './classify';
export { measureSpeed, modelFileBytes, percentile, type SpeedResult } from './speed';
export { Decoder, pickToken, windowKeep, type Generation, type SamplingOptions } from './generate';
export { T5Generator } from './generate-t5';
