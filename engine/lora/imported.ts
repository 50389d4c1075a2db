// LoRA on an imported .onnx model (our own export, or a torch.onnx export of a Hugging Face
// model). Adapters go on MatMul/Gemm nodes whose weight is an initializer matching the targets;
// every initializer stays an initializer (frozen, stored once in the session), and only the
// adapters are `param:` inputs of the training step. The loss is built on the model's outputs.
// An op on the path from an adapter to the loss without a gradient rule makes autodiff throw,
// naming the op and the node.

import { gradients } from '../autodiff/gradients';
import '../autodiff/rules';
import { EngineError } from '../errors';
import { loadModel } from '../graph/onnx';
import { Graph, type Value } from '../graph/ir';
import { appendOptimizer, paramIn, type OptimConfig } from '../optim';
import type { TrainStep } from '../train/step';
import { attachAdapters } from './attach';
import { loraAName, loraBName, parseLoraConfig, type LoraConfig, type LoraConfigInput } from './config';
import { planFromSites, type LoraPlan } from './model';
import { quantizeFrozenLinears } from './quantized-base';
import { upgradeToOpset23 } from './opset';
import { reinferShapes, specializeInputs } from './specialize';
import { findLinearSites, importedNamer, selectTargets, type LinearSite } from './targets';

export type OnnxSource = Graph | Uint8Array | string;

function graphOf(src: OnnxSource): Graph {
  return src instanceof Graph ? src : loadModel(src);
}

/** Every linear site of an imported graph, head included, with its module name. */
export function importedLinearSites(g: Graph): LinearSite[] {
  return findLinearSites(g, importedNamer(g));
}

/** The adapter plan for an imported graph (module weights are initializer names). */
export function planImportedLora(g: Graph, input: LoraConfigInput | LoraConfig): LoraPlan {
  const config = parseLoraConfig(input);
  return planFromSites(config, selectTargets(importedLinearSites(g), config), (s) => s.weight);
}

function sitesFor(g: Graph, plan: LoraPlan): LinearSite[] {
  const byModule = new Map(importedLinearSites(g).map((s) => [s.module, s]));
  return plan.modules.map((m) => {
    const s = byModule.get(m.module);
    if (!s || s.weight !== m.weight) throw new Error(`lora: graph ${g.name} has no linear layer ${m.module} on initializer ${m.weight}`);
    return s;
  });
}

/**
 * Unmerged inference: adds the adapters as initializers and attaches them, in place.
 * @example attachImportedAdapters(loadModel('model.onnx'), plan, adapters); serializeModel(g)
 */
export function attachImportedAdapters(g: Graph, plan: LoraPlan, adapters: Map<string, Float32Array>): void {
  const sites = sitesFor(g, plan);
  const specs = new Map(plan.adapterParams.map((s) => [s.name, s]));
  const init = (name: string): Value => {
    const data = adapters.get(name);
    if (!data) throw new Error(`lora: adapter tensor ${name} is missing`);
    return g.initializer(name, { dtype: 'float32', dims: specs.get(name)!.shape, data });
  };
  attachAdapters(g, sites, (s) => ({ A: init(loraAName(s.module)), B: init(loraBName(s.module)) }), { scale: plan.scale });
}

/** Builds the scalar loss from the model's outputs (by name), declaring any label inputs it needs. */
export type ImportedLoss = (g: Graph, outputs: Record<string, Value>) => Value;

/**
 * Next-token or masked-token cross-entropy on a (B, T, V) logits output against an int64 `labels`
 * input of shape (B, T); positions labelled -100 are skipped (Hugging Face's convention).
 */
export function tokenCrossEntropy(output = 'logits', labels = 'labels'): ImportedLoss {
  return (g, outputs) => {
    const logits = outputs[output];
    if (!logits) throw new Error(`lora: the model has no output "${output}" (outputs: ${Object.keys(outputs).join(', ')})`);
    const V = logits.shape?.[logits.shape.length - 1];
    if (typeof V !== 'number') throw new Error(`lora: output ${output} needs a known last (vocabulary) dim, got [${logits.shape?.join(', ')}]`);
    const y = g.input(labels, 'int64', logits.shape!.slice(0, -1));
    const flat = g.op('Reshape', [logits, g.vector([-1, V])])[0]; // (B, T, V) → (B·T, V)
    const flatY = g.op('Reshape', [y, g.vector([-1])])[0]; // (B, T) → (B·T)
    return g.op('SoftmaxCrossEntropyLoss', [flat, flatY], { reduction: 'mean', ignore_index: -100 }, { outputs: 1 })[0];
  };
}

export interface ImportedStep extends TrainStep {
  plan: LoraPlan;
}

export interface ImportedStepOptions {
  /** Default: tokenCrossEntropy() on `logits` against `labels`. */
  loss?: ImportedLoss;
  /**
   * Concrete dims for every model input (e.g. { input_ids: [8, 128], attention_mask: [8, 128] }).
   * Needed for exports that compute shapes at run time (torch.onnx with dynamic axes): the step is
   * built for this batch geometry, with the shape arithmetic folded (specialize.ts).
   */
  inputShapes?: Record<string, number[]>;
}

/**
 * The one-graph training step of an imported model with adapters: (adapters, optimizer state,
 * model inputs, labels, step) → (new adapters, new state, loss, grad_norm, lr). The base weights
 * stay initializers of the step graph, so they are frozen by construction.
 * @example const step = await buildImportedLoraStep('bert.onnx', { target_modules: ['query', 'value'] }, optim, { inputShapes })
 */
export async function buildImportedLoraStep(src: OnnxSource, lora: LoraConfigInput | LoraConfig, optim: OptimConfig, opts: ImportedStepOptions = {}): Promise<ImportedStep> {
  const loaded = graphOf(src);
  upgradeToOpset23(loaded); // the backward and the optimizer are opset-23 ops
  const g = opts.inputShapes ? await specializeInputs(loaded, opts.inputShapes) : reinferShapes(loaded);
  const loss = opts.loss ?? tokenCrossEntropy();
  const plan = planImportedLora(g, lora);
  const sites = sitesFor(g, plan);
  const outputNames = g.outputs.map((v) => v.name);
  const nBefore = g.inputs.length;
  const step = g.input('step', 'float32', []);
  const specs = new Map(plan.adapterParams.map((s) => [s.name, s]));
  const params = new Map<string, Value>();
  const param = (name: string) => {
    const v = g.input(paramIn(name), 'float32', specs.get(name)!.shape);
    params.set(name, v);
    return v;
  };
  const ratio = plan.config.lora_dropout;
  const seed = g.const({ dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(plan.config.seed)) }, 'lora_seed');
  attachAdapters(g, sites, (s) => ({ A: param(loraAName(s.module)), B: param(loraBName(s.module)) }), {
    scale: plan.scale,
    dropout: ratio > 0 ? { ratio, seed, step } : undefined,
  });
  const bq = plan.config.baseQuantization ?? 'none';
  if (bq === 'int4') throw new EngineError('config', `lora.baseQuantization: int4 is supported on GPT checkpoints only; an imported .onnx base takes int8 or none`);
  if (bq !== 'none') quantizeBaseInitializers(g);
  g.outputs.length = 0; // the step's outputs are the optimizer's, plus the loss
  const outputs = Object.fromEntries(outputNames.map((n) => [n, g.value(n)]));
  const nModelInputs = g.inputs.length;
  const lossValue = loss(g, outputs);
  if (lossValue.shape && lossValue.shape.length !== 0) throw new Error(`lora: loss ${lossValue.name} must be a scalar, got [${lossValue.shape.join(', ')}]`);
  const batchInputs = [...g.inputs.slice(0, nBefore), ...g.inputs.slice(nModelInputs)].map((v) => v.name);
  const forwardEnd = g.nodes.length;
  const wrt = plan.adapterParams.map((s) => params.get(s.name)!);
  const grads = gradients(g, lossValue, wrt);
  const backwardEnd = g.nodes.length;
  const entries = plan.adapterParams.map((s) => ({ name: s.name, param: params.get(s.name)!, grad: grads.get(paramIn(s.name))! }));
  const { state } = appendOptimizer(g, optim, entries, step);
  g.output(lossValue, 'loss');
  return { graph: g, plan, trainable: plan.adapterParams, frozen: [], state, batchInputs, phases: { forward: forwardEnd, backward: backwardEnd } };
}

/**
 * `baseQuantization: 'int8'` on an imported graph: its float MatMul weights (initializers) become
 * int8 ones (quantized-base.ts), and the float copies leave the file.
 */
function quantizeBaseInitializers(g: Graph): void {
  const floatInit = (v: string): Float32Array | undefined => {
    const t = g.initializers.get(v);
    if (!t || t.dtype !== 'float32') return undefined;
    return t.data instanceof Float32Array ? t.data : new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
  };
  const replaced = quantizeFrozenLinears(g, floatInit);
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const name of replaced) {
    if (read.has(name)) continue;
    g.initializers.delete(name);
    g.values.delete(name);
  }
}
