// Control flow: Loop's shape rule. No gradient rule: autodiff never differentiates through a Loop;
// the K-step training graph (engine/train/ksteps.ts) wraps a step that already holds its backward.

import { Graph } from '../../graph/ir';
import { registerOp } from '../../graph/registry';
import { constInts, unknownDim } from './common';

// Loop(M, cond, v_initial...) -> (v_final..., scan_outputs...). The body maps
// (iteration_num, cond, v...) -> (cond, v..., scan...); each scan output stacks one value per
// iteration along a new leading axis of length M when M is a constant, a symbolic dim otherwise.
registerOp('Loop', {
  infer: (inputs, attrs, g) => {
    const body = attrs.body;
    if (!body || body.type !== 'graph' || !(body.value instanceof Graph)) throw new Error('Loop: needs a graph attribute "body"');
    const carried = inputs.slice(2);
    const nBodyOut = body.value.outputs.length;
    if (nBodyOut < 1 + carried.length) {
      throw new Error(`Loop: body ${body.value.name} has ${nBodyOut} outputs, fewer than cond + ${carried.length} loop-carried values`);
    }
    const carriedInfo = carried.map((v, i) => {
      if (!v) throw new Error(`Loop: loop-carried input ${i} is missing`);
      return { dtype: v.dtype, shape: v.shape ? [...v.shape] : null };
    });
    const trips = constInts(g, inputs[0]);
    const scans = body.value.outputs.slice(1 + carried.length).map((o) => ({
      dtype: o.dtype,
      shape: o.shape ? [trips?.length === 1 ? trips[0] : unknownDim(g, 'trips'), ...o.shape] : null,
    }));
    return [...carriedInfo, ...scans];
  },
});
