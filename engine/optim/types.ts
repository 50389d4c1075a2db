// The contract between the optimizer driver (index.ts) and each update rule.

import type { Value } from '../graph/ir';

export interface StepScalars {
  /** Learning rate for this step (scalar), already scheduled. */
  lr: Value;
  /** 0-based float32 step index (scalar). */
  step: Value;
  /** Global-norm clip factor (scalar), or null when clipping is off. */
  gradScale: Value | null;
}

/** Per-graph scalars an optimizer derives once from StepScalars (bias corrections, etc.). */
export type SharedScalars = Record<string, Value>;

export interface UpdateTarget {
  name: string;
  param: Value;
  grad: Value;
  /** grad ⊙ grad, already computed for the global norm (unscaled, like `grad`). */
  gradSquared: Value;
  /** Optimizer state inputs by slot name. */
  state: Record<string, Value>;
  /** Whether weight decay applies to this parameter. */
  decay: boolean;
  /** Output names the final ops must carry (the StepRunner's `param_out:` / `state_out:`). */
  paramOut: string;
  stateOut: Record<string, string>;
}

export interface OptimizerImpl {
  /** State tensors per parameter, each shaped like the parameter and zero-initialized. */
  slots: string[];
  prepare(s: StepScalars): SharedScalars;
  update(k: SharedScalars, u: UpdateTarget): { param: Value; state: Record<string, Value> };
}
