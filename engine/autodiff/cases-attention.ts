// Gradcheck cases for fused attention: com.microsoft MultiHeadAttention with its blockwise
// backward (rules/attention.ts). ORT's CPU kernel is float32 only (a float64 graph is refused:
// "Type 'tensor(double)' of input parameter (q) of operator (MultiHeadAttention) ... is
// invalid", onnxruntime-node 1.30), so these are float32 cases
// with a reference (forward and element-wise gradient against float64 differences of
// R.multiHeadAttention), like Erf's; the float64 check of the same backward against the explicit
// attention's autodiff is in test/engine/fused-attention.test.ts.

import type { OpCase } from './cases-core';
import type { Build } from './gradcheck';
import * as R from './reference';
import { flashAttention } from './rules/attention';

/** MHA over (B, T, nh·hs) q, k, v; sets the backward's query block when the graph is built. */
const mha = (nh: number, causal: boolean, queryBlock: number): Build => (g, [q, k, v]) => {
  flashAttention.queryBlock = queryBlock;
  return g.op('MultiHeadAttention', [q, k, v], { num_heads: nh, unidirectional: causal ? 1 : 0 }, { domain: 'com.microsoft' })[0];
};

const shapes = [[2, 7, 8], [2, 7, 8], [2, 7, 8]];

export const attentionCases: OpCase[] = [
  {
    name: 'MultiHeadAttention causal, query blocks 3+3+1',
    op: 'MultiHeadAttention',
    shapes,
    build: mha(2, true, 3),
    opts: { dtype: 'float32', reference: ([q, k, v]) => R.multiHeadAttention(q, k, v, 2, true) },
  },
  {
    name: 'MultiHeadAttention causal, one query block',
    op: 'MultiHeadAttention',
    shapes,
    build: mha(2, true, 128),
    opts: { dtype: 'float32', reference: ([q, k, v]) => R.multiHeadAttention(q, k, v, 2, true) },
  },
  {
    name: 'MultiHeadAttention bidirectional, query blocks 4+3',
    op: 'MultiHeadAttention',
    shapes,
    build: mha(4, false, 4),
    opts: { dtype: 'float32', reference: ([q, k, v]) => R.multiHeadAttention(q, k, v, 4, false) },
  },
];
