// The real-data check for classifiers: a tiny BERT learns spam vs ham on the SpamAssassin public
// corpus from the first 64 bytes of subject + body (headers dropped, so mailing-list headers
// cannot give the label away), trained with our own ONNX training step, and scored on a held-out
// 20% split with accuracy, macro F1 and the confusion matrix. The bar is the majority-class
// baseline (always "ham"): 68.6% of all 6046 messages, 70.0% of the 1232 held-out ones.
//
// Seen on the 2-core dev box (loaded, 1 ORT thread): 500 steps × 16 in 19 s, train loss 0.62 → 0.31,
// held-out accuracy 89.8% vs the 70.0% baseline, macro F1 0.872, confusion [[831, 32], [94, 275]].

import * as ort from 'onnxruntime-node';
import { readSpamAssassin } from '../../engine/data/corpus';
import { hashString } from '../../engine/data/random';
import { evaluateClassifier, type ClassifierBatch } from '../../engine/eval';
import { Graph, type TensorData } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { mulberry32 } from '../../engine/models/blocks';
import { bertClassifierLogits, bertClassifierParams, bertClassifierTrainLoss, BertConfigSchema, bertParams } from '../../engine/models/bert';
import { OptimConfigSchema } from '../../engine/optim';
import { createSession } from '../../engine/runtime';
import { buildTrainStep } from '../../engine/train/step';
import { Trainer } from '../../engine/train/trainer';

const T = 64;
const B = 16;
const STEPS = 500;
// Byte ids 0..255, then [CLS] = 256 (the pooler reads position 0) and [PAD] = 257.
const CLS = 256;
const PAD = 257;
const cfg = BertConfigSchema.parse({ vocab_size: 258, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 128, max_position_embeddings: T });

interface Example {
  ids: number[];
  label: number;
}

/** Subject line + body, whitespace collapsed, as [CLS] + bytes, cut to T. */
function encode(raw: string): number[] {
  const split = raw.search(/\r?\n\r?\n/);
  const headers = split >= 0 ? raw.slice(0, split) : raw;
  const body = split >= 0 ? raw.slice(split) : '';
  const subject = /^Subject:(.*)$/im.exec(headers)?.[1] ?? '';
  const text = `${subject.trim()} | ${body}`.replace(/\s+/g, ' ').trim();
  return [CLS, ...Buffer.from(text, 'utf8').subarray(0, T - 1)];
}

function batchOf(xs: Example[]): Record<string, TensorData> {
  const n = xs.length;
  const ids = new BigInt64Array(n * T).fill(BigInt(PAD));
  const mask = new BigInt64Array(n * T);
  xs.forEach((x, b) => x.ids.forEach((id, t) => ((ids[b * T + t] = BigInt(id)), (mask[b * T + t] = 1n))));
  return {
    input_ids: { dtype: 'int64', dims: [n, T], data: ids },
    attention_mask: { dtype: 'int64', dims: [n, T], data: mask },
    token_type_ids: { dtype: 'int64', dims: [n, T], data: new BigInt64Array(n * T) },
    labels: { dtype: 'int64', dims: [n], data: BigInt64Array.from(xs, (x) => BigInt(x.label)) },
  };
}

test('tiny BERT on SpamAssassin (64 bytes of subject + body): held-out accuracy well above the majority-class baseline (always ham: 70.0% of the held-out split)', async () => {
  const train: Example[] = [];
  const test: Example[] = [];
  for (const d of readSpamAssassin()) {
    // Split by a hash of the message id: stable across runs and corpus order.
    (hashString(d.source) % 5 === 0 ? test : train).push({ ids: encode(d.text), label: d.label === 'spam' ? 1 : 0 });
  }
  expect(train.length + test.length).toBe(6046);

  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 2e-3, weight_decay: 0.01 }, grad_clip: 1 });
  const params = [...bertParams(cfg), ...bertClassifierParams(cfg, 2)];
  const trainer = await Trainer.create(buildTrainStep({ params, loss: bertClassifierTrainLoss(cfg, B, T) }, optim), { seed: 3, sessionConfig: { intraOpThreads: 1 } });
  const rand = mulberry32(11);
  const losses: number[] = [];
  const t0 = performance.now();
  try {
    for (let s = 0; s < STEPS; s++) {
      const xs = Array.from({ length: B }, () => train[Math.floor(rand() * train.length)]);
      losses.push((await trainer.run(batchOf(xs))).loss);
    }
  } finally {
    await trainer.release();
  }
  const trainMs = performance.now() - t0;
  const weights = trainer.params();

  // Inference graph over the trained weights, any batch size.
  const g = new Graph('bert_spam');
  const lookup = (n: string) => (g.values.has(n) ? g.value(n) : g.initializer(n, { dtype: 'float32', dims: params.find((p) => p.name === n)!.shape, data: weights.get(n)! }));
  const inputs = { inputIds: g.input('input_ids', 'int64', ['batch', T]), attentionMask: g.input('attention_mask', 'int64', ['batch', T]), tokenTypeIds: g.input('token_type_ids', 'int64', ['batch', T]) };
  g.output(bertClassifierLogits(cfg, inputs, lookup), 'logits'); // (batch, 2)
  const session = await createSession(serializeModel(g).model, { intraOpThreads: 1 });
  const batches: ClassifierBatch[] = [];
  for (let i = 0; i < test.length; i += 64) {
    const xs = test.slice(i, i + 64);
    const b = batchOf(xs);
    const feeds = Object.fromEntries(['input_ids', 'attention_mask', 'token_type_ids'].map((k) => [k, new ort.Tensor('int64', b[k].data as BigInt64Array, b[k].dims)]));
    batches.push({ feeds, labels: xs.map((x) => x.label) });
  }
  const m = await evaluateClassifier(session, batches, 2);
  await session.release();

  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(
    `SpamAssassin tiny BERT: ${STEPS} steps × ${B} in ${(trainMs / 1000).toFixed(1)} s, train loss ${mean(losses.slice(0, 10)).toFixed(3)} → ${mean(losses.slice(-20)).toFixed(3)}; ` +
      `held-out ${m.count}: accuracy ${(m.accuracy * 100).toFixed(1)}% vs majority baseline ${(m.majorityBaseline * 100).toFixed(1)}%, macro F1 ${m.macroF1.toFixed(3)}, ` +
      `confusion [[ham→ham, ham→spam], [spam→ham, spam→spam]] = ${JSON.stringify(m.confusion)}`,
  );
  expect(m.count).toBe(test.length);
  expect(m.majorityBaseline).toBeGreaterThan(0.6);
  expect(m.majorityBaseline).toBeLessThan(0.75);
  // Well above the baseline: at least half of the errors that "always ham" makes are gone.
  expect(m.accuracy).toBeGreaterThan(m.majorityBaseline + (1 - m.majorityBaseline) / 2);
  // Not by predicting one class: spam recall and ham recall both clearly non-trivial.
  expect(m.perClass[1].recall).toBeGreaterThan(0.5);
  expect(m.perClass[0].recall).toBeGreaterThan(0.8);
  expect(m.macroF1).toBeGreaterThan(0.75);
}, 180_000);
