// The GPT domain head in sharded training (engine/train/domain.ts): documents framed for a causal
// model (padded on the right, LM targets ignored on the padding, the head pooled on the last real
// token), the pooled head equal to an unpadded row's, the compiled step learning variable-length
// labelled documents, and the label map refusing a head that does not match the dataset.

import '../../engine/runtime/host-realm';
import { Tensor } from 'onnxruntime-node';
import { Graph } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { mulberry32 } from '../../engine/models/blocks';
import { domainConfigOf, domainGptLogits, domainGptParams, DomainHeadVariantSchema } from '../../engine/models/classification-head';
import { GptConfigSchema } from '../../engine/models/gpt';
import { initParams } from '../../engine/models/blocks';
import { OptimConfigSchema } from '../../engine/optim';
import { createSession } from '../../engine/runtime';
import type { LabelledDoc } from '../../engine/train/bert';
import { compileDomainTrainStep, domainBatch, DomainEvaluator, domainLabelMap, frameGptDocs } from '../../engine/train/domain';
import { exportDomainGpt } from '../../engine/models/export-domain';

const EOT = 15;
const gpt = GptConfigSchema.parse({ vocab_size: 16, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32 });
const head = DomainHeadVariantSchema.parse({ kind: 'domain-head', n_classes: 2 });
const T = 12;

test('documents are padded on the right with end-of-text; targets -100 past the end; the head pools the last real token', () => {
  // Three documents (eot after each): [1 2 3], [] and 14 tokens (longer than T).
  const long = Array.from({ length: 14 }, (_, i) => i % 14);
  const ids = [1, 2, 3, EOT, EOT, ...long, EOT];
  const docs: LabelledDoc[] = [
    { start: 0, length: 3, label: 0 },
    { start: 4, length: 0, label: 1 },
    { start: 5, length: 14, label: 1 },
  ];
  const f = frameGptDocs(ids, docs, T, EOT);
  const row = (name: string, b: number) => Array.from(f[name].data as BigInt64Array).slice(b * T, (b + 1) * T).map(Number);
  expect(row('tokens', 0)).toEqual([1, 2, 3, ...Array(9).fill(EOT)]);
  expect(row('targets', 0)).toEqual([2, 3, EOT, ...Array(9).fill(-100)]);
  // An empty document is its end-of-text: one real token, which predicts end-of-text.
  expect(row('tokens', 1)).toEqual(Array(12).fill(EOT));
  expect(row('targets', 1)).toEqual([EOT, ...Array(11).fill(-100)]);
  // A long one is cut to T; its last target is the next token of the document.
  expect(row('tokens', 2)).toEqual(long.slice(0, 12));
  expect(row('targets', 2)).toEqual(long.slice(1, 13));
  expect(Array.from(f.pool.data as BigInt64Array).map(Number)).toEqual([2, 12, 2 * T + 11]);
  // Batches are pure functions of (seed, shard, step).
  const req = { seed: 3, shard: 1, step: 5, batchSize: 4, contextLength: T };
  expect(domainBatch(ids, docs, req, EOT)).toEqual(domainBatch(ids, docs, req, EOT));
  expect(domainBatch(ids, docs, { ...req, step: 6 }, EOT).labels).not.toEqual(domainBatch(ids, docs, req, EOT).labels);
});

test("a padded row's class logits equal the logits of the same document unpadded", async () => {
  const cfg = domainConfigOf(gpt, head);
  const weights = initParams(domainGptParams(cfg), 11);
  const docs: LabelledDoc[] = [
    { start: 0, length: 5, label: 0 },
    { start: 6, length: 9, label: 1 },
  ];
  const ids = [3, 1, 4, 1, 5, EOT, 9, 2, 6, 5, 3, 5, 8, 9, 7, EOT];
  const ev = new DomainEvaluator(gpt, head, T, { intraOpThreads: 1 });
  const pooled = await ev.logits(weights, ids, docs, 2, EOT);
  await ev.release();
  for (const [b, d] of docs.entries()) {
    // The unpadded row: the document alone, read at its last position (no pool input).
    const g = new Graph('unpadded');
    const w = new Map(domainGptParams(cfg).map((s) => [s.name, g.input(s.name, 'float32', s.shape)]));
    g.output(domainGptLogits(cfg, g.input('tokens', 'int64', [1, d.length]), (n) => w.get(n)!).cls, 'logits');
    const s = await createSession(serializeModel(g).model, { intraOpThreads: 1 });
    const feeds: Record<string, Tensor> = { tokens: new Tensor('int64', BigInt64Array.from(ids.slice(d.start, d.start + d.length), BigInt), [1, d.length]) };
    for (const p of domainGptParams(cfg)) feeds[p.name] = new Tensor('float32', weights.get(p.name)!, p.shape);
    const plain = (await s.run(feeds)).logits.data as Float32Array;
    await s.release();
    // Seen: max |difference| 1.3e-8 (the same math, other fusions).
    for (let c = 0; c < 2; c++) expect(Math.abs(pooled[b][c] - plain[c])).toBeLessThan(1e-6);
  }
});

test('the compiled step learns labelled documents of varying length: accuracy well above the majority class', async () => {
  // Label 1 when token 7 occurs in the document (lengths 3..10, tokens 0..13); 1 in 3 documents has it.
  const r = mulberry32(5);
  const ids: number[] = [];
  const docs: LabelledDoc[] = [];
  for (let i = 0; i < 300; i++) {
    const n = 3 + Math.floor(r() * 8);
    const label = r() < 1 / 3 ? 1 : 0;
    const toks = Array.from({ length: n }, () => {
      let t = Math.floor(r() * 13);
      if (t === 7) t = 13;
      return t;
    });
    if (label) toks[Math.floor(r() * n)] = 7;
    docs.push({ start: ids.length, length: n, label });
    ids.push(...toks, EOT);
  }
  const [train, val] = [docs.slice(0, 240), docs.slice(240)];
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0 } });
  const compiled = await compileDomainTrainStep({ model: gpt, head, optim, batchSize: 16, contextLength: T }, { intraOpThreads: 1 });
  const runner = compiled.runner({ step: 0, params: Object.fromEntries(initParams(compiled.step.trainable, 1)), state: {} });
  const cls: number[] = [];
  for (let step = 0; step < 150; step++) {
    const out = await runner.run(domainBatch(ids, train, { seed: 1, shard: 0, step, batchSize: 16, contextLength: T }, EOT));
    expect(Math.abs(out.loss - (out.scalars.lm_loss + out.scalars.cls_loss))).toBeLessThan(1e-5);
    cls.push(out.scalars.cls_loss);
  }
  const ev = new DomainEvaluator(gpt, head, T, { intraOpThreads: 1 });
  const m = await ev.classify(new Map(Object.entries(runner.getParams())), ids, val, 16, EOT);
  await ev.release();
  await compiled.session.release();
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`domain head, synthetic: cls loss ${mean(cls.slice(0, 5)).toFixed(3)} → ${mean(cls.slice(-10)).toFixed(3)}, val accuracy ${(100 * m.accuracy).toFixed(1)}% vs majority ${(100 * m.majorityBaseline).toFixed(1)}%, macro F1 ${m.macroF1.toFixed(3)}`);
  expect(mean(cls.slice(-10))).toBeLessThan(0.6 * mean(cls.slice(0, 5)));
  expect(m.accuracy).toBeGreaterThan(m.majorityBaseline + 0.1);
  expect(m.count).toBe(60);
}, 120_000);

test('the label map sorts the dataset labels; a head with another number of classes is refused naming the field', () => {
  expect(domainLabelMap(2, ['spam', 'ham'])).toEqual([1, 0]);
  expect(() => domainLabelMap(3, ['ham', 'spam'])).toThrow('spec.model.variant.n_classes: 3, but the dataset has 2 labels (ham, spam)');
});

test('K steps per session.run (stepsPerRun) equal K single steps bit for bit for the domain-head step (labels and pool inputs)', async () => {
  const ids = Array.from({ length: 198 }, (_, i) => (i % 11 === 10 ? EOT : (i * 7) % 14)); // 18 documents of 10 tokens + eot
  const docs: LabelledDoc[] = [];
  for (let s = 0, d = 0; s < ids.length; s += 11, d++) docs.push({ start: s, length: 10, label: d % 2 });
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
  const setup = { model: gpt, head, optim, batchSize: 4, contextLength: 8 };
  const [one, four] = await Promise.all([compileDomainTrainStep(setup, { intraOpThreads: 1 }), compileDomainTrainStep({ ...setup, stepsPerRun: 4 }, { intraOpThreads: 1 })]);
  const init = { step: 0, params: Object.fromEntries(initParams(one.step.trainable, 3)), state: {} };
  const a = one.runner(init);
  const b = four.runner(init);
  const feeds = (step: number) => domainBatch(ids, docs, { seed: 2, shard: 0, step, batchSize: 4, contextLength: 8 }, EOT);
  const single = [];
  for (let s = 0; s < 6; s++) single.push((await a.run(feeds(s))).loss);
  const many = [...(await b.runSteps([0, 1, 2, 3].map(feeds))), ...(await b.runSteps([4, 5].map(feeds)))].map((r) => r.loss);
  expect(many).toEqual(single);
  const pa = a.getParams();
  const pb = b.getParams();
  for (const k of Object.keys(pa)) expect(Buffer.from(pb[k].buffer).equals(Buffer.from(pa[k].buffer))).toBe(true);
  await Promise.all([one.session.release(), four.session.release()]);
});

test('the exported domain-head classifier (symbolic batch and length, last_token input) gives the evaluator\'s logits', async () => {
  const cfg = domainConfigOf(gpt, head);
  const weights = initParams(domainGptParams(cfg), 13);
  const ids = [3, 1, 4, 1, 5, EOT, 9, 2, 6, 5, 3, 5, 8, 9, 7, EOT, 2, 7, EOT];
  const docs: LabelledDoc[] = [
    { start: 0, length: 5, label: 0 },
    { start: 6, length: 9, label: 1 },
    { start: 16, length: 2, label: 0 },
  ];
  const ev = new DomainEvaluator(gpt, head, T, { intraOpThreads: 1 });
  const want = await ev.logits(weights, ids, docs, 3, EOT);
  await ev.release();
  const s = await createSession(serializeModel(exportDomainGpt(gpt, head, weights)).model, { intraOpThreads: 1 });
  const f = frameGptDocs(ids, docs, T, EOT);
  const last = BigInt64Array.from(docs, (_, b) => (f.pool.data as BigInt64Array)[b] - BigInt(b * T));
  const got = (await s.run({ input_ids: new Tensor('int64', f.tokens.data as BigInt64Array, [3, T]), last_token: new Tensor('int64', last, [3]) })).logits;
  // A shorter length and one document: the same document's logits.
  const one = (await s.run({ input_ids: new Tensor('int64', BigInt64Array.from(ids.slice(6, 15), BigInt), [1, 9]), last_token: new Tensor('int64', BigInt64Array.of(8n), [1]) })).logits.data as Float32Array;
  await s.release();
  expect(got.dims).toEqual([3, 2]);
  const data = got.data as Float32Array;
  const diff = Math.max(...want.flatMap((row, b) => [0, 1].map((c) => Math.abs(row[c] - data[b * 2 + c]))), ...[0, 1].map((c) => Math.abs(one[c] - want[1][c])));
  // Seen: 0 (the same ops; 1e-6 leaves room for another fusion order).
  expect(diff).toBeLessThan(1e-6);
  console.log(`exportDomainGpt vs evaluator: max |logit difference| ${diff.toExponential(2)}`);
});
