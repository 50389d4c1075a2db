// The publish gate: a quantized model is re-loaded from its bytes (ONNX parse into the IR, and a
// fresh ORT session on exactly those bytes), run, and scored; it is refused when validation
// perplexity rises by more than the configured bound.

import type { LmBatch } from '../data/sampler';
import { EngineError } from '../errors';
import { loadModel } from '../graph/onnx';
import { createSession, type SessionConfig } from '../runtime';
import { lmFeeds, lmPerplexity } from '../eval/lm';
import './rules';

export class QuantRejectedError extends EngineError {
  /** Why, without the method: what a report or a rejected model's manifest records. */
  readonly reason: string;
  constructor(
    readonly method: string,
    readonly fp32Ppl: number,
    readonly quantPpl: number,
    readonly increase: number,
    readonly bound: number,
  ) {
    const reason =
      `validation perplexity ${quantPpl.toFixed(4)} vs fp32 ${fp32Ppl.toFixed(4)} ` +
      `is ${(increase * 100).toFixed(2)}% higher, above the bound maxPplIncrease = ${(bound * 100).toFixed(2)}%`;
    super('quant-rejected', `${method} model rejected: ${reason}`);
    this.reason = reason;
  }
}

export interface ValidationResult {
  ppl: number;
  fp32Ppl: number;
  /** (ppl − fp32) / fp32. */
  increase: number;
  bound: number;
  tokens: number;
}

export interface ValidateOptions {
  method: string;
  maxPplIncrease: number;
  sessionConfig?: SessionConfig;
  /** In-memory external-data side files, when the model bytes reference one. */
  external?: Record<string, Uint8Array>;
  /** Called after each scored batch (an activity heartbeats: a whole validation split can take a while). */
  onBatch?: (done: number, of: number) => void;
}

/**
 * Re-loads `model` (bytes or file path), checks it runs in ORT and gives finite logits, and
 * scores it on `batches` (an array or lmEvalWindows: iterated twice, for the first batch and the score). Throws QuantRejectedError naming the
 * bound and the figure when the rise exceeds `maxPplIncrease`.
 */
export async function validateQuantized(model: Uint8Array | string, fp32Ppl: number, batches: Iterable<LmBatch>, opts: ValidateOptions): Promise<ValidationResult> {
  const first = batches[Symbol.iterator]().next();
  if (first.done) throw new Error(`validate ${opts.method}: no validation batches`);
  const b0 = first.value;
  const graph = loadModel(model, { external: opts.external });
  const session = await createSession(model, opts.sessionConfig);
  try {
    const r = await session.run(lmFeeds(graph, b0.tokens, b0.dims));
    const logits = r.logits;
    if (!logits) throw new Error(`validate ${opts.method}: the re-loaded model has no logits output`);
    const data = logits.data as Float32Array;
    const [B, T] = b0.dims;
    if (logits.dims[0] !== B || logits.dims[1] !== T) throw new Error(`validate ${opts.method}: logits have dims [${logits.dims.join(', ')}], expected [${B}, ${T}, V]`);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new Error(`validate ${opts.method}: the re-loaded model gives a non-finite logit at index ${i}`);
    }
  } finally {
    await session.release();
  }
  const { ppl, tokens } = await lmPerplexity(graph, batches, opts.sessionConfig, opts.onBatch);
  const increase = (ppl - fp32Ppl) / fp32Ppl;
  if (increase > opts.maxPplIncrease) throw new QuantRejectedError(opts.method, fp32Ppl, ppl, increase, opts.maxPplIncrease);
  return { ppl, fp32Ppl, increase, bound: opts.maxPplIncrease, tokens };
}
