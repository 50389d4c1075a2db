// The training-step graph: forward → loss → reverse-mode gradients → optimizer update, so one
// `session.run` is one full step: (params, optimizer state, batch, step) → (new params, new
// state, loss, grad_norm, lr). Names follow the StepRunner contract (see engine/optim/index.ts).

import '../autodiff/rules';
import { gradients } from '../autodiff/gradients';
import { Graph, type TensorData, type Value } from '../graph/ir';
import type { ParamLookup, ParamSpec } from '../models/blocks';
import { appendOptimizer, paramIn, type AppendOptimizerOptions, type OptimConfig, type StateSpec } from '../optim';
import { checkpointRanges, type ActivationCheckpointing } from './checkpointing';
import { mixedGradients, type MixedPrecision } from './precision';

/** A model as the trainer sees it: its weights, and a function that builds the scalar loss. */
export interface TrainableModel {
  params: ParamSpec[];
  /** Declares the batch inputs on `g` and returns the scalar loss, reading weights through `p`. */
  loss(g: Graph, p: ParamLookup): Value;
  /**
   * Fixed tensors the loss may declare as `frozen:<name>` inputs of any dtype (a LoRA base's
   * quantized weights, engine/lora/quantized-base.ts). Those the step reads are in TrainStep.fixed.
   */
  fixed?: Map<string, TensorData>;
}

export interface TrainStepOptions {
  /** Which parameters the optimizer updates (default: all). Frozen ones are inputs `frozen:<name>`. */
  trainable?: (name: string) => boolean;
  graphName?: string;
  /** Passed to appendOptimizer (e.g. `{ layout: 'flat' }`). */
  optimizer?: AppendOptimizerOptions;
  /** Recompute transformer blocks in the backward instead of keeping their activations (checkpointing.ts); default off. */
  activationCheckpointing?: ActivationCheckpointing;
  /** Half-precision forward and backward over fp32 master weights, with loss scaling for fp16 (precision.ts); default fp32. */
  precision?: MixedPrecision;
}

export interface TrainStep {
  graph: Graph;
  /** Updated parameters, in input order: `param:<name>` → `param_out:<name>`. */
  trainable: ParamSpec[];
  /** Parameters fed as `frozen:<name>` and never updated. */
  frozen: ParamSpec[];
  /** Fixed non-parameter tensors fed as `frozen:<name>` (TrainableModel.fixed the step reads). */
  fixed?: Map<string, TensorData>;
  /**
   * Optimizer state per tensor (zeros at step 0), as the StepRunner and checkpoints name it:
   * `state:<key>` → `state_out:<key>`, or views into `state:@flat.<slot>` in the flat layout.
   */
  state: StateSpec[];
  /** Batch input names the model declared (e.g. tokens, targets). */
  batchInputs: string[];
  /** Node-index boundaries: nodes [0, forward) are the forward pass, [forward, backward) the backward, the rest the optimizer. */
  phases: { forward: number; backward: number };
}

export const frozenIn = (name: string) => `frozen:${name}`;

/**
 * Builds the one-graph training step.
 * @example const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, 12, 64) }, optim)
 */
export function buildTrainStep(model: TrainableModel, optim: OptimConfig, opts: TrainStepOptions = {}): TrainStep {
  const g = new Graph(opts.graphName ?? 'train_step');
  const isTrainable = opts.trainable ?? (() => true);
  const values = new Map<string, Value>();
  const trainable: ParamSpec[] = [];
  const frozen: ParamSpec[] = [];
  for (const s of model.params) {
    if (values.has(s.name)) throw new Error(`buildTrainStep: parameter "${s.name}" is listed twice`);
    const train = isTrainable(s.name);
    (train ? trainable : frozen).push(s);
    values.set(s.name, g.input(train ? paramIn(s.name) : frozenIn(s.name), 'float32', s.shape));
  }
  if (trainable.length === 0) throw new Error('buildTrainStep: no trainable parameters');
  const step = g.input('step', 'float32', []);
  const nBefore = g.inputs.length;
  const used = new Set<string>();
  const lookup: ParamLookup = (name) => {
    const v = values.get(name);
    if (!v) throw new Error(`buildTrainStep: the model reads parameter "${name}", which is not in its parameter list`);
    used.add(name);
    return v;
  };
  const loss = model.loss(g, lookup);
  if (loss.shape && loss.shape.length !== 0) throw new Error(`buildTrainStep: loss ${loss.name} must be a scalar, got [${loss.shape.join(', ')}]`);
  const unused = trainable.filter((s) => !used.has(s.name)).map((s) => s.name);
  if (unused.length) throw new Error(`buildTrainStep: trainable parameters never read by the model: ${unused.join(', ')}`);
  const batchInputs = g.inputs.slice(nBefore).map((v) => v.name);

  const forwardEnd = g.nodes.length;
  const wrt = trainable.map((s) => values.get(s.name)!);
  const recompute = checkpointRanges(g, opts.activationCheckpointing);
  const mixed = opts.precision ? mixedGradients(g, loss, wrt, step, opts.precision, { recompute }) : null;
  const grads = mixed ? mixed.grads : gradients(g, loss, wrt, { recompute });
  const backwardEnd = g.nodes.length;
  const entries = trainable.map((s) => {
    const param = values.get(s.name)!;
    const grad = grads.get(param.name);
    if (!grad) throw new Error(`buildTrainStep: no gradient reached parameter "${s.name}"`);
    return { name: s.name, param, grad };
  });
  const scaling = mixed?.scaling;
  const guard = scaling ? { skipIf: scaling.skipOn, optimizerStep: scaling.optimizerStep } : {};
  const { state } = appendOptimizer(g, optim, entries, step, { ...opts.optimizer, ...guard });
  if (scaling) {
    scaling.finish();
    state.push(...scaling.state);
  }
  g.output(mixed ? mixed.autocast.float32(loss) : loss, 'loss');
  // Drop what no output reads (gradient branches for inputs that need none): ORT would run it
  // last and keep the activations it reads alive until then.
  const forwardNodes = new Set(g.nodes.slice(0, forwardEnd));
  const backwardNodes = new Set(g.nodes.slice(forwardEnd, backwardEnd));
  g.prune();
  dropUnreadFrozen(g, frozen);
  const fixed = model.fixed ? keepReadFixed(g, model.fixed) : undefined;
  const phases = { forward: g.nodes.filter((n) => forwardNodes.has(n)).length, backward: 0 };
  phases.backward = phases.forward + g.nodes.filter((n) => backwardNodes.has(n)).length;
  return { graph: g, trainable, frozen, fixed, state, batchInputs, phases };
}

/** The fixed tensors whose `frozen:` input a node reads; declared inputs nothing reads are dropped. */
function keepReadFixed(g: Graph, fixed: Map<string, TensorData>): Map<string, TensorData> {
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  const hasSubgraph = g.nodes.some((n) => Object.values(n.attrs).some((a) => a.type === 'graph'));
  const declared = new Set(g.inputs.map((v) => v.name));
  const unread = new Set([...fixed.keys()].map(frozenIn).filter((n) => declared.has(n) && !read.has(n) && !hasSubgraph));
  if (unread.size) {
    g.inputs.splice(0, g.inputs.length, ...g.inputs.filter((v) => !unread.has(v.name)));
    for (const name of unread) g.values.delete(name);
  }
  return new Map([...fixed].filter(([name]) => declared.has(frozenIn(name)) && !unread.has(frozenIn(name))));
}

/**
 * Frozen weights no node reads any more (a LoRA base whose linear layers were quantized into
 * initializers, engine/lora/quantized-base.ts) stop being inputs, so nobody feeds or keeps them.
 * Left alone when a node has a subgraph, whose outer-scope reads are not in its inputs.
 */
function dropUnreadFrozen(g: Graph, frozen: ParamSpec[]): void {
  if (g.nodes.some((n) => Object.values(n.attrs).some((a) => a.type === 'graph'))) return;
  const read = new Set(g.nodes.flatMap((n) => n.inputs));
  const unread = new Set(frozen.filter((s) => !read.has(frozenIn(s.name))).map((s) => frozenIn(s.name)));
  if (unread.size === 0) return;
  g.inputs.splice(0, g.inputs.length, ...g.inputs.filter((v) => !unread.has(v.name)));
  for (const name of unread) g.values.delete(name);
  frozen.splice(0, frozen.length, ...frozen.filter((s) => !unread.has(frozenIn(s.name))));
}
