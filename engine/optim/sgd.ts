// SGD with momentum and Nesterov, torch.optim.SGD arithmetic (dampening 0; weight decay is the
// coupled L2 term torch uses for SGD):
//   d ← g + λp      b ← μb + d      d ← d + μb (Nesterov) or b      p ← p − lr·d
// With μ = 0 there is no state and the update is plain SGD. Also the outer optimizer of DiLoCo.

import { z } from 'zod';
import type { Value } from '../graph/ir';
import { add, mul } from '../graph/ops';
import type { OptimizerImpl, SharedScalars, StepTarget } from './types';

export const SgdSchema = z
  .strictObject({
    kind: z.literal('sgd'),
    lr: z.number().positive(),
    momentum: z.number().min(0).lt(1).default(0),
    nesterov: z.boolean().default(false),
    weight_decay: z.number().nonnegative().default(0),
  })
  .refine((c) => !c.nesterov || c.momentum > 0, { path: ['nesterov'], message: 'needs momentum > 0' });
export type SgdConfig = z.infer<typeof SgdSchema>;

export function sgd(cfg: SgdConfig): OptimizerImpl {
  return {
    slots: cfg.momentum > 0 ? ['momentum'] : [],
    coupledDecay: cfg.weight_decay > 0,
    prepare({ lr, gradScale }): SharedScalars {
      return gradScale ? { lr, gradScale } : { lr };
    },
    step(k: SharedScalars, u: StepTarget) {
      const g = u.grad.graph;
      const c = (x: number) => g.scalar(x);
      let d = k.gradScale ? mul(u.grad, k.gradScale) : u.grad;
      if (u.decayed && cfg.weight_decay > 0) d = add(d, mul(u.decayed, c(cfg.weight_decay)));
      const state: Record<string, Value> = {};
      if (cfg.momentum > 0) {
        const b = g.op('Add', [mul(u.state.momentum, c(cfg.momentum)), d], {}, { outputNames: [u.stateOut.momentum] })[0];
        state.momentum = b;
        d = cfg.nesterov ? add(d, mul(b, c(cfg.momentum))) : b;
      }
      return { delta: mul(d, k.lr), state };
    },
    apply(_k, param, delta, _decay, outName) {
      return param.graph.op('Sub', [param, delta], {}, { outputNames: [outName] })[0];
    },
  };
}
