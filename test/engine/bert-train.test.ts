// BERT's pieces for sharded training (engine/train/bert.ts) against Hugging Face: the imported
// spam fixture (test/fixtures/hf-io/bert_spam, make_bert_spam_fixture.py) framed by our batches
// ([CLS] ids [SEP], from the tokenizer.json's own ids) gives transformers' input ids and logits;
// batches are pure functions of (seed, shard, step); labels map by the head's id2label.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { HfTokenizer } from '../../engine/data/tokenizer';
import { readHfFolder, type BertModelConfig } from '../../engine/hf';
import { Tensor } from 'onnxruntime-node';
import { readSpamAssassin } from '../../engine/data/corpus';
import { hashString } from '../../engine/data/random';
import { serializeModel } from '../../engine/graph/onnx';
import { exportBert } from '../../engine/models/export-bert-t5';
import { OptimConfigSchema } from '../../engine/optim';
import { quantizeGraph } from '../../engine/quant';
import { AccuracyRejectedError, gateClassifier } from '../../engine/quant/classifier-gate';
import { bertEncoderConfig, BertEvaluator, bertTokensOf, buildBertTrainStep, classificationBatch, frameDocs, labelMapOf, labelledDocs, mlmBatch } from '../../engine/train/bert';
import { Trainer } from '../../engine/train/trainer';

const DIR = path.join(__dirname, '..', 'fixtures', 'hf-io', 'bert_spam');
const golden = JSON.parse(fs.readFileSync(path.join(DIR, 'golden.json'), 'utf8')) as { text: string; input_ids: number[]; logits: number[] };

test('the imported spam BERT, fed through our framing, gives transformers\' ids and logits', async () => {
  const m = readHfFolder(DIR);
  expect(m.family).toBe('bert');
  const cfg = m.config as BertModelConfig;
  const tok = HfTokenizer.fromJson(fs.readFileSync(path.join(DIR, 'tokenizer.json'), 'utf8'), { key: 'models/x/tokenizer.json', sha256: '0'.repeat(64) });
  const t = bertTokensOf(tok);
  expect(t).toMatchObject({ cls: 2, sep: 3, pad: 0, mask: 4 });
  expect(tok.eot).toBe(3); // [SEP] ends a document when the tokenizer has no end-of-text token
  const ids = await tok.encode(golden.text);
  expect([t.cls, ...ids, t.sep]).toEqual(golden.input_ids);
  // One document padded to 32 positions (attention_mask 0 there), and the same one unpadded.
  const doc = [{ start: 0, length: ids.length, label: 1 }];
  const ev = new BertEvaluator(cfg, { intraOpThreads: 1 });
  for (const T of [golden.input_ids.length, 32]) {
    const [row] = await ev.logits(m.weights, ids, doc, { batchSize: 1, contextLength: T }, t);
    // Seen: max |Δ| 4.66e-9 at both lengths.
    console.log(`T ${T}: max abs logit difference ${Math.max(...Array.from(row, (v, i) => Math.abs(v - golden.logits[i]))).toExponential(2)}`);
    Array.from(row).forEach((v, i) => expect(Math.abs(v - golden.logits[i])).toBeLessThan(5e-8));
  }
  await ev.release();
});

test('batches are pure functions of (seed, shard, step); labels follow id2label, else sorted names', () => {
  const t = { cls: 2, sep: 3, pad: 0, mask: 4, specials: [0, 2, 3], vocabSize: 50 };
  // Two documents (ids + end-of-text 3), labels by dataset index: "spam" first seen, then "ham".
  const ids = Uint16Array.from([10, 11, 12, 3, 20, 21, 3]);
  const docs = labelledDocs(ids, Uint32Array.from([4, 0, 3, 1]), [1, 0], 'test');
  expect(docs).toEqual([{ start: 0, length: 3, label: 1 }, { start: 4, length: 2, label: 0 }]);
  const a = classificationBatch(ids, docs, { seed: 1, shard: 0, step: 5, batchSize: 4, contextLength: 6 }, t);
  const b = classificationBatch(ids, docs, { seed: 1, shard: 0, step: 5, batchSize: 4, contextLength: 6 }, t);
  expect(a).toEqual(b);
  const rows = Array.from({ length: 4 }, (_, i) => Array.from(a.input_ids.data as BigInt64Array).slice(i * 6, i * 6 + 6).map(Number));
  for (const [r, row] of rows.entries()) {
    const label = Number((a.labels.data as BigInt64Array)[r]);
    expect(row).toEqual(label === 1 ? [2, 10, 11, 12, 3, 0] : [2, 20, 21, 3, 0, 0]);
  }
  // A document longer than T keeps its first T-2 tokens between [CLS] and [SEP].
  const short = classificationBatch(ids, [docs[0]], { seed: 0, shard: 0, step: 0, batchSize: 1, contextLength: 4 }, t);
  expect(Array.from(short.input_ids.data as BigInt64Array).map(Number)).toEqual([2, 10, 11, 3]);
  const long = Uint16Array.from({ length: 200 }, (_, i) => 5 + (i % 40));
  const m1 = mlmBatch(long, { seed: 0, shard: 0, step: 3, batchSize: 2, contextLength: 16 }, t);
  expect(m1).toEqual(mlmBatch(long, { seed: 0, shard: 0, step: 3, batchSize: 2, contextLength: 16 }, t));
  expect(Array.from(m1.labels.data as BigInt64Array).some((l) => l >= 0n)).toBe(true);

  const head = (id2label?: Record<string, string>): BertModelConfig =>
    ({ vocab_size: 50, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16, max_position_embeddings: 16, type_vocab_size: 2, layer_norm_eps: 1e-12, initializer_range: 0.02, add_pooling_layer: true, head: { kind: 'classification', num_labels: 2, ...(id2label ? { id2label } : {}) } });
  expect(labelMapOf(head({ '0': 'ham', '1': 'spam' }), ['spam', 'ham'])).toEqual([1, 0]);
  expect(labelMapOf(head(), ['spam', 'ham'])).toEqual([1, 0]);
  expect(() => labelMapOf(head(), ['a', 'b', 'c'])).toThrow("the dataset has 3 labels (a, b, c), the model's head num_labels is 2");
});

test('int8 classifier gate: the spam BERT fine-tuned here, quantized int8-dynamic, is scored against fp32 on held-out messages; a model that loses accuracy is refused naming the bound', async () => {
  const m = readHfFolder(DIR);
  const cfg = m.config as BertModelConfig;
  const tok = HfTokenizer.fromJson(fs.readFileSync(path.join(DIR, 'tokenizer.json'), 'utf8'), { key: 'models/x/tokenizer.json', sha256: '0'.repeat(64) });
  const t = bertTokensOf(tok);
  const T = 64;
  // Held-out split by a hash of the message id, as test/engine/spam-classifier.test.ts does.
  const train: number[][] = [];
  const held: { ids: number[]; label: number }[] = [];
  for (const d of readSpamAssassin()) {
    const ids = (await tok.encode(d.text.slice(0, 2000))).slice(0, T - 2);
    if (hashString(d.source) % 5 === 0) {
      held.push({ ids, label: d.label === 'spam' ? 1 : 0 });
    } else train.push([...ids, d.label === 'spam' ? 1 : 0]);
  }
  const flat: number[] = [];
  const docs = train.map((x) => {
    const d = { start: flat.length, length: x.length - 1, label: x[x.length - 1] };
    flat.push(...x.slice(0, -1));
    return d;
  });
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 2e-3, weight_decay: 0.01 }, grad_clip: 1 });
  const trainer = await Trainer.create(buildBertTrainStep({ model: cfg, task: 'classification', optim, batchSize: 16, contextLength: T }), { seed: 0, weights: m.weights, sessionConfig: { intraOpThreads: 1 } });
  try {
    for (let step = 0; step < 150; step++) await trainer.run(classificationBatch(flat, docs, { seed: 0, shard: 0, step, batchSize: 16, contextLength: T }, t));
  } finally {
    await trainer.release();
  }
  const weights = trainer.params();

  const fp32Graph = exportBert(bertEncoderConfig(cfg), weights, { head: 'classifier' });
  const fp32 = serializeModel(fp32Graph).model;
  const int8 = serializeModel((await quantizeGraph(fp32Graph, { method: 'int8-dynamic' })).graph).model;
  const heldFlat: number[] = [];
  const heldDocs = held.map((h) => {
    const d = { start: heldFlat.length, length: h.ids.length, label: h.label };
    heldFlat.push(...h.ids);
    return d;
  });
  const batches = [];
  for (let i = 0; i < heldDocs.length; i += 50) {
    const part = heldDocs.slice(i, i + 50);
    const f = frameDocs(heldFlat, part, T, t);
    batches.push({ feeds: Object.fromEntries(Object.entries(f).map(([k, v]) => [k, new Tensor('int64', v.data as BigInt64Array, v.dims)])), labels: part.map((d) => d.label) });
  }
  const gate = await gateClassifier(fp32, int8, batches, { method: 'int8-dynamic', numLabels: 2, maxAccuracyDrop: 0.02, sessionConfig: { intraOpThreads: 1 } });
  console.log(
    `int8 gate on ${gate.fp32.count} held-out messages: fp32 accuracy ${(100 * gate.fp32.accuracy).toFixed(2)}% (macro F1 ${gate.fp32.macroF1.toFixed(3)}), ` +
      `int8 ${(100 * gate.quant.accuracy).toFixed(2)}% (macro F1 ${gate.quant.macroF1.toFixed(3)}), drop ${(100 * gate.drop).toFixed(2)} points, ${gate.flips} predictions flipped; majority baseline ${(100 * gate.fp32.majorityBaseline).toFixed(1)}%`,
  );
  expect(gate.fp32.count).toBe(held.length);
  expect(gate.fp32.accuracy).toBeGreaterThan(gate.fp32.majorityBaseline);
  // Seen: 93.67% both, 0 of 1232 predictions flipped (drop 0.00 points).
  expect(gate.drop).toBeLessThanOrEqual(0.02);

  // A "quantized" model that has lost its classifier (its bias pushes every message to ham) is refused.
  const broken = new Map(weights);
  broken.set('classifier.bias', Float32Array.from([100, -100]));
  const bad = serializeModel(exportBert(bertEncoderConfig(cfg), broken, { head: 'classifier' })).model;
  const refused = await gateClassifier(fp32, bad, batches, { method: 'int8-dynamic', numLabels: 2, maxAccuracyDrop: 0.01 }).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(AccuracyRejectedError);
  const e = refused as AccuracyRejectedError;
  expect(e.kind).toBe('quant-rejected');
  expect(e.message).toBe(
    `int8-dynamic model rejected: validation accuracy ${(100 * e.quantAccuracy).toFixed(2)}% vs fp32 ${(100 * gate.fp32.accuracy).toFixed(2)}% over ${held.length} documents is ${(100 * e.drop).toFixed(2)} points lower, above the bound maxAccuracyDrop = 1.00 points`,
  );
  expect(e.quantAccuracy).toBeCloseTo(gate.fp32.majorityBaseline, 12);
}, 180_000);
