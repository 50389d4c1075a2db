// An imported .onnx model as a LoRA base: buildImportedLoraStep keeps the base as initializers,
// and the merged model is a .onnx with the adapters folded into its weights.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import { IGNORE_INDEX } from '../data/masking';
import { evalLmBatches } from '../data/sampler';
import { EngineError } from '../errors';
import type { Graph, TensorData } from '../graph/ir';
import { loadModel, serializeModel } from '../graph/onnx';
import { attachImportedAdapters, buildImportedLoraStep, mergeIntoGraph, planImportedLora, specializeInputs, upgradeToOpset23, type LoraConfig, type LoraPlan } from '../lora';
import type { OptimConfig } from '../optim';
import { StepRunner, type SessionConfig, type StepRunnerInit } from '../runtime';
import { blocksPerSegment } from '../train/checkpointing';
import { scoreBatches, sessionOf, type CompiledLoraStep, type EvalOpts, type EvalOut, type Geometry, type LoraBase } from './base';
import { stepGraph } from '../train/ksteps';
import { importedFeeds, type ImportedFeeder, type ImportedModel } from './imported';

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
    return super.run(this.feedsOf(batch, this.step));
  }

  override runSteps(batches: Record<string, ort.Tensor | TensorData>[]) {
    return super.runSteps(batches.map((b, i) => this.feedsOf(b, this.step + i)));
  }

  /** The model's own feeds for the LM batch of `step` (MLM masks depend on the step). */
  private feedsOf(batch: Record<string, ort.Tensor | TensorData>, step: number): Record<string, TensorData> {
    const t = batch.tokens as TensorData;
    const y = batch.targets as TensorData;
    return importedFeeds(this.feeder, t.data as BigInt64Array, y.data as BigInt64Array, t.dims, 0, step);
  }
}

/** Masks of validation batches come from their own stream, so they never coincide with training's. */
const EVAL_STREAM = 0x7e57;

/** The graph of a base, refusing bytes that are not a model this engine reads. */
function loadBaseGraph(bytes: Uint8Array, name: string): Graph {
  try {
    return loadModel(bytes);
  } catch (err) {
    throw new EngineError('config', `base ${name}: not an ONNX model this engine can read (${(err as Error).message})`, { cause: err });
  }
}

export class OnnxBase implements LoraBase {
  readonly family: string;
  readonly plan: LoraPlan;
  readonly baseParamCount: number;
  readonly vocabSize: number;
  private readonly hasAttentionMask: boolean;
  private readonly inputs: string[];

  constructor(
    private readonly bytes: Uint8Array,
    private readonly base: ImportedModel,
    private readonly lora: LoraConfig,
    private readonly seed: number,
  ) {
    const g = loadBaseGraph(bytes, base.name);
    this.inputs = g.inputs.map((v) => v.name);
    if (!this.inputs.includes(base.inputName)) throw new EngineError('config', `base ${base.name}: the model has no input "${base.inputName}" (inputs: ${this.inputs.join(', ')})`);
    const other = this.inputs.filter((n) => n !== base.inputName && n !== 'attention_mask');
    if (other.length) throw new EngineError('config', `base ${base.name}: inputs ${other.join(', ')} cannot be fed from token batches (supported: ${base.inputName}, attention_mask)`);
    this.hasAttentionMask = this.inputs.includes('attention_mask');
    const logits = g.outputs.find((v) => v.name === 'logits');
    const V = logits?.shape?.[logits.shape.length - 1];
    if (typeof V !== 'number') throw new EngineError('config', `base ${base.name}: needs a "logits" output with a known vocabulary dim (outputs: ${g.outputs.map((v) => `${v.name} [${v.shape?.join(', ')}]`).join(', ')})`);
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
    if (geo.mixed) throw new EngineError('config', `train.precision: ${geo.mixed.precision} LoRA is wired for GPT checkpoints so far, not imported ONNX bases; use fp32`);
    if (blocksPerSegment(geo.activationCheckpointing) > 0) {
      throw new EngineError('config', `train.activationCheckpointing: an imported ONNX base marks no transformer blocks to recompute; use 'off' (got ${JSON.stringify(geo.activationCheckpointing)})`);
    }
    const step = await buildImportedLoraStep(this.bytes, this.lora, optim, { inputShapes: this.shapes(geo.batchSize, geo.contextLength) });
    const stepsPerRun = geo.stepsPerRun ?? 1;
    let graph;
    try {
      graph = stepGraph(step, stepsPerRun);
    } catch (err) {
      throw new EngineError('config', `train.stepsPerRun: ${(err as Error).message}; use 1 for this base`, { cause: err });
    }
    const s = await sessionOf(graph, session);
    const feeder = this.feeder();
    return { step, runner: (init) => new ImportedRunner(s, { params: init.params, state: init.state, step: init.step, stepsPerRun }, feeder) };
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
      }, o.onBatch);
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
