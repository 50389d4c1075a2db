// BERT through the product on a real Temporal dev server, a real S3 server and both pool workers
// (issue 12): `importModel` stores a tiny BertForSequenceClassification (random weights, a WordPiece
// tokenizer trained on SpamAssassin; test/fixtures/hf-io/bert_spam, made by
// make_bert_spam_fixture.py) as models/<name>; a pipeline starts from it with `model.from` and
// fine-tunes it for spam vs ham on the SpamAssassin corpus; validation accuracy and macro F1 over
// every validation document are recorded before and after; the trained checkpoint exports as a
// BertForSequenceClassification folder whose re-import holds the same weights and gives the same
// logits.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointWeightsAnyFamily } from '../../artifacts/checkpoints';
import { newestDataset, readTokenizer, ShardCache } from '../../artifacts/datasets';
import { loadStoredTokenizer } from '../../artifacts/tokenizers';
import type { BertModelConfig } from '../../engine/hf/bert';
import { BertEvaluator, bertTokensOf, frameDocs, labelledDocs, labelMapOf } from '../../engine/train/bert';
import { exportModel, importModel, InvalidSpecError, TruthGPT, type PipelineSpecInput } from '../../sdk';
import { fmt, type FamilyReport } from '../../engine/report';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'hf-io', 'bert_spam');

let stack: InProcessStack;
let tg: TruthGPT;
let tmp: string;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-bert-pipeline' });
  tg = await TruthGPT.connect({ config: stack.config });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bert-pipeline-'));
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('import a BERT classifier → fine-tune it on SpamAssassin in a pipeline → accuracy and macro F1 before/after → export HF → re-import: same weights and logits', async () => {
  const imported = await importModel(FIXTURE, { name: 'tiny-bert-spam', config: stack.config });
  expect(imported.ref).toBe('models/tiny-bert-spam');

  const spec: PipelineSpecInput = {
    name: 'bert-spam',
    model: { from: imported.ref, task: 'classification' },
    dataset: { name: 'spam', corpus: { kind: 'spam-assassin' }, valFraction: 0.1 },
    training: { workers: 1, rounds: 2, innerSteps: 40, batchSize: 16, contextLength: 64, optimizer: { optimizer: { kind: 'adamw', lr: 2e-3, weight_decay: 0.01 }, grad_clip: 1 } },
  };

  // The stored model is a BERT: a spec naming another family is refused, naming the field.
  const wrong = await tg.startPipeline({ ...spec, model: { ...spec.model, family: 'gpt' } }).catch((e: unknown) => e);
  expect(wrong).toBeInstanceOf(InvalidSpecError);
  expect((wrong as InvalidSpecError).issues).toEqual(['spec.model.family: "gpt", but models/tiny-bert-spam holds a bert model; leave family out or set it to bert']);

  const run = await tg.startPipeline(spec);
  const r = await run.result();
  const [before, , after] = r.training.valHistory;
  console.log(
    `BERT spam fine-tune: val loss ${before.loss.toFixed(4)} → ${after.loss.toFixed(4)}, accuracy ${(before.accuracy! * 100).toFixed(1)}% → ${(after.accuracy! * 100).toFixed(1)}%, ` +
      `macro F1 ${before.macroF1!.toFixed(3)} → ${after.macroF1!.toFixed(3)} over ${after.examples} validation documents (every one)`,
  );
  expect(before.examples).toBe(after.examples);
  expect(after.examples).toBeGreaterThan(500);
  expect(after.loss).toBeLessThan(before.loss);
  expect(after.accuracy!).toBeGreaterThan(before.accuracy!);
  expect(after.macroF1!).toBeGreaterThan(before.macroF1!);
  expect(r.stages.map((s) => [s.stage, s.status])).toEqual([['train', 'done'], ['lora', 'skipped'], ['postTraining', 'skipped']]);
  expect(r.stages[0].summary).toContain(`val accuracy ${(before.accuracy! * 100).toFixed(1)}% → ${(after.accuracy! * 100).toFixed(1)}%`);

  // The run list (Temporal visibility, search attributes) shows the family, the task and the accuracy.
  let listed: Awaited<ReturnType<TruthGPT['listRuns']>> = [];
  for (let i = 0; i < 50 && !listed.some((x) => x.workflowId === r.workflowId && x.valAccuracy != null); i++) {
    listed = await tg.listRuns({ family: 'bert' });
    await new Promise((res) => setTimeout(res, 200)); // visibility is eventually consistent
  }
  const row = listed.find((x) => x.workflowId === r.workflowId)!;
  expect(row).toMatchObject({ family: 'bert', task: 'classification', pipeline: 'bert-spam' });
  expect(row.valAccuracy).toBeCloseTo(Math.max(...r.training.valHistory.map((v) => v.accuracy!)), 12);

  // The trained checkpoint is a BERT with its classification head, exported as the HF class.
  const trained = r.training.checkpoint.prefix;
  const out = path.join(tmp, 'exported');
  const exported = await exportModel(trained, out, { config: stack.config });
  expect(exported.architecture).toBe('BertForSequenceClassification');
  expect(exported.importedFrom).toBe('models/tiny-bert-spam');
  expect(fs.readdirSync(out).sort()).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));
  const hfConfig = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as { id2label: Record<string, string> };
  expect(hfConfig.id2label).toEqual({ '0': 'ham', '1': 'spam' });

  const again = await importModel(out, { name: 'tiny-bert-spam-tuned', config: stack.config });
  const store = stack.s3.store;
  const [a, b] = await Promise.all([checkpointWeightsAnyFamily(store, trained), checkpointWeightsAnyFamily(store, again.ref)]);
  expect(b.family).toBe('bert');
  expect([...b.weights.keys()].sort()).toEqual([...a.weights.keys()].sort());
  for (const [name, w] of a.weights) expect(Buffer.from(b.weights.get(name)!.buffer).equals(Buffer.from(w.buffer))).toBe(true);

  // The same logits on the validation documents from the run's checkpoint and from the re-import.
  const cfg = a.config as BertModelConfig;
  const dataset = (await newestDataset(store, 'datasets/spam-'))!;
  expect(dataset.labelNames).toEqual(['ham', 'spam']);
  const val = await new ShardCache().labelled(store, dataset, dataset.val[0]);
  const docs = labelledDocs(val.ids, val.docs, labelMapOf(cfg, dataset.labelNames!), 'val').slice(0, 64);
  const tok = bertTokensOf(await loadStoredTokenizer(store, await readTokenizer(store, dataset)));
  expect(tok).toMatchObject({ cls: 2, sep: 3, pad: 0, mask: 4 }); // the fixture's [CLS], [SEP], [PAD], [MASK]
  const ev = new BertEvaluator(cfg, { intraOpThreads: 1 });
  const [la, lb] = [await ev.logits(a.weights, val.ids, docs, { batchSize: 16, contextLength: 64 }, tok), await ev.logits(b.weights, val.ids, docs, { batchSize: 16, contextLength: 64 }, tok)];
  await ev.release();
  expect(la.length).toBe(64);
  la.forEach((row, i) => expect(Array.from(lb[i])).toEqual(Array.from(row)));

  // For the Python side (test/fixtures/hf-io/check_bert_export.py): the export with our logits.
  const keep = process.env.TRUTHGPT_KEEP_BERT_EXPORT;
  if (keep) {
    const framed = frameDocs(val.ids, docs, 64, tok);
    const rows = (k: string) => Array.from({ length: docs.length }, (_, i) => Array.from(framed[k].data as BigInt64Array).slice(i * 64, (i + 1) * 64).map(Number));
    fs.cpSync(out, path.join(keep, 'full'), { recursive: true });
    fs.writeFileSync(path.join(keep, 'full', 'ours.json'), JSON.stringify({ input_ids: rows('input_ids'), attention_mask: rows('attention_mask'), logits: la.map((r) => Array.from(r)) }));
  }
}, 600_000);

test('LoRA on the imported classifier (PEFT SEQ_CLS: adapters on query/key/value/dense + the head) → int8 gated on accuracy → export the merged model and the PEFT adapter → re-import: same logits', async () => {
  const imported = await importModel(FIXTURE, { name: 'tiny-bert-spam', config: stack.config });
  const r = await (
    await tg.startPipeline({
      name: 'bert-spam-lora',
      model: { from: imported.ref, task: 'classification' },
      dataset: { name: 'spam', corpus: { kind: 'spam-assassin' }, valFraction: 0.1 },
      training: { rounds: 0, innerSteps: 1, batchSize: 16, contextLength: 64 },
      lora: {
        lora: { r: 8, lora_alpha: 16, target_modules: ['query', 'key', 'value', 'dense'] },
        train: { steps: 80, stepsPerActivity: 40, batchSize: 16, contextLength: 64, optimizer: { optimizer: { kind: 'adamw', lr: 5e-3, weight_decay: 0 } } },
      },
      // int8, gated on accuracy: refused when it loses more than one point against fp32.
      quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 0.01, required: true }],
    })
  ).result();
  const before = r.training.valHistory[0];
  const l = r.classifierLora!;
  const [int8] = r.classifierVariants!;
  console.log(
    `BERT spam LoRA: accuracy ${(100 * before.accuracy!).toFixed(1)}% → ${(100 * l.accuracyAfter).toFixed(1)}%, macro F1 ${before.macroF1!.toFixed(3)} → ${l.macroF1After.toFixed(3)} over ${l.examples} val documents; ` +
      `${l.trainable} of ${l.total} parameters trainable (${l.targetModules.join(', ')} + classifier); int8 ${(100 * int8.accuracy).toFixed(2)}% vs fp32 ${(100 * int8.fp32Accuracy).toFixed(2)}%, ${int8.flips} flipped`,
  );
  expect(r.stages.map((s) => [s.stage, s.status])).toEqual([['train', 'done'], ['lora', 'done'], ['postTraining', 'done']]);
  expect(l.targetModules).toEqual(['dense', 'key', 'query', 'value']);
  expect(l.accuracyAfter).toBeGreaterThan(before.accuracy!);
  expect(l.macroF1After).toBeGreaterThan(before.macroF1!);
  expect(int8).toMatchObject({ name: 'int8', method: 'int8-dynamic', published: true, examples: l.examples, maxAccuracyDrop: 0.01 });
  // The fp32 export of the merged model scores what the merge's evaluation scored.
  expect(int8.fp32Accuracy).toBeCloseTo(l.accuracyAfter, 12);
  expect(int8.drop).toBeLessThanOrEqual(0.01);

  // The run report, where a GPT run's goes: loss and accuracy/F1 curves, the LoRA stage, the fp32 and int8 rows.
  expect(r.reportKey).toMatch(new RegExp(`^runs/${r.workflowId}/report/`));
  const html = (await stack.s3.store.get(r.reportKey)).toString('utf8');
  for (const part of ['<svg', 'Loss per round', 'Accuracy and macro F1 per round', 'LoRA train loss per chunk', 'maxAccuracyDrop']) expect(html).toContain(part);
  for (const x of [before.accuracy!, l.accuracyAfter, int8.accuracy]) expect(html).toContain(`${(100 * x).toFixed(2)}%`);
  expect(html).toContain(`<td>${fmt(int8.macroF1!)}</td>`);
  expect(html).toContain(`→ ${fmt(l.macroF1After)}</td>`);

  // The merged model exports as BertForSequenceClassification; its re-import gives the same logits.
  const store = stack.s3.store;
  const out = path.join(tmp, 'lora-merged');
  expect((await exportModel(l.merged.prefix, out, { config: stack.config })).architecture).toBe('BertForSequenceClassification');
  const again = await importModel(out, { name: 'tiny-bert-spam-lora', config: stack.config });
  const [a, b] = await Promise.all([checkpointWeightsAnyFamily(store, l.merged.prefix), checkpointWeightsAnyFamily(store, again.ref)]);
  const cfg = a.config as BertModelConfig;
  const dataset = (await newestDataset(store, 'datasets/spam-'))!;
  const val = await new ShardCache().labelled(store, dataset, dataset.val[0]);
  const docs = labelledDocs(val.ids, val.docs, labelMapOf(cfg, dataset.labelNames!), 'val').slice(0, 64);
  const tok = bertTokensOf(await loadStoredTokenizer(store, await readTokenizer(store, dataset)));
  const ev = new BertEvaluator(cfg, { intraOpThreads: 1 });
  const [la, lb] = [await ev.logits(a.weights, val.ids, docs, { batchSize: 16, contextLength: 64 }, tok), await ev.logits(b.weights, val.ids, docs, { batchSize: 16, contextLength: 64 }, tok)];
  await ev.release();
  la.forEach((row, i) => expect(Array.from(lb[i])).toEqual(Array.from(row)));

  // The PEFT files: SEQ_CLS, the head under modules_to_save.
  const peft = JSON.parse((await store.getVerified(l.adapterPrefix, 'adapter_config.json')).toString('utf8')) as Record<string, unknown>;
  expect(peft).toMatchObject({ peft_type: 'LORA', task_type: 'SEQ_CLS', r: 8, lora_alpha: 16, modules_to_save: ['classifier'], target_modules: ['query', 'key', 'value', 'dense'], fan_in_fan_out: false });

  // For the Python side (check_bert_export.py --peft): the base export, the adapter, our merged logits.
  const keep = process.env.TRUTHGPT_KEEP_BERT_EXPORT;
  if (keep) {
    const framed = frameDocs(val.ids, docs, 64, tok);
    const rows = (k: string) => Array.from({ length: docs.length }, (_, i) => Array.from(framed[k].data as BigInt64Array).slice(i * 64, (i + 1) * 64).map(Number));
    fs.cpSync(out, path.join(keep, 'lora-merged'), { recursive: true });
    fs.writeFileSync(path.join(keep, 'lora-merged', 'ours.json'), JSON.stringify({ input_ids: rows('input_ids'), attention_mask: rows('attention_mask'), logits: la.map((x) => Array.from(x)) }));
    await exportModel(imported.ref, path.join(keep, 'base'), { config: stack.config });
    fs.mkdirSync(path.join(keep, 'adapter'), { recursive: true });
    for (const f of ['adapter_model.safetensors', 'adapter_config.json']) fs.writeFileSync(path.join(keep, 'adapter', f), await store.getVerified(l.adapterPrefix, f));
  }
}, 600_000);

test('BERT masked-LM pretraining on Brown: from scratch (tiny-bert preset, byte tokenizer) and continued from the imported model (its WordPiece tokenizer, a fresh MLM head)', async () => {
  const training = { workers: 1, rounds: 2, innerSteps: 30, batchSize: 8, contextLength: 64, evalBatches: 8, optimizer: { optimizer: { kind: 'adamw' as const, lr: 2e-3 } } };
  const dataset = { name: 'brown-humor', corpus: { kind: 'brown' as const, categories: ['humor'] }, valFraction: 0.2 };
  // The byte tokenizer has 259 ids (256 bytes, end-of-text, pad, mask).
  const scratch = await (await tg.startPipeline({ name: 'bert-mlm', model: { family: 'bert', task: 'mlm', preset: 'tiny-bert', config: { vocab_size: 259 } }, dataset, training })).result();
  const imported = await importModel(FIXTURE, { name: 'tiny-bert-spam', config: stack.config }); // already stored: the same ref back
  const continued = await (await tg.startPipeline({ name: 'bert-mlm-from', model: { from: imported.ref, task: 'mlm', config: { head: { kind: 'mlm' } } }, dataset, training })).result();
  for (const [what, r] of [['scratch', scratch], ['continued', continued]] as const) {
    const [first, , last] = r.training.valHistory;
    console.log(`BERT MLM ${what}: val masked-token loss ${first.loss.toFixed(4)} → ${last.loss.toFixed(4)} (perplexity ${first.perplexity.toFixed(1)} → ${last.perplexity.toFixed(1)}) over the first ${training.evalBatches} val batches of ${training.batchSize} × ${training.contextLength} tokens (15% masked)`);
    expect(last.loss).toBeLessThan(first.loss);
    expect(last.perplexity).toBeCloseTo(Math.exp(last.loss), 6);
    expect(last.accuracy).toBeUndefined();

    // The run report: train and val loss per round (the curve's points are the run's figures) and the masked-token perplexity per round.
    expect(r.reportKey).toMatch(new RegExp(`^runs/${r.workflowId}/report/.*report\\.html$`));
    const prefix = `runs/${r.workflowId}/report`;
    const [html, svg, json] = await Promise.all(['report.html', 'loss-curves.svg', 'report.json'].map(async (f) => (await stack.s3.store.getVerified(prefix, f)).toString('utf8')));
    const report = JSON.parse(json) as FamilyReport;
    expect(report).toMatchObject({ task: 'mlm', variants: [], lora: null, checkpoint: r.training.checkpoint.prefix });
    expect(report.valHistory.map((v) => [v.round, v.loss, v.perplexity])).toEqual(r.training.valHistory.map((v) => [v.round, v.loss, v.perplexity]));
    // The pipeline's result keeps no train history: the report's is one mean loss per round, each a figure.
    expect(report.trainHistory.map((p) => p.round)).toEqual(Array.from({ length: training.rounds }, (_, i) => i + 1));
    expect(report.trainHistory.every((p) => Number.isFinite(p.loss) && p.loss > 0)).toBe(true);
    const ys = (series: string) => [...new RegExp(`data-series="${series.replace(/[()]/g, '\\$&')}">([\\s\\S]*?)</g>`).exec(svg)![1].matchAll(/data-y="([^"]+)"/g)].map((m) => Number(m[1]));
    expect(ys('validation loss')).toEqual(r.training.valHistory.map((v) => v.loss));
    expect(ys('train loss (mean of round)')).toEqual(report.trainHistory.map((p) => p.loss));
    for (const part of ['Loss per round', 'Validation perplexity per round', 'validation masked-token perplexity', `Validation masked-token perplexity ${fmt(first.perplexity)} → ${fmt(last.perplexity)}`]) expect(html).toContain(part);
    for (const v of r.training.valHistory) expect(html).toContain(`<td>${fmt(v.loss)}</td><td>${fmt(v.perplexity)}</td></tr>`);
    expect(html).toContain(`the first ${training.evalBatches} val batches of ${training.batchSize} rows × ${training.contextLength} tokens`);
    expect(html).not.toContain('quantized variants');
  }
  // A masked-LM checkpoint exports as BertForMaskedLM.
  const out = path.join(tmp, 'mlm');
  expect((await exportModel(continued.training.checkpoint.prefix, out, { config: stack.config })).architecture).toBe('BertForMaskedLM');
}, 600_000);
