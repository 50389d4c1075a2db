// A GPT with a domain (classification) head (`model.variant: { kind: domain-head, n_classes }`,
// engine/models/classification-head.ts, engine/train/domain.ts) through pipelineWorkflow on a real
// Temporal dev server and S3 server: two DiLoCo workers train it on SpamAssassin (spam vs ham, the
// byte tokenizer, the first contextLength bytes of each message), validation accuracy over every
// val document rises above the majority-class rate (counted here from the dataset's own label
// pairs), the checkpoint holds the head, its int8 variant (exportDomainGpt, int8-dynamic) is gated on
// val accuracy and published, the classifier's report is written, a head with the wrong number of classes fails naming the field, and a
// paused and cancelled run retried from its checkpoint ends with the same weights, bit for bit.

import { checkpointWeights, readCheckpoint } from '../../artifacts/checkpoints';
import { newestDataset, ShardCache } from '../../artifacts/datasets';
import type { FamilyReport } from '../../engine/report';
import { resolveModelFrom } from '../../sdk/model-from';
import { RunFailedError, TruthGPT, type PipelineResult, type PipelineSpecInput } from '../../sdk';
import type { StageOutcome } from '../../workflows/pipeline';
import { pauseCancelRetry } from '../helpers/pause-cancel-retry';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;
let tg: TruthGPT;
let first: PipelineResult;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-domain', logLevel: 'WARN' });
  tg = await TruthGPT.connect({ config: stack.config });
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
});

// Byte vocabulary, 2 layers × 32 wide, a 2-class head; the LM loss weighs a tenth of the class loss.
const spec: PipelineSpecInput = {
  name: 'domain-pipe',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 64, n_layer: 2 }, variant: { kind: 'domain-head', n_classes: 2, lm_weight: 0.1 } },
  dataset: { name: 'spam', corpus: { kind: 'spam-assassin' }, valFraction: 0.1 },
  training: {
    workers: 2,
    rounds: 3,
    innerSteps: 40,
    batchSize: 16,
    contextLength: 64,
    optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 }, grad_clip: 1 },
    checkpoint: { everySteps: 10, everySeconds: 0 },
  },
  // int8-dynamic of the exported classifier, gated on val accuracy (two points at most).
  quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 0.02 }],
};

test('a GPT domain-head classifier trains on SpamAssassin through the pipeline: val accuracy rises above the majority class; the report and the head are committed', async () => {
  const run = await tg.startPipeline(spec);
  first = await run.result();
  expect(first.training.rounds).toBe(3);
  const vals = first.training.valHistory;
  expect(vals.map((v) => v.round)).toEqual([0, 1, 2, 3]);

  // The majority class of the val split, counted from the dataset's label pairs (not by the evaluator).
  const store = stack.s3.store;
  const dataset = (await newestDataset(store, 'datasets/spam-'))!;
  expect(dataset.labelNames).toEqual(['ham', 'spam']);
  const counts = [0, 0];
  let docs = 0;
  for (const s of dataset.val.filter((v) => v.tokens > 0)) {
    const { docs: pairs } = await new ShardCache().labelled(store, dataset, s);
    for (let i = 1; i < pairs.length; i += 2) counts[pairs[i]]++;
    docs += pairs.length / 2;
  }
  const majority = Math.max(...counts) / docs;
  const last = vals[vals.length - 1];
  console.log(
    `GPT domain head on SpamAssassin: val accuracy ${vals.map((v) => `${(100 * v.accuracy!).toFixed(1)}%`).join(' → ')} (majority ${(100 * majority).toFixed(1)}% of ${docs}), ` +
      `macro F1 ${vals.map((v) => v.macroF1!.toFixed(3)).join(' → ')}, class loss ${vals.map((v) => v.loss.toFixed(4)).join(' → ')}`,
  );
  expect(last.examples).toBe(docs);
  // Seen (2 cores, load 8): accuracy 67.2% → 84.2% → 86.3% → 90.1% against a majority of 67.3% of
  // 606 val documents; macro F1 0.606 → 0.886; class loss 0.674 → 0.324.
  expect(last.accuracy!).toBeGreaterThan(majority + 0.1);
  expect(last.macroF1!).toBeGreaterThan(vals[0].macroF1!);
  expect(last.loss).toBeLessThan(vals[0].loss);

  expect(first.stages.map((s: StageOutcome) => [s.stage, s.status])).toEqual([
    ['train', 'done'],
    ['lora', 'skipped'],
    ['postTraining', 'done'],
  ]);
  expect(first.stages[0].summary).toContain(`val accuracy ${(100 * vals[0].accuracy!).toFixed(1)}% → ${(100 * last.accuracy!).toFixed(1)}%`);
  console.log(`GPT domain head post-training: ${first.stages[2].summary}`);

  // The classifier's report, as a BERT classifier's: accuracy and macro F1 per round, the fp32 row.
  expect(first.reportKey).toMatch(new RegExp(`^runs/${run.workflowId}/report/.*report\\.html$`));
  const report = JSON.parse((await store.getVerified(`runs/${run.workflowId}/report`, 'report.json')).toString('utf8')) as FamilyReport;
  expect(report).toMatchObject({ task: 'classification', model: { family: 'gpt' }, checkpoint: first.training.checkpoint.prefix });
  expect(report.valHistory.map((v) => [v.round, v.score, v.macroF1])).toEqual(vals.map((v) => [v.round, v.accuracy, v.macroF1]));
  // fp32 as exported scores what the training evaluator scored; int8 is published within its bound.
  // Seen: int8 90.10% vs fp32 90.10% over 606 val documents (2 predictions flipped, net zero), 85 740
  // bytes vs 155 130.
  const [fp32, int8] = report.variants;
  expect([fp32.name, fp32.score]).toEqual(['fp32', last.accuracy]);
  expect(int8).toMatchObject({ method: 'int8-dynamic', published: true, bound: 0.02 });
  expect(int8.drop).toBeLessThanOrEqual(0.02);
  expect(int8.bytes).toBeLessThan(fp32.bytes!);
  expect((await store.getVerified(int8.prefix!, 'model.onnx')).byteLength).toBe(int8.bytes);
  console.log(`GPT domain head int8: accuracy ${int8.score} vs fp32 ${fp32.score}, ${int8.flips} flipped predictions, ${int8.bytes} bytes vs fp32 ${fp32.bytes}`);

  // The run list (Temporal visibility, search attributes) shows the family, the task and the accuracy.
  let listed: Awaited<ReturnType<TruthGPT['listRuns']>> = [];
  for (let i = 0; i < 50 && !listed.some((x) => x.workflowId === run.workflowId && x.valAccuracy != null); i++) {
    listed = await tg.listRuns({ family: 'gpt' });
    await sleep(200); // visibility is eventually consistent
  }
  const row = listed.find((x) => x.workflowId === run.workflowId)!;
  expect(row).toMatchObject({ family: 'gpt', task: 'classification', pipeline: 'domain-pipe' });
  expect(row.valAccuracy).toBeCloseTo(Math.max(...vals.map((v) => v.accuracy!)), 12);

  // The checkpoint holds the head and records the variant; plain-GPT readers refuse it.
  const prefix = first.training.checkpoint.prefix;
  const ck = await readCheckpoint(store, prefix);
  expect(ck.state.modelConfig.variant).toEqual({ kind: 'domain-head', n_classes: 2, lm_weight: 0.1, cls_weight: 1 });
  expect(ck.weights.get('score.weight')!.dims).toEqual([2, 32]);
  await expect(checkpointWeights(store, prefix)).rejects.toThrow(`checkpoint ${prefix}: a domain-head variant of GPT (modelConfig.variant)`);
  await expect(resolveModelFrom(store, { model: { from: prefix } })).rejects.toThrow(`spec.model.from: ${prefix} holds a domain-head GPT (modelConfig.variant); starting a run from it is not wired yet`);
}, 600_000);

test('a head whose n_classes does not match the dataset labels fails naming the field', async () => {
  const run = await tg.startPipeline({ ...spec, name: 'domain-bad', model: { ...spec.model, variant: { kind: 'domain-head', n_classes: 3 } } } as PipelineSpecInput);
  const err = await run.result().catch((e: unknown) => e);
  expect(err).toBeInstanceOf(RunFailedError);
  expect(String((err as Error).message)).toContain('spec.model.variant.n_classes: 3, but the dataset has 2 labels (ham, spam)');
}, 300_000);

test('paused and cancelled mid-training, a GPT domain-head classifier is retried from its checkpoint and ends with the same weights', async () => {
  const { workflowId, pausedAt, retried: r } = await pauseCancelRetry(tg, spec);
  expect(r.training.resumedFrom).toEqual({ runId: workflowId, round: pausedAt });
  expect(r.training.rounds).toBe(3);
  expect(r.training.checkpoint.files['model.safetensors'].sha256).toBe(first.training.checkpoint.files['model.safetensors'].sha256);
  // The retried run evaluates from the round it resumed at: the same accuracies as the first run's.
  const byRound = new Map(first.training.valHistory.map((v) => [v.round, v.accuracy]));
  expect(r.training.valHistory.length).toBeGreaterThan(0);
  for (const v of r.training.valHistory) expect(v.accuracy).toBe(byRound.get(v.round));
}, 600_000);
