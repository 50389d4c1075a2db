// The flat layout of the optimizer update. Instead of ~12 elementwise ops per parameter tensor,
// the gradients are concatenated once into one 1-D buffer and the clip norm, both moment updates,
// bias correction and the update direction are each one op over that buffer. The optimizer state
// lives flat too: one graph input `state:@flat.<slot>` per slot, covering, in the graph's
// `param:` input order, every trainable parameter that has no `state:<param>.<slot>` input of its
// own (tensors above `flatMaxNumel` keep their own chain, see index.ts), so moments are never
// concatenated or split.
//
// Parameters stay per-tensor graph inputs: the forward reads them per tensor, and a flat
// parameter buffer would cost a Slice copy per tensor every step plus a layout the StepRunner
// could not derive from the session. The last op, p ← p·(1 − lr·λ) − delta, therefore runs per
// tensor on a Split of delta; that is also where decoupled weight decay goes, so decay needs no
// mask buffer. The StepRunner maps `@flat.<slot>` back to per-tensor views `<param>.<slot>`, so
// checkpoints and every caller still see per-tensor state (see engine/runtime/step-runner.ts).

import type { Graph, Value } from '../graph/ir';
import { flatStateKey, paramIn, paramOut, stateIn, stateOut } from './names';
import type { OptimizerImpl, SharedScalars } from './types';

export interface FlatMember {
  name: string;
  param: Value;
  grad: Value;
  shape: number[];
  decay: boolean;
}

export interface FlatPlan {
  /** The one gradient the global norm is taken over. */
  grad: Value;
  /** Appends the update once the shared scalars exist; `gradSquared` is grad ⊙ grad from the norm. */
  run(shared: SharedScalars, gradSquared: Value): void;
  /** Flat state inputs by slot; the graph output of each is `state_out:@flat.<slot>`. */
  stateOut: string[];
  /** Where each member sits in the flat buffers, in buffer order. */
  members: { name: string; offset: number; size: number }[];
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Plans the flat update of `members`. The buffer order is the graph's `param:` input order, the
 * order the StepRunner sees, so each member must be a graph input named `param:<name>`; the
 * caller declares no per-tensor state input for a member.
 */
export function planFlat(g: Graph, impl: OptimizerImpl, members: FlatMember[]): FlatPlan {
  const position = new Map(g.inputs.map((v, i) => [v.name, i]));
  for (const m of members) {
    if (m.param.name !== paramIn(m.name) || !position.has(m.param.name)) {
      throw new Error(`optimizer (flat layout): parameter "${m.name}" must be the graph input "${paramIn(m.name)}" (got "${m.param.name}"); use layout 'per-tensor' otherwise`);
    }
  }
  const ordered = [...members].sort((a, b) => position.get(a.param.name)! - position.get(b.param.name)!);
  const sizes = ordered.map((m) => numel(m.shape));
  const total = sizes.reduce((a, b) => a + b, 0);
  let offset = 0;
  const layout = ordered.map((m, i) => ({ name: m.name, offset: (offset += sizes[i]) - sizes[i], size: sizes[i] }));

  const flatten = (v: Value) => (v.shape!.length === 1 ? v : g.op('Reshape', [v, g.vector([-1])])[0]);
  const cat = (xs: Value[]) => (xs.length === 1 ? xs[0] : g.op('Concat', xs, { axis: 0 })[0]); // n × (dᵢ) → (Σdᵢ)
  const grad = cat(ordered.map((m) => flatten(m.grad)));
  const state = Object.fromEntries(impl.slots.map((s) => [s, g.input(stateIn(flatStateKey(s)), 'float32', [total])]));
  const outs = Object.fromEntries(impl.slots.map((s) => [s, stateOut(flatStateKey(s))]));

  const run = (shared: SharedScalars, gradSquared: Value) => {
    // SGD's coupled decay reads p inside the flat update: zeros stand in for undecayed tensors
    // (ORT folds the zero Expands into constants; the Concat is one extra copy per step).
    let decayed: Value | null = null;
    if (impl.coupledDecay && ordered.some((m) => m.decay)) {
      decayed = cat(ordered.map((m) => (m.decay ? flatten(m.param) : g.op('Expand', [g.scalar(0), g.vector([numel(m.shape)])])[0])));
    }
    const { delta } = impl.step(shared, { grad, gradSquared, state, decayed, stateOut: outs });
    // (Σdᵢ) → n × (dᵢ), each viewed in its parameter's shape (a Reshape is an alias in ORT).
    const parts = ordered.length === 1 ? [delta] : g.op('Split', [delta, g.vector(sizes)], { axis: 0 }, { outputs: ordered.length });
    ordered.forEach((m, i) => {
      const d = m.shape.length === 1 ? parts[i] : g.op('Reshape', [parts[i], g.vector(m.shape)])[0];
      impl.apply(shared, m.param, d, m.decay, paramOut(m.name));
    });
  };
  return { grad, run, stateOut: impl.slots.map((s) => outs[s]), members: layout };
}
