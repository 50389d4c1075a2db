// Inference-graph export of a GPT domain-head classifier (classification-head.ts) for quantization
// and serving, on symbolic dims as export.ts builds GPT decoders (no key/value cache: a classifier
// reads each document once):
//   inputs  input_ids int64 (batch, seq): documents padded on the right;
//           last_token int64 (batch): the position of each row's last real token
//   outputs logits (batch, n_classes): score.weight over the hidden state at last_token
// Weights are initializers, so int8 passes (engine/quant) find every Linear's weight.

import { Graph } from '../graph/ir';
import { add, gather, mul, unsqueeze } from '../graph/ops';
import { domainConfigOf, domainGptParams, type DomainHeadVariant } from './classification-head';
import { initializerParams } from './export';
import { embed, gptOptions, ropeConsts, transformer, type ForwardContext, type GptConfig } from './gpt';
import { hfLinear } from './layers';

export function exportDomainGpt(gpt: GptConfig, head: DomainHeadVariant, weights: Map<string, Float32Array>, graphName = 'gpt_domain_head'): Graph {
  const cfg = domainConfigOf(gpt, head);
  const o = gptOptions(cfg.gpt);
  const hs = cfg.gpt.n_embd / cfg.gpt.n_head;
  const g = new Graph(graphName);
  const p = initializerParams(g, domainGptParams(cfg), weights, 'exportDomainGpt');
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const last = g.input('last_token', 'int64', ['batch']);

  const idsShape = g.op('Shape', [ids])[0]; // [batch, seq]
  const batch = g.op('Gather', [idsShape, g.scalar(0, 'int64')], { axis: 0 })[0]; // scalar batch
  const seqLen = g.op('Gather', [idsShape, g.scalar(1, 'int64')], { axis: 0 })[0]; // scalar seq
  const one = g.scalar(1, 'int64');
  const pos = g.op('Range', [g.scalar(0, 'int64'), seqLen, one])[0]; // (seq)
  // Query i may attend to key j when j <= i: (seq, 1) >= (1, seq) → (seq, seq).
  const allowed = g.op('GreaterOrEqual', [unsqueeze(pos, [1]), unsqueeze(pos, [0])])[0];
  const ctx: ForwardContext = {
    bt: [idsShape],
    mask: g.op('Where', [allowed, g.scalar(0), g.scalar(-Infinity)])[0], // (seq, seq)
    rope: o.pos === 'rope' ? ropeConsts(g, cfg.gpt.block_size, hs, o.ropeTheta, pos) : null,
    dropout: null,
  };
  const { hidden } = transformer(cfg.gpt, embed(cfg.gpt, ids, p, pos), p, ctx); // (batch·seq, C)
  // Row b's last real token is flat row b·seq + last_token[b].
  const rows = add(mul(g.op('Range', [g.scalar(0, 'int64'), batch, one])[0], seqLen), last); // (batch)
  g.output(hfLinear(gather(hidden, rows), p, 'score', false), 'logits'); // (batch, C) @ (n_classes, C)ᵀ → (batch, n_classes)
  return g;
}
