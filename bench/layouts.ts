// Optimizer layout variants the step and optim benchmarks time side by side, parsed from
// `--layouts per-tensor,flat,flat:65536`: `flat` uses the default DEFAULT_FLAT_MAX_NUMEL,
// `flat:<n>` keeps tensors above n elements on their own chain, `flat:all` puts every tensor in
// the flat buffer.

import type { AppendOptimizerOptions } from '../engine/optim';

export interface LayoutVariant {
  name: string;
  opts: AppendOptimizerOptions;
}

export function parseLayouts(list: string): LayoutVariant[] {
  return list.split(',').map((name) => {
    if (name === 'per-tensor' || name === 'flat') return { name, opts: { layout: name } };
    const m = /^flat:(all|\d+)$/.exec(name);
    if (!m) throw new Error(`--layouts: unknown layout "${name}" (per-tensor, flat, flat:<max elements>, flat:all)`);
    return { name, opts: { layout: 'flat', flatMaxNumel: m[1] === 'all' ? Infinity : Number(m[1]) } };
  });
}
