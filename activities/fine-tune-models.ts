// The two kinds of base a fine-tune adapts, behind one interface the activities use:
//
//   GptBase     our checkpoint: base weights are `frozen:` inputs of buildTrainStep(loraModel(...)),
//               the merged model is a checkpoint again (same files as trainingWorkflow writes)
//   OnnxBase    an imported .onnx: buildImportedLoraStep keeps the base as initializers; the merged
//               model is a .onnx with the adapters folded into its weights
//
// Either way only the adapters are `param:` inputs, so the resumable inner loop of training
// (engine/train/shard.ts runShard, which feeds `tokens`/`targets` batches) runs unchanged: an
// imported model's runner maps those two onto its own inputs (input ids, attention mask, labels).

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import { evalLmBatches, type LmBatch } from '../engine/data/sampler';
import { IGNORE_INDEX, mlmMask } from '../engine/data/masking';
import { Graph, type TensorData, type Value } from '../engine/graph/ir';
import { reshape } from '../engine/graph/ops';
import { loadModel, serializeModel } from '../engine/graph/onnx';
import {
  attachImportedAdapters,
  buildImportedLoraStep,
  buildWithLora,
  isAdapterParam,
  loraModel,
  mergeIntoGraph,
  mergeWeights,
  planImportedLora,
  planLora,
  upgradeToOpset23,
  specializeInputs,
  type LoraConfig,
  type LoraPlan,
} from '../engine/lora';
import { countParams } from '../engine/models/blocks';
import { gptLogits, gptParams, gptTrainLoss, type GptConfig } from '../engine/models/gpt';
import type { OptimConfig } from '../engine/optim';
import { createSession, StepRunner, type SessionConfig, type StepRunnerInit } from '../engine/runtime';
import { LmEvaluator } from '../engine/train/evaluate';
import type { ShardSnapshot } from '../engine/train/shard';
import { buildTrainStep, type TrainStep } from '../engine/train/step';
import type { BaseModel } from '../spec/lora';

export interface Geometry {
  batchSize: number;
  contextLength: number;
}

export interface EvalOut {
  loss: number;
  perplexity: number;
  tokens: number;
}

export interface CompiledLoraStep {
  step: TrainStep;
  runner(init: ShardSnapshot): StepRunner;
}

export interface LoraBase {
  /** `gpt` for our checkpoints; the LoRA family (or `onnx`) for imported files. */
  family: string;
  plan: LoraPlan;
  baseParamCount: number;
  /** Largest token id + 1 the model accepts. */
  vocabSize: number;
  compile(optim: OptimConfig, geo: Geometry, session: SessionConfig): Promise<CompiledLoraStep>;
  /** Validation loss of base + adapters (unmerged; `null`: the base alone). */
  evaluate(adapters: Map<string, Float32Array> | null, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut>;
  /** Validation loss of the merged model (adapters folded into the base weights). */
  evaluateMerged(adapters: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut>;
}

export interface EvalOpts extends Geometry {
  maxBatches: number;
  seed: number;
  session: SessionConfig;
}

const sessionOf = (g: Graph, cfg: SessionConfig) => createSession(serializeModel(g).model, { graphOptimizationLevel: 'all', ...cfg });

/** Token-weighted mean over batches of a graph that outputs the summed loss. */
async function scoreBatches(batches: Iterable<LmBatch>, maxBatches: number, run: (b: LmBatch, index: number) => Promise<{ sum: number; tokens: number }>): Promise<EvalOut> {
  let sum = 0;
  let tokens = 0;
  let n = 0;
  for (const b of batches) {
    if (n >= maxBatches) break;
    const r = await run(b, n++);
    sum += r.sum;
    tokens += r.tokens;
  }
  if (tokens === 0) throw new Error('validation split has no scored tokens');
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), tokens };
}

/** Our GPT checkpoint as a LoRA base. */
export class GptBase implements LoraBase {
  readonly family = 'gpt';
  readonly plan: LoraPlan;
  readonly baseParamCount: number;
  readonly vocabSize: number;
  /** Base parameter shapes by name (for checkpoint tensors). */
  readonly shapes: Map<string, number[]>;
  private readonly evalSessions = new Map<string, Promise<ort.InferenceSession>>();

  constructor(
    readonly cfg: GptConfig,
    readonly weights: Map<string, Float32Array>,
    lora: LoraConfig,
    geo: Geometry,
  ) {
    this.plan = planLora({ params: gptParams(cfg), loss: gptTrainLoss(cfg, geo.batchSize, geo.contextLength) }, { ...lora, family: lora.family ?? 'gpt' });
    this.baseParamCount = countParams(gptParams(cfg));
    this.vocabSize = cfg.vocab_size;
    this.shapes = new Map(gptParams(cfg).map((p) => [p.name, p.shape]));
  }

  async compile(optim: OptimConfig, geo: Geometry, session: SessionConfig): Promise<CompiledLoraStep> {
    const base = { params: gptParams(this.cfg), loss: gptTrainLoss(this.cfg, geo.batchSize, geo.contextLength) };
    const step = buildTrainStep(loraModel(base, this.plan), optim, { trainable: isAdapterParam });
    const s = await sessionOf(step.graph, session);
    const frozen = Object.fromEntries(this.weights);
    return { step, runner: (init) => new StepRunner(s, { params: init.params, state: init.state, frozen, step: init.step }) };
  }

  /** Base weights and adapters as inputs, so one session scores every adapter. Output: summed loss. */
  private evalSession(B: number, T: number, cfg: SessionConfig): Promise<ort.InferenceSession> {
    const key = `${B}x${T}`;
    let s = this.evalSessions.get(key);
    if (!s) {
      const g = new Graph('eval_lora');
      const inputs = new Map<string, Value>();
      for (const p of [...gptParams(this.cfg), ...this.plan.adapterParams]) inputs.set(p.name, g.input(p.name, 'float32', p.shape));
      const tokens = g.input('tokens', 'int64', [B, T]);
      const targets = g.input('targets', 'int64', [B, T]);
      const lookup = (n: string) => inputs.get(n)!;
      const logits = buildWithLora(g, lookup, this.plan, (pp) => gptLogits(this.cfg, tokens, pp)); // (B·T, V)
      const [sum] = g.op('SoftmaxCrossEntropyLoss', [logits, reshape(targets, [-1])], { reduction: 'sum' }, { outputs: 1 });
      g.output(sum, 'loss_sum');
      s = sessionOf(g, cfg);
      s.catch(() => this.evalSessions.delete(key));
      this.evalSessions.set(key, s);
    }
    return s;
  }

  async evaluate(adapters: Map<string, Float32Array> | null, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    if (!adapters) {
      const r = await new LmEvaluator(this.cfg, o.session).evaluate(this.weights, ids, { batchSize: o.batchSize, contextLength: o.contextLength, maxBatches: o.maxBatches });
      return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
    }
    const feeds: Record<string, ort.Tensor> = {};
    for (const p of gptParams(this.cfg)) feeds[p.name] = new Tensor('float32', this.weights.get(p.name)!, p.shape);
    for (const p of this.plan.adapterParams) {
      const a = adapters.get(p.name);
      if (!a) throw new Error(`evaluate: adapter tensor ${p.name} is missing`);
      feeds[p.name] = new Tensor('float32', a, p.shape);
    }
    const T = o.contextLength;
    return scoreBatches(evalLmBatches(ids, o.batchSize, T), o.maxBatches, async (b) => {
      const B = b.dims[0];
      const out = await (await this.evalSession(B, T, o.session)).run({ ...feeds, tokens: new Tensor('int64', b.tokens, [B, T]), targets: new Tensor('int64', b.targets, [B, T]) });
      return { sum: (out.loss_sum.data as Float32Array)[0], tokens: B * T };
    });
  }

  async evaluateMerged(adapters: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    const r = await new LmEvaluator(this.cfg, o.session).evaluate(this.merge(adapters), ids, { batchSize: o.batchSize, contextLength: o.contextLength, maxBatches: o.maxBatches });
    return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
  }

  merge(adapters: Map<string, Float32Array>): Map<string, Float32Array> {
    return mergeWeights(this.weights, this.plan, adapters);
  }

  async release(): Promise<void> {
    for (const s of this.evalSessions.values()) await (await s).release();
    this.evalSessions.clear();
  }
}

/** The (B, T) int64 token batch of the LM sampler, fed to an imported model per its objective. */
export interface ImportedFeeder {
  objective: Extract<BaseModel, { kind: 'onnx' }>['objective'];
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

/** A StepRunner over an imported model's step: the shard loop's tokens/targets become its inputs. */
class ImportedRunner extends StepRunner {
  constructor(
    session: ort.InferenceSession,
    init: StepRunnerInit,
    private readonly feeder: ImportedFeeder,
  ) {
    super(session, init);
  }

  override run(batch: Record<string, ort.Tensor | TensorData>) {
    const t = batch.tokens as TensorData;
    const y = batch.targets as TensorData;
    return super.run(importedFeeds(this.feeder, t.data as BigInt64Array, y.data as BigInt64Array, t.dims, 0, this.step));
  }
}

/** Masks of validation batches come from their own stream, so they never coincide with training's. */
const EVAL_STREAM = 0x7e57;

/** An imported .onnx model as a LoRA base. */
export class OnnxBase implements LoraBase {
  readonly family: string;
  readonly plan: LoraPlan;
  readonly baseParamCount: number;
  readonly vocabSize: number;
  private readonly hasAttentionMask: boolean;
  private readonly inputs: string[];

  constructor(
    private readonly bytes: Uint8Array,
    private readonly base: Extract<BaseModel, { kind: 'onnx' }>,
    private readonly lora: LoraConfig,
    private readonly seed: number,
  ) {
    const g = loadModel(bytes);
    this.inputs = g.inputs.map((v) => v.name);
    if (!this.inputs.includes(base.inputName)) throw new Error(`base ${base.key}: the model has no input "${base.inputName}" (inputs: ${this.inputs.join(', ')})`);
    const other = this.inputs.filter((n) => n !== base.inputName && n !== 'attention_mask');
    if (other.length) throw new Error(`base ${base.key}: inputs ${other.join(', ')} cannot be fed from token batches (supported: ${base.inputName}, attention_mask)`);
    this.hasAttentionMask = this.inputs.includes('attention_mask');
    const logits = g.outputs.find((v) => v.name === 'logits');
    const V = logits?.shape?.[logits.shape.length - 1];
    if (typeof V !== 'number') throw new Error(`base ${base.key}: needs a "logits" output with a known vocabulary dim (outputs: ${g.outputs.map((v) => `${v.name} [${v.shape?.join(', ')}]`).join(', ')})`);
    this.vocabSize = V;
    this.plan = planImportedLora(g, lora);
    this.family = lora.family ?? 'onnx';
    let n = 0;
    for (const t of g.initializers.values()) if (t.dtype === 'float32' && t.dims.length >= 1) n += t.dims.reduce((a, b) => a * b, 1);
    this.baseParamCount = n;
  }

  private feeder(vocabSize = this.vocabSize): ImportedFeeder {
    return { objective: this.base.objective, inputName: this.base.inputName, hasAttentionMask: this.hasAttentionMask, vocabSize, seed: this.seed };
  }

  private shapes(B: number, T: number): Record<string, number[]> {
    return Object.fromEntries(this.inputs.map((n) => [n, [B, T]]));
  }

  async compile(optim: OptimConfig, geo: Geometry, session: SessionConfig): Promise<CompiledLoraStep> {
    const step = await buildImportedLoraStep(this.bytes, this.lora, optim, { inputShapes: this.shapes(geo.batchSize, geo.contextLength) });
    const s = await sessionOf(step.graph, session);
    const feeder = this.feeder();
    return { step, runner: (init) => new ImportedRunner(s, { params: init.params, state: init.state, step: init.step }, feeder) };
  }

  /** The model (as `prepare` leaves it) with a summed cross-entropy over labelled positions. */
  private async lossGraph(B: number, T: number, prepare: (g: Graph) => void): Promise<Graph> {
    const loaded = loadModel(this.bytes);
    upgradeToOpset23(loaded);
    const g = await specializeInputs(loaded, this.shapes(B, T));
    prepare(g);
    const logits = g.outputs.find((v) => v.name === 'logits')!;
    g.outputs.length = 0;
    const labels = g.input('labels', 'int64', [B, T]);
    const flat = g.op('Reshape', [logits, g.vector([-1, this.vocabSize])])[0]; // (B, T, V) → (B·T, V)
    const flatY = g.op('Reshape', [labels, g.vector([-1])])[0]; // (B, T) → (B·T)
    const [sum] = g.op('SoftmaxCrossEntropyLoss', [flat, flatY], { reduction: 'sum', ignore_index: IGNORE_INDEX }, { outputs: 1 });
    g.output(sum, 'loss_sum');
    return g;
  }

  private async score(prepare: (g: Graph) => void, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    const sessions = new Map<number, ort.InferenceSession>();
    const T = o.contextLength;
    const feeder = { ...this.feeder(), seed: o.seed };
    try {
      return await scoreBatches(evalLmBatches(ids, o.batchSize, T), o.maxBatches, async (b, index) => {
        const B = b.dims[0];
        let s = sessions.get(B);
        if (!s) sessions.set(B, (s = await sessionOf(await this.lossGraph(B, T, prepare), o.session)));
        const feeds = importedFeeds(feeder, b.tokens, b.targets, [B, T], EVAL_STREAM, index);
        const tensors: Record<string, ort.Tensor> = {};
        for (const [n, t] of Object.entries(feeds)) tensors[n] = new Tensor('int64', t.data as BigInt64Array, t.dims);
        const out = await s.run(tensors);
        const labels = feeds.labels.data as BigInt64Array;
        let counted = 0;
        for (const l of labels) if (l !== BigInt(IGNORE_INDEX)) counted++;
        return { sum: (out.loss_sum.data as Float32Array)[0], tokens: counted };
      });
    } finally {
      for (const s of sessions.values()) await s.release();
    }
  }

  evaluate(adapters: Map<string, Float32Array> | null, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    return this.score((g) => adapters && attachImportedAdapters(g, this.plan, adapters), ids, o);
  }

  evaluateMerged(adapters: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    return this.score((g) => mergeIntoGraph(g, this.plan, adapters), ids, o);
  }

  /** The base .onnx with the adapters folded into its weights. */
  mergedModel(adapters: Map<string, Float32Array>): Uint8Array {
    const g = loadModel(this.bytes);
    mergeIntoGraph(g, this.plan, adapters);
    return serializeModel(g).model;
  }
}
