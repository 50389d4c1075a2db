// Optimizer config (one zod schema) and the driver that appends a full update after the
// backward pass: global grad norm → clip factor → scheduled LR → per-parameter update ops.
// Inputs and outputs follow the StepRunner contract: `state:<param>.<slot>` → `state_out:…`,
// `param_out:<param>`, plus scalar outputs `grad_norm` (before clipping) and `lr`.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { adamw, AdamWSchema } from './adamw';
import { clipFactor, globalNorm } from './clip';
import { scheduledLr, ScheduleSchema } from './schedule';
import { sgd, SgdSchema } from './sgd';
import type { OptimizerImpl, SharedScalars } from './types';

export { AdamWSchema, type AdamWConfig } from './adamw';
export { SgdSchema, type SgdConfig } from './sgd';
export { ScheduleSchema, scheduledLr, type Schedule } from './schedule';
export { clipFactor, globalNorm } from './clip';

/** Which parameters get weight decay. nanoGPT's rule is the default: every tensor of rank ≥ 2. */
export const DecayRuleSchema = z.strictObject({
  min_rank: z.number().int().nonnegative().default(2),
  /** Regexes; a parameter whose name matches any is never decayed (e.g. "^(wte|wpe)$" for embeddings). */
  exclude: z.array(z.string()).default([]),
});
export type DecayRule = z.infer<typeof DecayRuleSchema>;

export const OptimConfigSchema = z.strictObject({
  optimizer: z.discriminatedUnion('kind', [AdamWSchema, SgdSchema]),
  schedule: ScheduleSchema.default({ kind: 'constant' }),
  /** Max global gradient L2 norm; null turns clipping off (grad_norm is still reported). */
  grad_clip: z.number().positive().nullable().default(null),
  decay: DecayRuleSchema.default({ min_rank: 2, exclude: [] }),
});
export type OptimConfig = z.infer<typeof OptimConfigSchema>;
export type OptimConfigInput = z.input<typeof OptimConfigSchema>;

export const paramIn = (name: string) => `param:${name}`;
export const paramOut = (name: string) => `param_out:${name}`;
export const stateIn = (key: string) => `state:${key}`;
export const stateOut = (key: string) => `state_out:${key}`;
export const stateKey = (param: string, slot: string) => `${param}.${slot}`;

export function optimizerImpl(cfg: OptimConfig): OptimizerImpl {
  return cfg.optimizer.kind === 'adamw' ? adamw(cfg.optimizer) : sgd(cfg.optimizer);
}

/** Whether `name` (with `shape`) is weight-decayed under `rule`. */
export function decays(rule: DecayRule, name: string, shape: number[]): boolean {
  if (shape.length < rule.min_rank) return false;
  return !rule.exclude.some((re) => new RegExp(re).test(name));
}

export interface OptimizerEntry {
  name: string;
  param: Value;
  grad: Value;
}

export interface StateSpec {
  /** `<param>.<slot>`; graph input `state:<key>`, output `state_out:<key>`. */
  key: string;
  shape: number[];
}

export interface AppendedOptimizer {
  gradNorm: Value;
  lr: Value;
  state: StateSpec[];
}

export interface AppendOptimizerOptions {
  /**
   * Update all 1-D parameters (biases, LayerNorm) of the same decay class as one concatenated
   * vector: a handful of kernels instead of ~12 per parameter, which is most of the optimizer's
   * launch overhead on small models. Numerically identical (default true).
   */
  groupVectors?: boolean;
}

interface Member {
  entry: OptimizerEntry;
  shape: number[];
  decay: boolean;
  inputs: Record<string, Value>;
  outs: Record<string, string>;
}

/**
 * Appends the optimizer update for every entry and marks the outputs `param_out:<name>`,
 * `state_out:<key>`, `grad_norm` and `lr`. Declares the `state:<key>` inputs (zeros at step 0).
 * @example appendOptimizer(g, OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } }), entries, step)
 */
export function appendOptimizer(g: Graph, cfg: OptimConfig, entries: OptimizerEntry[], step: Value, opts: AppendOptimizerOptions = {}): AppendedOptimizer {
  const impl = optimizerImpl(cfg);
  const state: StateSpec[] = [];
  const members: Member[] = entries.map((entry) => {
    const shape = knownShape(entry.param);
    const inputs: Record<string, Value> = {};
    const outs: Record<string, string> = {};
    for (const slot of impl.slots) {
      const key = stateKey(entry.name, slot);
      inputs[slot] = g.input(stateIn(key), 'float32', shape);
      outs[slot] = stateOut(key);
      state.push({ key, shape });
    }
    return { entry, shape, decay: decays(cfg.decay, entry.name, shape), inputs, outs };
  });

  // Units of update: each grouped vector class becomes one flat pseudo-parameter.
  const groups = new Map<string, Member[]>();
  const single: Member[] = [];
  for (const m of members) {
    if (opts.groupVectors !== false && m.shape.length === 1) {
      const k = m.decay ? 'decay' : 'no_decay';
      groups.set(k, [...(groups.get(k) ?? []), m]);
    } else single.push(m);
  }
  const units: { grad: Value; run: (grad: Value, squares: Value, shared: SharedScalars) => void }[] = [];
  for (const m of single) units.push({ grad: m.entry.grad, run: (_, sq, shared) => updateOne(impl, shared, m, sq) });
  for (const [k, ms] of groups) {
    if (ms.length === 1) {
      units.push({ grad: ms[0].entry.grad, run: (_, sq, shared) => updateOne(impl, shared, ms[0], sq) });
      continue;
    }
    const cat = (xs: Value[]) => g.op('Concat', xs, { axis: 0 })[0]; // n × (dᵢ) → (Σdᵢ)
    units.push({ grad: cat(ms.map((m) => m.entry.grad)), run: (grad, sq, shared) => updateGroup(g, impl, shared, ms, grad, sq, cat, k) });
  }

  const { norm: gradNorm, squares } = globalNorm(units.map((u) => u.grad));
  const gradScale = cfg.grad_clip === null ? null : clipFactor(gradNorm, cfg.grad_clip);
  const lr = scheduledLr(step, cfg.optimizer.lr, cfg.schedule);
  const shared = impl.prepare({ lr, step, gradScale });
  units.forEach((u, i) => u.run(u.grad, squares[i], shared));
  // Outputs in entry order, so the graph's output list reads like its input list.
  for (const m of members) {
    g.output(g.value(paramOut(m.entry.name)));
    for (const slot of impl.slots) g.output(g.value(m.outs[slot]));
  }
  return { gradNorm: g.output(gradNorm, 'grad_norm'), lr: g.output(lr, 'lr'), state };
}

function updateOne(impl: OptimizerImpl, shared: SharedScalars, m: Member, gradSquared: Value): void {
  impl.update(shared, {
    name: m.entry.name,
    param: m.entry.param,
    grad: m.entry.grad,
    gradSquared,
    state: m.inputs,
    decay: m.decay,
    paramOut: paramOut(m.entry.name),
    stateOut: m.outs,
  });
}

function updateGroup(g: Graph, impl: OptimizerImpl, shared: SharedScalars, ms: Member[], grad: Value, gradSquared: Value, cat: (xs: Value[]) => Value, tag: string): void {
  const name = g.uniqueName(`vectors_${tag}`);
  const tmp = (slot: string) => g.uniqueName(`${name}.${slot}_out`);
  const stateOut = Object.fromEntries(impl.slots.map((s) => [s, tmp(s)]));
  const r = impl.update(shared, {
    name,
    param: cat(ms.map((m) => m.entry.param)),
    grad,
    gradSquared,
    state: Object.fromEntries(impl.slots.map((s) => [s, cat(ms.map((m) => m.inputs[s]))])),
    decay: ms[0].decay,
    paramOut: tmp('param'),
    stateOut,
  });
  const sizes = g.vector(ms.map((m) => m.shape[0]));
  const split = (flat: Value, names: string[]) => g.op('Split', [flat, sizes], { axis: 0 }, { outputs: names.length, outputNames: names }); // (Σdᵢ) → n × (dᵢ)
  split(r.param, ms.map((m) => paramOut(m.entry.name)));
  for (const slot of impl.slots) split(r.state[slot], ms.map((m) => m.outs[slot]));
}

function knownShape(v: Value): number[] {
  if (!v.shape || v.shape.some((d) => typeof d !== 'number')) {
    throw new Error(`optimizer: parameter ${v.name} needs a fully known shape, got [${v.shape?.join(', ')}]`);
  }
  return v.shape as number[];
}
