// Our GPT checkpoint as a LoRA base: the base weights are `frozen:` inputs of
// buildTrainStep(loraModel(...)), and the merged model is a checkpoint again (the same files
// trainingWorkflow writes). With `lora.baseQuantization` int8/int4 the linear weights are
// quantized once and fed as such; given a `reload`, the float linear weights are dropped while a
// step runner exists and read again for evaluation and merging, so training holds no float copy.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import { evalLmBatches } from '../data/sampler';
import { Graph, type Value } from '../graph/ir';
import { reshape } from '../graph/ops';
import { buildWithLora, isAdapterParam, loraModel, mergeWeights, planLora, quantizeLoraBase, type LoraConfig, type LoraPlan, type QuantizedBase } from '../lora';
import { countParams } from '../models/blocks';
import { gptLogits, gptParams, gptTrainLoss, type GptConfig } from '../models/gpt';
import type { OptimConfig } from '../optim';
import { StepRunner, type SessionConfig } from '../runtime';
import { LmEvaluator } from '../train/evaluate';
import { stepGraph } from '../train/ksteps';
import { reportCudaFallbacks } from '../train/precision';
import { buildTrainStep } from '../train/step';
import { scoreBatches, sessionOf, type CompiledLoraStep, type EvalOpts, type EvalOut, type Geometry, type LoraBase } from './base';

export class GptBase implements LoraBase {
  readonly family = 'gpt';
  readonly plan: LoraPlan;
  readonly baseParamCount: number;
  readonly vocabSize: number;
  /** Base parameter shapes by name (for checkpoint tensors). */
  readonly shapes: Map<string, number[]>;
  private readonly evalSessions = new Map<string, Promise<ort.InferenceSession>>();
  private quantized: QuantizedBase | null = null;
  /** The quantized linear weights' float arrays are out of `weights` (reload brings them back). */
  private floatDropped = false;

  constructor(
    readonly cfg: GptConfig,
    readonly weights: Map<string, Float32Array>,
    lora: LoraConfig,
    geo: Geometry,
    /** Reads the float base again (its checkpoint); without it the float weights stay in memory. */
    private readonly reload?: () => Promise<Map<string, Float32Array>>,
  ) {
    this.plan = planLora({ params: gptParams(cfg), loss: gptTrainLoss(cfg, geo.batchSize, geo.contextLength) }, { ...lora, family: lora.family ?? 'gpt' });
    this.baseParamCount = countParams(gptParams(cfg));
    this.vocabSize = cfg.vocab_size;
    this.shapes = new Map(gptParams(cfg).map((p) => [p.name, p.shape]));
  }

  async compile(optim: OptimConfig, geo: Geometry, session: SessionConfig): Promise<CompiledLoraStep> {
    const base = { params: gptParams(this.cfg), loss: gptTrainLoss(this.cfg, geo.batchSize, geo.contextLength) };
    // With a quantized base the linear weights are fed quantized (step.fixed): only the rest is fed as float.
    if (this.plan.config.baseQuantization && this.plan.config.baseQuantization !== 'none') this.quantized ??= quantizeLoraBase(base, this.plan, await this.floatWeights());
    const step = buildTrainStep(loraModel(base, this.plan, this.quantized ?? this.weights), optim, { trainable: isAdapterParam, activationCheckpointing: geo.activationCheckpointing, precision: geo.mixed });
    if (geo.mixed?.mode === 'half') reportCudaFallbacks(step);
    const stepsPerRun = geo.stepsPerRun ?? 1;
    const s = await sessionOf(stepGraph(step, stepsPerRun), session);
    const frozen = { ...Object.fromEntries(step.frozen.map((p) => [p.name, this.weights.get(p.name)!])), ...Object.fromEntries(step.fixed ?? []) };
    return {
      step,
      runner: (init) => {
        this.dropFloatLinears();
        return new StepRunner(s, { params: init.params, state: init.state, frozen, step: init.step, stepsPerRun });
      },
    };
  }

  /** Training on a quantized base: the float linear weights leave memory until evaluation or merging needs them. */
  private dropFloatLinears(): void {
    if (!this.quantized || !this.reload || this.floatDropped) return;
    for (const name of this.quantized.linears.keys()) this.weights.delete(name);
    this.floatDropped = true;
  }

  /** The whole float base, read again if training dropped its linear weights. */
  private async floatWeights(): Promise<Map<string, Float32Array>> {
    if (this.floatDropped) {
      const again = await this.reload!();
      for (const name of this.quantized!.linears.keys()) {
        const w = again.get(name);
        if (!w) throw new Error(`lora base: the reloaded base has no weight ${name}`);
        this.weights.set(name, w);
      }
      this.floatDropped = false;
    }
    return this.weights;
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
    const weights = await this.floatWeights();
    if (!adapters) return this.evaluateWeights(weights, ids, o);
    const feeds: Record<string, ort.Tensor> = {};
    for (const p of gptParams(this.cfg)) feeds[p.name] = new Tensor('float32', weights.get(p.name)!, p.shape);
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
    }, o.onBatch);
  }

  async evaluateMerged(adapters: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    return this.evaluateWeights(await this.merge(adapters), ids, o);
  }

  private async evaluateWeights(weights: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: EvalOpts): Promise<EvalOut> {
    const r = await new LmEvaluator(this.cfg, o.session).evaluate(weights, ids, { batchSize: o.batchSize, contextLength: o.contextLength, maxBatches: o.maxBatches, onBatch: o.onBatch });
    return { loss: r.loss, perplexity: r.perplexity, tokens: r.tokens };
  }

  async merge(adapters: Map<string, Float32Array>): Promise<Map<string, Float32Array>> {
    return mergeWeights(await this.floatWeights(), this.plan, adapters);
  }

  async release(): Promise<void> {
    for (const s of this.evalSessions.values()) await (await s).release();
    this.evalSessions.clear();
  }
}
