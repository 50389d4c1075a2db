// Exported ONNX bytes are a pure function of the spec and the weights (issue 15): symbolic dims are
// named by role (batch, seq, past), derived dims by expression (past+seq, batch*seq), and any other
// unknown size by a counter of its own graph that starts at 0, never a process-wide one; so two
// workers exporting the same model write the same bytes whatever else they built before.

import { onnx } from 'onnx-proto';
import { Graph, type Dim } from '../../engine/graph';
import { loadModel, serializeModel } from '../../engine/graph/onnx';
import { initParams } from '../../engine/models/blocks';
import { decoderInfo, exportGpt, presentKeyName, presentValueName } from '../../engine/models/export';
import { exportBert, exportT5 } from '../../engine/models/export-bert-t5';
import { bertMlmHeadParams, bertParams, BertConfigSchema } from '../../engine/models/bert';
import { GptConfigSchema, gptParams } from '../../engine/models/gpt';
import { t5Params, T5ConfigSchema } from '../../engine/models/t5';

const gptCfg = GptConfigSchema.parse({ vocab_size: 48, block_size: 16, n_layer: 2, n_head: 2, n_embd: 16 });
const gptWeights = initParams(gptParams(gptCfg), 3);
const bertCfg = BertConfigSchema.parse({ vocab_size: 40, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16 });
const t5Cfg = T5ConfigSchema.parse({ vocab_size: 40, d_model: 16, d_kv: 8, d_ff: 32, num_layers: 1, num_heads: 2 });

/** A graph whose dims no rule can name, so every op below asks for a fresh dim. */
function unnameable(): Graph {
  const g = new Graph('noise');
  const a = g.input('a', 'float32', ['n*m', 3]);
  const b = g.input('b', 'float32', ['k', 3]);
  for (let i = 0; i < 5; i++) g.op('Concat', [a, b], { axis: 0 }); // (n*m)+k has no plain name
  g.op('Reshape', [a, g.op('Shape', [b])[0]]);
  return g;
}

const bytes = (g: Graph) => Buffer.from(serializeModel(g).model);
const syms = (g: Graph) => [...new Set([...g.values.values()].flatMap((v) => (v.shape ?? []).filter((d): d is string => typeof d === 'string')))].sort();

describe('deterministic export', () => {
  test('the same GPT exported twice, with other graphs built in between, gives identical bytes', () => {
    for (const kvCache of [true, false]) {
      const first = bytes(exportGpt(gptCfg, gptWeights, { kvCache }));
      // Build what would advance a process-wide counter: fresh dims, BERT, T5, another GPT.
      for (let i = 0; i < 3; i++) unnameable();
      exportBert(bertCfg, initParams([...bertParams(bertCfg), ...bertMlmHeadParams(bertCfg)], 1), { head: 'mlm' });
      exportT5(t5Cfg, initParams(t5Params(t5Cfg), 1));
      exportGpt(gptCfg, gptWeights, { kvCache: !kvCache });
      const second = bytes(exportGpt(gptCfg, gptWeights, { kvCache }));
      expect(second.length).toBe(first.length);
      expect(Buffer.compare(first, second)).toBe(0);
    }
  });

  test('BERT and T5 exports are byte-identical across builds too', () => {
    const bert = () => bytes(exportBert(bertCfg, initParams([...bertParams(bertCfg), ...bertMlmHeadParams(bertCfg)], 1), { head: 'mlm' }));
    const t5 = () => bytes(exportT5(t5Cfg, initParams(t5Params(t5Cfg), 1)));
    const [b1, t1] = [bert(), t5()];
    unnameable();
    expect(Buffer.compare(bert(), b1)).toBe(0);
    expect(Buffer.compare(t5(), t1)).toBe(0);
  });

  test('the KV-cache export names its dims by role and expression, in the graph and in the ONNX file', () => {
    const g = exportGpt(gptCfg, gptWeights, { kvCache: true });
    const info = decoderInfo(gptCfg, true);
    const present: Dim[] = ['batch', info.nHead, 'past+seq', info.headDim];
    const byName = new Map(g.outputs.map((v) => [v.name, v.shape]));
    expect(byName.get('logits')).toEqual(['batch', 'seq', gptCfg.vocab_size]);
    for (let l = 0; l < gptCfg.n_layer; l++) {
      expect(byName.get(presentKeyName(l))).toEqual(present);
      expect(byName.get(presentValueName(l))).toEqual(present);
    }
    // Every symbolic dim in the graph has a meaningful name: no counter-made one is left.
    expect(syms(g)).toEqual(['batch', 'batch*seq', 'past', 'past+seq', 'seq']);
    const proto = onnx.ModelProto.decode(serializeModel(g).model);
    const out = proto.graph!.output!.find((o) => o.name === presentKeyName(0))!;
    expect(out.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))).toEqual(present);
  });

  test('fresh dims count per graph from 0 and never reuse a name the graph already has', () => {
    const a = new Graph('a');
    const b = new Graph('b');
    expect([a.freshDim('concat'), a.freshDim('reshape'), b.freshDim('concat')]).toEqual(['concat_0', 'reshape_1', 'concat_0']);
    const c = new Graph('c');
    const x = c.input('x', 'float32', ['concat_0', 2]);
    const y = c.input('y', 'float32', ['n*m', 2]);
    expect(c.op('Concat', [x, y], { axis: 0 })[0].shape).toEqual(['concat_1', 2]);
  });

  test('sums and differences of dims are named by expression', () => {
    const g = new Graph('expr');
    const past = g.input('past', 'float32', [2, 'past']);
    const ids = g.input('ids', 'int64', [2, 'seq']);
    const one = g.input('one', 'float32', [2, 1]);
    expect(g.op('Concat', [ids, ids], { axis: 1 })[0].shape).toEqual([2, 'seq+seq']);
    expect(g.op('Concat', [one, past, one], { axis: 1 })[0].shape).toEqual([2, 'past+2']);
    const dim = (v: typeof ids, i: number) => g.op('Gather', [g.op('Shape', [v])[0], g.scalar(i, 'int64')], { axis: 0 })[0];
    const total = g.op('Add', [dim(ids, 1), dim(past, 1)])[0];
    expect(g.op('Range', [dim(past, 1), total, g.scalar(1, 'int64')])[0].shape).toEqual(['seq']); // past..past+seq
    expect(g.op('Range', [g.scalar(0, 'int64'), total, g.scalar(1, 'int64')])[0].shape).toEqual(['past+seq']);
    // A flatten of a summed dim keeps the grouping: (past+seq)*2, not past+seq*2.
    const k = g.op('Concat', [past, g.op('Cast', [ids], { to: 1 })[0]], { axis: 1 })[0]; // (2, past+seq)
    expect(g.op('Reshape', [k, g.vector([-1])])[0].shape).toEqual(['(past+seq)*2']);
  });

  test('the loader names unknown dims apart from each other and from the file’s own dim_params', () => {
    const g = new Graph('io');
    g.output(g.op('Add', [g.input('x', 'float32', ['unk_0', 'n']), g.input('y', 'float32', ['unk_0', 'n'])])[0], 'z');
    const proto = onnx.ModelProto.decode(serializeModel(g).model);
    const y = proto.graph!.input!.find((i) => i.name === 'y')!;
    y.type!.tensorType!.shape!.dim = [{}, {}]; // both dims unknown
    const loaded = loadModel(onnx.ModelProto.encode(proto).finish());
    const shapeOfY = loaded.value('y').shape!;
    expect(shapeOfY[0]).not.toBe(shapeOfY[1]);
    expect(shapeOfY).not.toContain('unk_0');
    expect(loaded.value('x').shape).toEqual(['unk_0', 'n']);
  });
});
