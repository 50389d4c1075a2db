// LoRA over our own model builders (gpt.ts, bert.ts, t5.ts). A builder reads weights through a
// ParamLookup; `loraModel` wraps a TrainableModel so that, after the base forward is built, its
// targeted linear sites are rewritten (attach.ts) with adapters read through the same lookup.
// Under buildTrainStep with `trainable: isAdapterParam` the base weights are `frozen:` inputs and
// only the adapters are `param:` inputs, so the graph, the optimizer state and the checkpoints
// hold r·(in + out) numbers per module.

import { EngineError } from '../errors';
import { Graph, type Value } from '../graph/ir';
import { countParams, mulberry32, type ParamLookup, type ParamSpec } from '../models/blocks';
import type { TrainableModel } from '../train/step';
import { attachAdapters } from './attach';
import { isAdapterParam, loraAName, loraBName, loraScale, parseLoraConfig, type LoraConfig, type LoraConfigInput } from './config';
import { quantizeBase, quantizeLinearsAsInputs, quantizedInputs, type QuantizedBase } from './quantized-base';
import { findLinearSites, selectTargets, type LinearSite, type ModuleNamer } from './targets';

/** One adapted linear layer. */
export interface LoraModule {
  module: string;
  /** Base weight: a parameter name (our models) or an initializer name (imported graphs). */
  weight: string;
  inFeatures: number;
  outFeatures: number;
  /** Base weight stored (in, out) — GPT-2 Conv1D / MatMul — rather than torch's (out, in). */
  weightInOut: boolean;
}

export interface LoraPlan {
  config: LoraConfig;
  scale: number;
  modules: LoraModule[];
  /** `<module>.lora_A.weight` (r, in) and `<module>.lora_B.weight` (out, r), in module order. */
  adapterParams: ParamSpec[];
}

export interface TrainableReport {
  trainable: number;
  total: number;
  /** trainable / total, as PEFT's print_trainable_parameters reports it. */
  fraction: number;
}

/** Plan from already-selected sites (shared with imported.ts). */
export function planFromSites(config: LoraConfig, sites: LinearSite[], weightName: (site: LinearSite) => string): LoraPlan {
  const modules = sites.map((s) => ({ module: s.module, weight: weightName(s), inFeatures: s.inFeatures, outFeatures: s.outFeatures, weightInOut: s.weightInOut }));
  const adapterParams: ParamSpec[] = [];
  for (const m of modules) {
    // A's fallback init has Kaiming-uniform's variance (bound 1/√in → std 1/√(3·in)); initAdapters draws the real thing.
    adapterParams.push({ name: loraAName(m.module), shape: [config.r, m.inFeatures], init: { kind: 'normal', std: 1 / Math.sqrt(3 * m.inFeatures) } });
    adapterParams.push({ name: loraBName(m.module), shape: [m.outFeatures, config.r], init: { kind: 'zeros' } });
  }
  return { config, scale: loraScale(config), modules, adapterParams };
}

/** Names a weight by its parameter: `h.0.attn.c_attn.weight` → `h.0.attn.c_attn`. */
const paramNamer =
  (paramOf: (value: string) => string | undefined): ModuleNamer =>
  (weight) => {
    const name = paramOf(weight);
    if (name === undefined) return null;
    return name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : name;
  };

/**
 * Picks the modules to adapt by building the base forward once on a scratch graph and reading
 * off its MatMul/Gemm nodes, so selection sees exactly the linear layers the model uses.
 * @example const plan = planLora({ params: gptParams(cfg), loss: gptTrainLoss(cfg, 4, 32) }, { family: 'gpt', r: 8 })
 */
export function planLora(base: TrainableModel, input: LoraConfigInput | LoraConfig): LoraPlan {
  const config = parseLoraConfig(input);
  const { sites } = probeSites(base);
  const picked = selectTargets(sites, config);
  const adapters = new Set(picked.map((s) => loraAName(s.module)));
  for (const s of base.params) if (adapters.has(s.name)) throw new Error(`lora: the base model already has a parameter named ${s.name}`);
  return planFromSites(config, picked, (s) => s.weight);
}

/** The base forward built once on a scratch graph: its linear sites, named by parameter. */
function probeSites(base: TrainableModel): { sites: LinearSite[]; specs: Map<string, ParamSpec> } {
  const g = new Graph('lora_probe');
  // The training step's `step` input (buildTrainStep declares it), which a base with dropout reads for its masks.
  g.input('step', 'float32', []);
  const specs = new Map(base.params.map((s) => [s.name, s]));
  const lookup: ParamLookup = (name) => {
    if (g.values.has(name)) return g.value(name);
    const s = specs.get(name);
    if (!s) throw new Error(`lora: the model reads parameter "${name}", which is not in its parameter list`);
    return g.input(name, 'float32', s.shape);
  };
  const out = base.loss(g, lookup);
  g.output(out);
  return { sites: findLinearSites(g, paramNamer((v) => (specs.has(v) ? v : undefined))), specs };
}

/**
 * The base weights a quantized LoRA base stores quantized: every MatMul weight, (in, out), by
 * parameter name (Gemm sites, embeddings and a tied head stay float).
 */
export function quantizableWeights(base: TrainableModel): Map<string, number[]> {
  const { sites, specs } = probeSites(base);
  return new Map(sites.filter((s) => s.node.opType === 'MatMul' && !isAdapterParam(s.weight)).map((s) => [s.weight, specs.get(s.weight)!.shape]));
}

/**
 * Quantizes a base's linear weights as `plan.config.baseQuantization` asks (null for 'none').
 * The caller may drop the float arrays of `quantizableWeights(base)` afterwards.
 */
export function quantizeLoraBase(base: TrainableModel, plan: LoraPlan, weights: Map<string, Float32Array>): QuantizedBase | null {
  const c = plan.config;
  const kind = c.baseQuantization ?? 'none';
  if (kind === 'none') return null;
  return quantizeBase(weights, quantizableWeights(base), { kind, blockSize: c.baseBlockSize, symmetric: c.baseSymmetric });
}

export interface BuildWithLoraOptions {
  adapters?: ParamLookup;
  step?: Value;
  /**
   * The base's quantized linear layers (quantizeLoraBase): they become int8/int4 ops over
   * `frozen:` inputs of `g` (quantized-base.ts) and stop reading their float parameters; without
   * them the graph keeps the float base (evaluation and merging do).
   */
  quantized?: QuantizedBase | null;
}

/**
 * Builds `build(p)` on `g` and attaches the plan's adapters, read through `adapters` (default:
 * the same lookup). `dropout` is for training graphs: masks from (seed, step).
 */
export function buildWithLora(g: Graph, p: ParamLookup, plan: LoraPlan, build: (p: ParamLookup) => Value, opts: BuildWithLoraOptions = {}): Value {
  const paramOfValue = new Map<string, string>();
  const recording: ParamLookup = (name) => {
    const v = p(name);
    paramOfValue.set(v.name, name);
    return v;
  };
  const out = build(recording);
  const wanted = new Map(plan.modules.map((m) => [m.module, m]));
  const sites = findLinearSites(g, paramNamer((v) => paramOfValue.get(v))).filter((s) => wanted.has(s.module));
  const missing = [...wanted.keys()].filter((m) => !sites.some((s) => s.module === m));
  if (missing.length) throw new Error(`lora: planned modules not found in the built graph: ${missing.join(', ')}`);
  const adapters = opts.adapters ?? p;
  const ratio = plan.config.lora_dropout;
  const dropout = ratio > 0 && opts.step ? { ratio, step: opts.step, seed: g.const({ dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(plan.config.seed)) }, 'lora_seed') } : undefined;
  attachAdapters(g, sites, (s) => ({ A: adapters(loraAName(s.module)), B: adapters(loraBName(s.module)) }), { scale: plan.scale, dropout });
  if (opts.quantized) quantizeLinearsAsInputs(g, opts.quantized, (v) => paramOfValue.get(v));
  return out;
}

/**
 * The base model with adapters: parameters = base + adapters, loss built with the adapters
 * attached (dropout on, driven by the training step's `step` input). With `baseQuantization`
 * int8/int4 the base's linear layers are quantized (from `base` float weights, or already, by
 * quantizeLoraBase) and fed as `fixed` inputs; buildTrainStep drops the float inputs nothing
 * reads any more (its `frozen` list says which remain).
 * @example buildTrainStep(loraModel(base, plan), optim, { trainable: isAdapterParam })
 */
export function loraModel(base: TrainableModel, plan: LoraPlan, baseWeights?: Map<string, Float32Array> | QuantizedBase): TrainableModel {
  const q = plan.config.baseQuantization ?? 'none';
  if (q !== 'none' && !baseWeights) {
    throw new EngineError('config', `lora.baseQuantization: ${q} needs the base weights when the step is built; this base (or model family) does not support it yet — use 'none'`);
  }
  const quantized = q === 'none' || !baseWeights ? null : baseWeights instanceof Map ? quantizeLoraBase(base, plan, baseWeights) : baseWeights;
  if (quantized && quantized.kind !== q) throw new Error(`lora.baseQuantization: ${q}, but the base was quantized to ${quantized.kind}`);
  return {
    params: [...base.params, ...plan.adapterParams],
    loss: (g, p) => buildWithLora(g, p, plan, (pp) => base.loss(g, pp), { step: g.values.get('step'), quantized }),
    fixed: quantized ? quantizedInputs(quantized) : undefined,
  };
}

/** PEFT's init: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in), B = 0, so step 0 equals the base. */
export function initAdapters(plan: LoraPlan, seed = plan.config.seed): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const m of plan.modules) {
    const a = new Float32Array(plan.config.r * m.inFeatures);
    const rand = mulberry32(nameSeed(seed, m.module));
    const bound = 1 / Math.sqrt(m.inFeatures);
    for (let i = 0; i < a.length; i++) a[i] = (2 * rand() - 1) * bound;
    out.set(loraAName(m.module), a);
    out.set(loraBName(m.module), new Float32Array(m.outFeatures * plan.config.r));
  }
  return out;
}

/** Trainable (adapter) parameters against all parameters, base included. */
export function trainableReport(plan: LoraPlan, baseParamCount: number): TrainableReport {
  const trainable = countParams(plan.adapterParams);
  const total = baseParamCount + trainable;
  return { trainable, total, fraction: trainable / total };
}

function nameSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0; // FNV-1a, mixed with the seed
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
