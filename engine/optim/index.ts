// Optimizer config (one zod schema) and the driver that appends a full update after the
// backward pass: global grad norm → clip factor → scheduled LR → update ops, in one of two
// layouts (flat.ts explains the flat one). Inputs and outputs follow the StepRunner contract:
// `param_out:<param>`, state `state:<param>.<slot>` → `state_out:…` (per-tensor layout) or
// `state:@flat.<slot>` (flat layout, seen per tensor through the StepRunner), plus scalar outputs
// `grad_norm` (before clipping) and `lr`.

import { z } from 'zod';
import type { Graph, Value } from '../graph/ir';
import { adamw, AdamWSchema } from './adamw';
import { clipFactor, globalNorm } from './clip';
import { planFlat } from './flat';
import { FLAT_KEY_PREFIX, paramOut, stateIn, stateKey, stateOut } from './names';
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

export { flatStateKey, paramIn, paramOut, stateIn, stateKey, stateOut } from './names';

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
  /**
   * `<param>.<slot>`: how the StepRunner, checkpoints and callers name this state tensor in both
   * layouts. Per-tensor layout: graph input `state:<key>`, output `state_out:<key>`; flat layout:
   * a view into `state:@flat.<slot>`.
   */
  key: string;
  shape: number[];
}

/**
 * `per-tensor`: every parameter tensor gets its own chain of elementwise ops and its own state
 * inputs. `flat`: one chain over a flat buffer of the gradients and moments of every tensor of at
 * most `flatMaxNumel` elements (flat.ts); larger tensors keep their own chain. The two agree to
 * float32 rounding (test/engine/optim-flat.test.ts); bench/RESULTS.md has the timings.
 */
export type OptimLayout = 'per-tensor' | 'flat';
/** Flat: never slower than per-tensor in the step and optimizer benchmarks, faster wherever tensors are small (small GPT, LoRA). */
export const DEFAULT_LAYOUT: OptimLayout = 'flat';
/**
 * Tensors above this size keep their own op chain in the flat layout. Each op is then big enough
 * that a kernel launch costs nothing next to it, and a chain over one tensor stays in cache while
 * passes over one large flat buffer all go to memory (measured: bench/RESULTS.md).
 */
export const DEFAULT_FLAT_MAX_NUMEL = 2 ** 18;

export interface AppendedOptimizer {
  gradNorm: Value;
  lr: Value;
  /** Per-tensor state, whatever the layout (the StepRunner's view of it). */
  state: StateSpec[];
  layout: OptimLayout;
  /** Flat layout: each flat-updated parameter's offset and size in the `@flat.<slot>` buffers, in buffer order. */
  flat?: { name: string; offset: number; size: number }[];
}

export interface AppendOptimizerOptions {
  /** Update layout (default DEFAULT_LAYOUT). */
  layout?: OptimLayout;
  /** Flat layout only: tensors with more elements keep their own chain (default DEFAULT_FLAT_MAX_NUMEL). */
  flatMaxNumel?: number;
  /**
   * Per-tensor layout only: update all 1-D parameters (biases, LayerNorm) of the same decay
   * class as one concatenated vector: a handful of kernels instead of ~12 per parameter, which is
   * most of the optimizer's launch overhead on small models. Numerically identical (default true).
   */
  groupVectors?: boolean;
  /**
   * Mixed precision's overflow guard (engine/train/precision.ts): given the global gradient norm,
   * a bool scalar that is true when the step must not update; then every `param_out:` and
   * `state_out:` equals its input (a Where per output), bit for bit.
   */
  skipIf?: (gradNorm: Value) => Value;
  /** The step Adam's bias correction counts (default `step`; mixed precision passes step − skipped steps). */
  optimizerStep?: Value;
}

interface Member {
  entry: OptimizerEntry;
  shape: number[];
  /** Updated in the flat buffer (flat layout, at most flatMaxNumel elements). */
  flat: boolean;
  decay: boolean;
  inputs: Record<string, Value>;
  outs: Record<string, string>;
}

type Unit = { grad: Value; run: (shared: SharedScalars, gradSquared: Value) => void };

/**
 * Appends the optimizer update for every entry and marks the outputs `param_out:<name>`, the
 * state outputs, `grad_norm` and `lr`. Declares the state inputs (zeros at step 0).
 * @example appendOptimizer(g, OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } }), entries, step, { layout: 'flat' })
 */
export function appendOptimizer(g: Graph, cfg: OptimConfig, entries: OptimizerEntry[], step: Value, opts: AppendOptimizerOptions = {}): AppendedOptimizer {
  const impl = optimizerImpl(cfg);
  const layout = opts.layout ?? DEFAULT_LAYOUT;
  const maxNumel = layout === 'flat' ? (opts.flatMaxNumel ?? DEFAULT_FLAT_MAX_NUMEL) : -1;
  const state: StateSpec[] = [];
  const members: Member[] = entries.map((entry) => {
    const shape = knownShape(entry.param);
    // The StepRunner reads any `state:@flat.…` input as a flat buffer, in either layout.
    if (entry.name.startsWith(FLAT_KEY_PREFIX)) throw new Error(`optimizer: parameter name "${entry.name}" clashes with the flat state keys (${FLAT_KEY_PREFIX}<slot>)`);
    const flat = shape.reduce((a, b) => a * b, 1) <= maxNumel;
    const inputs: Record<string, Value> = {};
    const outs: Record<string, string> = {};
    for (const slot of impl.slots) {
      const key = stateKey(entry.name, slot);
      // A tensor in the flat buffer has no state input of its own: that absence is how the
      // StepRunner knows which tensors `@flat.<slot>` holds.
      if (!flat) {
        inputs[slot] = g.input(stateIn(key), 'float32', shape);
        outs[slot] = stateOut(key);
      }
      state.push({ key, shape });
    }
    return { entry, shape, flat, decay: decays(cfg.decay, entry.name, shape), inputs, outs };
  });

  const units = perTensorUnits(g, impl, members.filter((m) => !m.flat), opts.groupVectors !== false);
  let flatOuts: string[] = [];
  let flatMembers: AppendedOptimizer['flat'];
  const inFlat = members.filter((m) => m.flat);
  if (inFlat.length) {
    const plan = planFlat(g, impl, inFlat.map((m) => ({ ...m.entry, shape: m.shape, decay: m.decay })));
    units.push(plan);
    flatOuts = plan.stateOut;
    flatMembers = plan.members;
  }

  const { norm: gradNorm, squares } = globalNorm(units.map((u) => u.grad));
  const gradScale = cfg.grad_clip === null ? null : clipFactor(gradNorm, cfg.grad_clip);
  const lr = scheduledLr(step, cfg.optimizer.lr, cfg.schedule);
  const shared = impl.prepare({ lr, step: opts.optimizerStep ?? step, gradScale });
  units.forEach((u, i) => u.run(shared, squares[i]));
  if (opts.skipIf) {
    const skip = opts.skipIf(gradNorm);
    const guard = (out: string, prev: Value) => {
      const updated = g.renameValue(out, g.uniqueName(`${out}.update`));
      g.op('Where', [skip, prev, updated], {}, { outputNames: [out] });
    };
    for (const m of members) {
      guard(paramOut(m.entry.name), m.entry.param);
      for (const slot of impl.slots) if (!m.flat) guard(m.outs[slot], m.inputs[slot]);
    }
    for (const name of flatOuts) guard(name, g.value(stateIn(name.slice('state_out:'.length))));
  }
  // Outputs in entry order, so the graph's output list reads like its input list.
  for (const m of members) {
    g.output(g.value(paramOut(m.entry.name)));
    for (const slot of impl.slots) if (!m.flat) g.output(g.value(m.outs[slot]));
  }
  for (const name of flatOuts) g.output(g.value(name));
  return { gradNorm: g.output(gradNorm, 'grad_norm'), lr: g.output(lr, 'lr'), state, layout, flat: flatMembers };
}

/** Units of the per-tensor layout: one per tensor, or one per grouped vector class. */
function perTensorUnits(g: Graph, impl: OptimizerImpl, members: Member[], groupVectors: boolean): Unit[] {
  const groups = new Map<string, Member[]>();
  const single: Member[] = [];
  for (const m of members) {
    if (groupVectors && m.shape.length === 1) {
      const k = m.decay ? 'decay' : 'no_decay';
      groups.set(k, [...(groups.get(k) ?? []), m]);
    } else single.push(m);
  }
  const units: Unit[] = [];
  for (const m of single) units.push({ grad: m.entry.grad, run: (shared, sq) => updateOne(impl, shared, m, sq) });
  for (const [k, ms] of groups) {
    if (ms.length === 1) {
      units.push({ grad: ms[0].entry.grad, run: (shared, sq) => updateOne(impl, shared, ms[0], sq) });
      continue;
    }
    const cat = (xs: Value[]) => g.op('Concat', xs, { axis: 0 })[0]; // n × (dᵢ) → (Σdᵢ)
    const grad = cat(ms.map((m) => m.entry.grad));
    units.push({ grad, run: (shared, sq) => updateGroup(g, impl, shared, ms, grad, sq, cat, k) });
  }
  return units;
}

function updateOne(impl: OptimizerImpl, shared: SharedScalars, m: Member, gradSquared: Value): void {
  const { param, grad } = m.entry;
  const { delta } = impl.step(shared, { grad, gradSquared, state: m.inputs, decayed: m.decay ? param : null, stateOut: m.outs });
  impl.apply(shared, param, delta, m.decay, paramOut(m.entry.name));
}

function updateGroup(g: Graph, impl: OptimizerImpl, shared: SharedScalars, ms: Member[], grad: Value, gradSquared: Value, cat: (xs: Value[]) => Value, tag: string): void {
  const name = g.uniqueName(`vectors_${tag}`);
  const tmp = (slot: string) => g.uniqueName(`${name}.${slot}_out`);
  const param = cat(ms.map((m) => m.entry.param));
  const state = Object.fromEntries(impl.slots.map((s) => [s, cat(ms.map((m) => m.inputs[s]))]));
  const r = impl.step(shared, { grad, gradSquared, state, decayed: ms[0].decay ? param : null, stateOut: Object.fromEntries(impl.slots.map((s) => [s, tmp(s)])) });
  const p2 = impl.apply(shared, param, r.delta, ms[0].decay, tmp('param'));
  const sizes = g.vector(ms.map((m) => m.shape[0]));
  const split = (flat: Value, names: string[]) => g.op('Split', [flat, sizes], { axis: 0 }, { outputs: names.length, outputNames: names }); // (Σdᵢ) → n × (dᵢ)
  split(p2, ms.map((m) => paramOut(m.entry.name)));
  for (const slot of impl.slots) split(r.state[slot], ms.map((m) => m.outs[slot]));
}

function knownShape(v: Value): number[] {
  if (!v.shape || v.shape.some((d) => typeof d !== 'number')) {
    throw new Error(`optimizer: parameter ${v.name} needs a fully known shape, got [${v.shape?.join(', ')}]`);
  }
  return v.shape as number[];
}
