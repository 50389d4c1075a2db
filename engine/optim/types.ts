// The contract between the optimizer driver (index.ts, flat.ts) and each update rule. A rule is
// split in two so the same arithmetic serves both layouts: `step` is everything that does not
// need the parameter's own shape (moments, bias correction, clipping, coupled decay) and can run
// once over a flat buffer; `apply` is the final p ← p' − delta, which runs per parameter tensor so
// `param_out:<name>` is written straight into the StepRunner's buffer.

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

export interface StepTarget {
  grad: Value;
  /** grad ⊙ grad, already computed for the global norm (unscaled, like `grad`). */
  gradSquared: Value;
  /** Optimizer state inputs by slot name, shaped like `grad`. */
  state: Record<string, Value>;
  /**
   * For a rule whose weight decay enters the gradient (SGD's coupled L2): the parameter values
   * the decay acts on, shaped like `grad` (zeros where a flat buffer holds undecayed tensors), or
   * null when nothing decays. Rules with decoupled decay (AdamW) ignore it and decay in `apply`.
   */
  decayed: Value | null;
  /** Output names the new state must carry (the StepRunner's `state_out:`). */
  stateOut: Record<string, string>;
}

export interface OptimizerImpl {
  /** State tensors per parameter, each shaped like the parameter and zero-initialized. */
  slots: string[];
  /** Whether `step` reads `decayed` (coupled decay); the flat driver only builds it then. */
  coupledDecay: boolean;
  prepare(s: StepScalars): SharedScalars;
  /** New state and the update `delta` (shaped like `grad`) such that p_new = apply(p, delta). */
  step(k: SharedScalars, t: StepTarget): { delta: Value; state: Record<string, Value> };
  /** p_new from p and its (reshaped) slice of delta; `decay` says whether p is weight-decayed. */
  apply(k: SharedScalars, param: Value, delta: Value, decay: boolean, outName: string): Value;
}
