// Validation loss and perplexity of a language model: every val token scored once, in
// non-overlapping windows (engine/data/sampler.ts evalLmBatches), token-weighted, so the loss is
// the same whatever the batch size. The graph sums the cross-entropy over the batch; the mean is
// taken here over all tokens, in float64.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import '../autodiff/rules';
import { evalLmBatches } from '../data/sampler';
import { EngineError } from '../errors';
import { Graph, type Value } from '../graph/ir';
import { reshape } from '../graph/ops';
import { serializeModel } from '../graph/onnx';
import { GptConfigSchema, gptLogits, gptParams, type GptConfig } from '../models/gpt';
import { memoryConfigOf, memoryGptLogits, memoryGptParams, type MemoryVariant } from '../models/memory-slots';
import { createSession, type SessionConfig } from '../runtime';

export interface EvalResult {
  /** Mean next-token cross-entropy (nats) over `tokens` tokens. */
  loss: number;
  perplexity: number;
  tokens: number;
  batches: number;
}

export interface EvalOptions {
  batchSize: number;
  contextLength: number;
  /** Stop after this many batches (the first ones, so repeated evaluations score the same tokens). */
  maxBatches?: number;
  sessionConfig?: SessionConfig;
  /** Called after each batch with the number scored so far (a heartbeat; it may throw to stop). */
  onBatch?: (done: number) => void;
}

/** Inference graph: weights as inputs (one session serves every checkpoint), output the summed loss. */
function evalGraph(cfg: GptConfig, memory: MemoryVariant | undefined, B: number, T: number): Graph {
  const g = new Graph('eval_lm');
  const m = memory ? memoryConfigOf(cfg, memory) : null;
  const weights = new Map<string, Value>((m ? memoryGptParams(m) : gptParams(cfg)).map((s) => [s.name, g.input(s.name, 'float32', s.shape)]));
  const tokens = g.input('tokens', 'int64', [B, T]);
  const targets = g.input('targets', 'int64', [B, T]);
  const p = (n: string) => weights.get(n)!;
  const logits = m ? memoryGptLogits(m, tokens, p) : gptLogits(cfg, tokens, p); // (B·T, V)
  const [sum] = g.op('SoftmaxCrossEntropyLoss', [logits, reshape(targets, [-1])], { reduction: 'sum' }, { outputs: 1 });
  g.output(sum, 'loss_sum');
  return g;
}

/** Sessions by (config, B, T): the last eval batch is usually smaller than the others. */
export class LmEvaluator {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  private readonly cfg: GptConfig;

  constructor(
    model: GptConfig,
    private readonly sessionConfig: SessionConfig = {},
    /** A memory-augmented GPT's slots (engine/models/memory-slots.ts); default a plain GPT. */
    private readonly memory?: MemoryVariant,
  ) {
    this.cfg = GptConfigSchema.parse(model);
  }

  private session(B: number, T: number): Promise<ort.InferenceSession> {
    const key = `${B}x${T}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = createSession(serializeModel(evalGraph(this.cfg, this.memory, B, T)).model, { graphOptimizationLevel: 'all', ...this.sessionConfig });
      this.sessions.set(key, s);
    }
    return s;
  }

  /**
   * Scores `ids` with `weights` (every parameter of the model, by name).
   * @example await new LmEvaluator(cfg).evaluate(weights, valIds, { batchSize: 8, contextLength: 32 })
   */
  async evaluate(weights: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOptions): Promise<EvalResult> {
    const T = o.contextLength;
    if (ids.length < T + 1) throw new EngineError('config', `validation split has ${ids.length} tokens, need at least contextLength + 1 = ${T + 1}`);
    const feedsW: Record<string, ort.Tensor> = {};
    for (const s of this.memory ? memoryGptParams(memoryConfigOf(this.cfg, this.memory)) : gptParams(this.cfg)) {
      const w = weights.get(s.name);
      if (!w) throw new EngineError('config', `evaluate: parameter "${s.name}" is missing from the checkpoint`);
      const n = s.shape.reduce((a, b) => a * b, 1);
      if (w.length !== n) throw new EngineError('config', `evaluate: parameter "${s.name}" has ${w.length} values, shape [${s.shape}] needs ${n}`);
      feedsW[s.name] = new Tensor('float32', w, s.shape);
    }
    let sum = 0;
    let tokens = 0;
    let batches = 0;
    for (const b of evalLmBatches(ids, o.batchSize, T)) {
      if (o.maxBatches !== undefined && batches >= o.maxBatches) break;
      const [B] = b.dims;
      const session = await this.session(B, T);
      const out = await session.run({
        ...feedsW,
        tokens: new Tensor('int64', b.tokens, [B, T]),
        targets: new Tensor('int64', b.targets, [B, T]),
      });
      sum += (out.loss_sum.data as Float32Array)[0];
      tokens += B * T;
      batches++;
      o.onBatch?.(batches);
    }
    const loss = sum / tokens;
    return { loss, perplexity: Math.exp(loss), tokens, batches };
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
