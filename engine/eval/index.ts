// Evaluation: LM perplexity, classifier metrics, speed and size, generation with a KV cache, and
// seq2seq (T5) perplexity and exact match.

export { lmEvalWindows, lmFeeds, lmPerplexity, withNllHead, type EvalWindows, type Feeds, type PerplexityResult } from './lm';
export { classificationMetrics, evaluateClassifier, type ClassificationMetrics, type ClassifierBatch } from './classify';
export { measureSpeed, modelFileBytes, percentile, type SpeedResult } from './speed';
export { Decoder, pickToken, windowKeep, type Generation, type SamplingOptions } from './generate';
export { T5Generator } from './generate-t5';
export { seq2seqExactMatch, seq2seqPerplexity, withSeq2seqNllHead, type ExactMatch, type Seq2seqPerplexity } from './seq2seq';
