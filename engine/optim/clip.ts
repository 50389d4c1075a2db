// Global-norm gradient clipping (torch.nn.utils.clip_grad_norm_ semantics). The clip factor is
// returned as a scalar and folded into the optimizer's own scalar coefficients, so clipping costs
// no extra pass over the gradients.

import type { Value } from '../graph/ir';
import { add, div, mul, reduceSum, sqrt } from '../graph/ops';

/**
 * ‖(g₁, …, gₙ)‖₂ over all gradients, as a float32 scalar, plus each gᵢ ⊙ gᵢ so an optimizer that
 * needs squared gradients (Adam's second moment) reuses them instead of a second pass.
 */
export function globalNorm(grads: Value[]): { norm: Value; squares: Value[] } {
  if (grads.length === 0) throw new Error('globalNorm: no gradients');
  let total: Value | null = null;
  const squares: Value[] = [];
  for (const gr of grads) {
    const rank = gr.shape?.length;
    if (rank === undefined) throw new Error(`globalNorm: gradient ${gr.name} has unknown rank`);
    const sq = mul(gr, gr);
    squares.push(sq);
    const s = rank === 0 ? sq : reduceSum(sq, Array.from({ length: rank }, (_, i) => i), false); // scalar
    total = total ? add(total, s) : s;
  }
  return { norm: sqrt(total!), squares };
}

/** min(1, max_norm / (norm + 1e-6)); multiply every gradient by it to clip. */
export function clipFactor(norm: Value, maxNorm: number): Value {
  const g = norm.graph;
  const raw = div(g.scalar(maxNorm), add(norm, g.scalar(1e-6)));
  return g.op('Min', [g.scalar(1), raw])[0];
}
