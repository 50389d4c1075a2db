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
import type { OptimizerImpl } from './types';

export { AdamWSchema, type AdamWConfig } from './adamw';
export { SgdSchema, type SgdConfig } from './sgd';
export { ScheduleSchema, scheduledLr, type Schedule } from './schedule';
export { clipFactor, globalNorm } from './clip';

/** Which parameters get weight decay. nanoGPT's rule is the default: every tensor of rank ≥ 2. */
export const DecayRuleSchema = z.object({
  min_rank: z.number().int().nonnegative().default(2),
  /** Regexes; a parameter whose name matches any is never decayed (e.g. "^(wte|wpe)$" for embeddings). */
  exclude: z.array(z.string()).default([]),
});
export type DecayRule = z.infer<typeof DecayRuleSchema>;

export const OptimConfigSchema = z.object({
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

/**
 * Appends the optimizer update for every entry and marks the outputs `param_out:<name>`,
 * `state_out:<key>`, `grad_norm` and `lr`. Declares the `state:<key>` inputs (zeros at step 0).
 * @example appendOptimizer(g, OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } }), entries, step)
 */
export function appendOptimizer(g: Graph, cfg: OptimConfig, entries: OptimizerEntry[], step: Value): AppendedOptimizer {
  const impl = optimizerImpl(cfg);
  const { norm: gradNorm, squares } = globalNorm(entries.map((e) => e.grad));
  const gradScale = cfg.grad_clip === null ? null : clipFactor(gradNorm, cfg.grad_clip);
  const lr = scheduledLr(step, cfg.optimizer.lr, cfg.schedule);
  const shared = impl.prepare({ lr, step, gradScale });
  const state: StateSpec[] = [];
  for (const [i, e] of entries.entries()) {
    const shape = knownShape(e.param);
    const inputs: Record<string, Value> = {};
    const outs: Record<string, string> = {};
    for (const slot of impl.slots) {
      const key = stateKey(e.name, slot);
      inputs[slot] = g.input(stateIn(key), 'float32', shape);
      outs[slot] = stateOut(key);
      state.push({ key, shape });
    }
    const r = impl.update(shared, {
      name: e.name,
      param: e.param,
      grad: e.grad,
      gradSquared: squares[i],
      state: inputs,
      decay: decays(cfg.decay, e.name, shape),
      paramOut: paramOut(e.name),
      stateOut: outs,
    });
    g.output(r.param);
    for (const slot of impl.slots) g.output(r.state[slot]);
  }
  return { gradNorm: g.output(gradNorm, 'grad_norm'), lr: g.output(lr, 'lr'), state };
}

function knownShape(v: Value): number[] {
  if (!v.shape || v.shape.some((d) => typeof d !== 'number')) {
    throw new Error(`optimizer: parameter ${v.name} needs a fully known shape, got [${v.shape?.join(', ')}]`);
  }
  return v.shape as number[];
}
