// pipelineWorkflow through the SDK, end to end on a real Temporal dev server, a real S3 server and
// both pool workers: a tiny GPT on Brown humor with two DiLoCo workers, int8 quantization and a
// report. A pipeline with a LoRA stage pretrains on Brown non-fiction, fine-tunes adapters on
// fiction and quantizes the merged model. Then the user-facing edges: a bad spec is refused before
// anything starts, an id is never reused, and a cancelled run retried from its checkpoint ends
// with the very same weights.

import { defaultPayloadConverter } from '@temporalio/common';
import { startS3Server, type S3Server } from '../../infra/s3server';
import { InvalidSpecError, RunFailedError, RunIdTakenError, TruthGPT, UnknownRunError, type PipelineResult, type PipelineSpecInput, type RetryingActivity } from '../../sdk';
import { TruthgptBestValLoss, TruthgptModelFamily, TruthgptPipeline, TruthgptStage } from '../../spec/temporal-names';
import type { StageOutcome } from '../../workflows/pipeline';
import { storedSha256s, type S3Fixture } from '../helpers/s3';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';
import type { TemporalFixture } from '../helpers/temporal';

let stack: InProcessStack;
let temporal: TemporalFixture;
let s3: S3Fixture;
let tg: TruthGPT;
let first: PipelineResult;
/** The S3 server the outage test starts again on the same port (the fixture closes only its own). */
let restartedS3: S3Server | null = null;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-pipeline' });
  ({ temporal, s3 } = stack);
  tg = await TruthGPT.connect({ config: stack.config });
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
  await restartedS3?.close();
});

// Byte vocabulary, 2 layers × 32 wide, context 32: each round takes a second or two on one core.
const spec = (over: Partial<PipelineSpecInput> = {}): PipelineSpecInput => ({
  name: 'brown-pipe',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  training: {
    workers: 2,
    rounds: 3,
    innerSteps: 15,
    batchSize: 8,
    contextLength: 32,
    optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 }, grad_clip: 1 },
    evalBatches: 2,
    checkpoint: { everySteps: 100, everySeconds: 0 },
  },
  quantization: [{ method: 'int8-dynamic', maxPplIncrease: 0.05 }],
  evaluation: { batches: 2, speedRuns: 2, warmup: 1, calibrationBatches: 2, samples: { prompts: ['The '], maxNewTokens: 8 } },
  ...over,
});

test('a pipeline trains, quantizes and reports; memo, search attributes and listRuns tell the story', async () => {
  const run = await tg.startPipeline(spec());
  expect(run.workflowId).toMatch(/^pipeline-brown-pipe-\d{8}-\d{6}$/);
  first = await run.result();

  // Training: 3 rounds × 15 steps per worker, two workers; the loss fell from the untrained ln(259) ≈ 5.56.
  expect(first.training.rounds).toBe(3);
  expect(first.training.tokensSeen).toBe(3 * 2 * 15 * 8 * 32);
  const losses = first.training.valHistory.map((v) => v.loss);
  expect(losses[0]).toBeGreaterThan(5.3);
  expect(losses[losses.length - 1]).toBeLessThan(losses[0] - 0.5);
  expect(first.training.checkpoint.prefix).toBe(`runs/${run.workflowId}/global/r000003`);
  // Post-training: fp32 and the int8 variant were evaluated, and the report is in the store.
  expect(first.variants.map((v) => v.name).sort()).toEqual(['fp32', 'int8']);
  expect(first.reportKey).toContain(run.workflowId);
  expect((await s3.store.list(first.reportKey)).length).toBeGreaterThan(0);
  expect(first.stages.map((s: StageOutcome) => [s.stage, s.status])).toEqual([
    ['train', 'done'],
    ['lora', 'skipped'],
    ['postTraining', 'done'],
  ]);
  expect(first.lora).toBeNull();

  // What the Temporal UI shows: search attributes and the memo.
  const desc = await tg.describe(run.workflowId);
  expect(desc.searchAttributes[TruthgptStage.name]).toEqual(['done']);
  expect(desc.searchAttributes[TruthgptPipeline.name]).toEqual(['brown-pipe']);
  expect(desc.searchAttributes[TruthgptModelFamily.name]).toEqual(['gpt']);
  expect((desc.searchAttributes[TruthgptBestValLoss.name] as number[])[0]).toBeCloseTo(first.training.bestValLoss!, 6);
  expect((desc.memo as { stages: StageOutcome[] }).stages[0].summary).toContain('3 rounds');

  // A closed run's progress comes from its memo and the training child's query.
  const p = await run.progress();
  expect(p.status).toBe('COMPLETED');
  expect(p.pipeline?.stage).toBe('done');
  expect(p.training).toMatchObject({ stage: 'done', round: 3, rounds: 3 });

  // Visibility is eventually consistent: the run shows up with stage done within a few seconds.
  let listed = await tg.listRuns({ pipeline: 'brown-pipe', stage: 'done' });
  for (let i = 0; i < 40 && !listed.some((r) => r.workflowId === run.workflowId); i++) {
    await sleep(250);
    listed = await tg.listRuns({ pipeline: 'brown-pipe', stage: 'done' });
  }
  expect(listed.find((r) => r.workflowId === run.workflowId)).toMatchObject({ status: 'COMPLETED', stage: 'done', family: 'gpt', pipeline: 'brown-pipe' });
  expect(await tg.listRuns({ pipeline: 'no-such-pipeline' })).toEqual([]);

  // A run that has ended cannot be cancelled, and saying so beats "cancel requested".
  await expect(run.cancel()).rejects.toThrow(`${run.workflowId} is completed, not running: there is nothing to cancel`);

  // Its id is never reused.
  await expect(tg.startPipeline(spec(), { workflowId: run.workflowId })).rejects.toThrow(RunIdTakenError);
  await expect(tg.startPipeline(spec(), { workflowId: run.workflowId })).rejects.toThrow(`run id ${run.workflowId} is already used`);
}, 300_000);

test('model.from: a pipeline starts from a stored checkpoint (continued pretraining, or 0 rounds: evaluate and post-train it as it is)', async () => {
  const from = first.training.checkpoint.prefix;
  const fromSpec = (training: Partial<PipelineSpecInput['training']>, over: Partial<PipelineSpecInput> = {}) =>
    spec({ model: { from }, training: { ...spec().training, ...training }, quantization: [], ...over });

  // Refused before anything starts: an architecture field that differs, a preset beside it, a missing model.
  const bad = (s: PipelineSpecInput) => tg.startPipeline(s).then(() => 'started', (e: unknown) => e);
  const arch = await bad(fromSpec({}, { model: { from, config: { n_layer: 4, dropout: 0.1 } } }));
  expect(arch).toBeInstanceOf(InvalidSpecError);
  expect((arch as InvalidSpecError).issues).toEqual([`spec.model.config.n_layer: 4 differs from ${from}, which has 2; a stored model keeps its architecture (only dropout, dropout_seed, attention may be set)`]);
  expect(((await bad(fromSpec({}, { model: { from, preset: 'tiny-gpt' } }))) as InvalidSpecError).issues).toEqual([`spec.model.preset: cannot be combined with from: the model's config is ${from}'s`]);
  expect(((await bad(fromSpec({}, { model: { from: 'models/nobody' } }))) as InvalidSpecError).issues[0]).toBe(
    'spec.model.from: nothing is committed under s3://truthgpt-pipeline/models/nobody (expected an imported model such as models/<name>, or a checkpoint such as runs/<id>/global/r000004)',
  );
  // 0 rounds without a stored model trains nothing, so it is refused.
  expect(((await bad(spec({ training: { ...spec().training, rounds: 0 } }))) as InvalidSpecError).issues[0]).toMatch(/^spec\.training\.rounds: must be at least 1 for a new model/);

  // Continued pretraining: r0 holds exactly the stored weights (same val loss as where the first
  // run ended, on the same dataset and batches), and one more round lowers it.
  const more = await (await tg.startPipeline(fromSpec({ rounds: 1 }))).result();
  const firstEnd = first.training.valHistory[first.training.valHistory.length - 1].loss;
  expect(more.training.valHistory[0].loss).toBe(firstEnd);
  expect(more.training.valHistory[1].loss).toBeLessThan(firstEnd);
  expect(more.stages[0].summary).toMatch(/^1 rounds, 7680 tokens/);

  // 0 rounds: the stored model itself is evaluated and post-trained; nothing trains.
  const asIs = await (await tg.startPipeline(fromSpec({ rounds: 0 }))).result();
  expect(asIs.training.rounds).toBe(0);
  expect(asIs.training.tokensSeen).toBe(0);
  expect(asIs.training.valHistory.map((v) => v.loss)).toEqual([firstEnd]);
  const r0 = asIs.training.checkpoint;
  expect(r0.prefix).toBe(`runs/${asIs.workflowId}/global/r000000`);
  expect(r0.files['model.safetensors'].sha256).toBe(first.training.checkpoint.files['model.safetensors'].sha256);
  expect(asIs.variants.map((v) => v.name)).toEqual(['fp32']);
  expect(asIs.variants[0].ppl).toBeCloseTo(first.variants.find((v) => v.name === 'fp32')!.ppl, 10);
}, 300_000);

test('an S3 outage mid-training: progress shows the retrying activity, its attempt and its error; the run ends with the same weights', async () => {
  const run = await tg.startPipeline(spec({ quantization: [] }));
  for (let p = await run.progress(); (p.training?.round ?? 0) < 1; p = await run.progress()) {
    if (p.status !== 'RUNNING') throw new Error(`the run ended before its first round: ${p.status}`);
    await sleep(50);
  }
  const { port, dir } = s3.server;
  await s3.server.close();
  let seen: RetryingActivity | undefined;
  try {
    for (const deadline = Date.now() + 120_000; !seen && Date.now() < deadline; await sleep(250)) {
      seen = (await run.progress()).retrying.find((r) => r.attempt >= 2);
    }
  } finally {
    restartedS3 = await startS3Server({ dir, port, bucket: 'truthgpt-pipeline' });
  }
  expect(seen).toMatchObject({ workflowId: `${run.workflowId}-train` });
  expect(seen!.lastFailure).toMatch(/ECONNREFUSED|connect/);
  const r = await run.result();
  expect(r.training.checkpoint.files['model.safetensors'].sha256).toBe(first.training.checkpoint.files['model.safetensors'].sha256);
}, 300_000);

test('LoRA stage: non-fiction pretraining, adapters on fiction lower its val loss, base untouched, post-training quantizes the merged model', async () => {
  const run = await tg.startPipeline(
    spec({
      name: 'brown-lora',
      dataset: { name: 'brown-reviews', corpus: { kind: 'brown', categories: ['reviews'] }, valFraction: 0.2 },
      lora: {
        dataset: { name: 'brown-fiction-tiny', corpus: { kind: 'brown', categories: ['mystery', 'science_fiction'] }, valFraction: 0.1 },
        lora: { r: 8, lora_alpha: 16 },
        train: {
          steps: 120,
          stepsPerActivity: 60,
          batchSize: 8,
          contextLength: 32,
          // lr 1e-2 learned nothing on an AVX2 machine (train loss flat at ~3.2, val 3.13 → 3.73);
          // 3e-3 lowers it there (observed 3.1292 → 3.1174).
          optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0 }, grad_clip: 1 },
          evalBatches: 8,
        },
      },
    }),
  );
  const r = await run.result();
  const lora = r.lora!;
  console.log(`pipeline LoRA: fiction val loss ${lora.valLossBefore.toFixed(4)} → ${lora.valLossAfter.toFixed(4)}, trainable ${lora.trainable}/${lora.total}, ${r.wallMs} ms`);
  expect(r.stages.map((s: StageOutcome) => [s.stage, s.status, s.workflowId])).toEqual([
    ['train', 'done', `${run.workflowId}-train`],
    ['lora', 'done', `${run.workflowId}-lora`],
    ['postTraining', 'done', `${run.workflowId}-post`],
  ]);
  // The adapters learned fiction, and merging them changes nothing the loss can see.
  expect(lora.valLossAfter).toBeLessThan(lora.valLossBefore);
  expect(Math.abs(lora.valLossAfterMerged - lora.valLossAfter)).toBeLessThan(1e-5);
  expect(lora.steps).toBe(120);
  expect(lora.datasetPrefix).toMatch(/^datasets\/brown-fiction-tiny-/);
  // c_attn of 2 layers × 32 wide, r 8: A (8, 32) + B (96, 8) per layer.
  expect(lora.trainable).toBe(2 * (8 * 32 + 96 * 8));
  expect(lora.trainableFraction).toBeCloseTo(lora.trainable / lora.total, 12);
  expect(lora.adapterKey).toMatch(new RegExp(`^${lora.adapterPrefix}/sha256-[0-9a-f]{64}/adapter_model\\.safetensors$`));
  expect((await s3.store.head(lora.adapterKey)).size).toBeGreaterThan(0);

  // Only adapters trained: the training checkpoint's files hash as training committed them.
  const trained = r.training.checkpoint;
  const now = await storedSha256s(s3.store, trained.prefix);
  expect(now).toEqual(Object.fromEntries(Object.entries(trained.files).map(([n, f]) => [n, f.sha256])));
  expect(lora.baseSha256).toEqual(now);
  expect(lora.merged.files['model.safetensors'].sha256).not.toBe(trained.files['model.safetensors'].sha256);

  // Post-training exported, quantized and evaluated the merged model, not the base.
  expect(r.variants.map((v) => v.name).sort()).toEqual(['fp32', 'int8']);
  const fp32 = await s3.store.readManifest(`runs/${run.workflowId}/models/fp32`);
  expect(fp32?.meta).toMatchObject({ model: { checkpoint: lora.merged.prefix, method: 'fp32' } });

  // The UI's story: memo and stage; progress() shows the lora child.
  const desc = await tg.describe(run.workflowId);
  expect(desc.searchAttributes[TruthgptStage.name]).toEqual(['done']);
  expect((desc.memo as { lora: unknown }).lora).toMatchObject({ valLossAfter: lora.valLossAfter, adapterKey: lora.adapterKey, trainableFraction: lora.trainableFraction });
  expect((desc.memo as { stages: StageOutcome[] }).stages[1].summary).toMatch(/^val loss \d\.\d{4} → \d\.\d{4} \(ppl .*\), 2048 trainable \(\d+\.\d\d%\), adapter finetunes\//);
  const p = await run.progress();
  expect(p.pipeline).toMatchObject({ stage: 'done', loraWorkflowId: `${run.workflowId}-lora` });
  expect(p.lora).toMatchObject({ stage: 'done', round: 2, rounds: 2, step: 120, steps: 120 });

  // The report says the evaluated model is the LoRA-merged one: a headline sentence and its own section.
  const page = (await s3.store.get(r.reportKey)).toString('utf8');
  expect(page).toContain(`It was then LoRA-tuned on <b>${lora.datasetPrefix}</b> for 120 steps: validation loss `);
  expect(page).toContain(`${(lora.trainableFraction * 100).toFixed(2)}% of parameters trained; the variants below are the merged model.`);
  const section = /<h2>LoRA fine-tune<\/h2>([\s\S]*?)<h2>/.exec(page)![1];
  expect(section).toContain(`<th>base checkpoint</th><td>${trained.prefix}</td>`);
  expect(section).toContain(`<th>adapter</th><td>${lora.adapterKey}</td>`);
  expect(section).toContain('<code>datasets/brown-reviews-');

  // Each main activity carries a one-line summary in its ActivityTaskScheduled event (the UI shows it).
  const summaries = async (workflowId: string) =>
    ((await temporal.client.workflow.getHandle(workflowId).fetchHistory()).events ?? [])
      .filter((e) => e.activityTaskScheduledEventAttributes)
      .map((e) => [e.activityTaskScheduledEventAttributes!.activityType!.name, e.userMetadata?.summary ? defaultPayloadConverter.fromPayload<string>(e.userMetadata.summary) : null]);
  const train = await summaries(`${run.workflowId}-train`);
  expect(train).toContainEqual(['trainShard', `round 0 shard 1: 15 steps from runs/${run.workflowId}/global/r000000; the last shard aggregates r1 if the round fits its cache`]);
  // The round's last shard aggregates in its own process; an aggregateRound activity runs only where
  // it could not (activities/training.ts aggregateIfLast), and then says what it does.
  for (const [, s] of train.filter(([type]) => type === 'aggregateRound')) expect(s).toMatch(/^round \d+: outer optimizer over 2 shard\(s\) → global checkpoint r\d+$/);
  expect(train.every(([, s]) => typeof s === 'string' && s.length > 0)).toBe(true);
  const tune = await summaries(`${run.workflowId}-lora`);
  expect(tune).toContainEqual(['trainAdapter', `chunk 2/2: LoRA r=8 steps 60–120 of 120 on ${lora.datasetPrefix}`]);
  const post = await summaries(`${run.workflowId}-post`);
  expect(post).toContainEqual(['quantizeModel', 'quantize int8-dynamic as int8, gated at val ppl +5.00%']);
  expect(post.find(([name]) => name === 'evaluateModels')?.[1]).toBe(`evaluate fp32, int8: ppl on 2 val batches of ${lora.datasetPrefix}, latency, samples`);
}, 180_000);

test('a bad spec is refused before anything starts, every bad field named', async () => {
  const before = (await temporal.client.workflow.count()).count;
  const bad = spec({ training: { ...spec().training, rounds: 0, contextLength: 64 }, quantization: [{ method: 'int9' } as never] });
  const err = await tg.startPipeline(bad).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(InvalidSpecError);
  expect((err as InvalidSpecError).issues).toEqual([
    'spec.training.contextLength: must not exceed model block_size (64 > 32)',
    'spec.training.rounds: must be at least 1 for a new model (0 rounds trains nothing; start from a stored model with model.from to evaluate or fine-tune it without pretraining)',
    expect.stringMatching(/^spec\.quantization\.0\.method: /),
  ]);
  await expect(tg.startPipeline(spec({ lora: { lora: { r: 0 }, train: { steps: 10, batchSize: 4, contextLength: 64 } } }))).rejects.toThrow(
    'invalid pipeline spec: spec.lora.lora.r: Too small: expected number to be >0',
  );
  await expect(tg.startPipeline(spec({ lora: { train: { steps: 10, batchSize: 4, contextLength: 64 } } }))).rejects.toThrow(
    'invalid pipeline spec: spec.lora.train.contextLength: must not exceed model block_size (64 > 32)',
  );
  const bpe = { ...spec(), dataset: { ...spec().dataset, tokenizer: { kind: 'bpe' as const, vocabSize: 259 } } };
  await expect(tg.startPipeline({ ...bpe, lora: { dataset: { name: 'fiction', corpus: { kind: 'brown' } }, train: { steps: 10, batchSize: 4, contextLength: 32 } } })).rejects.toThrow(
    /spec\.lora\.dataset\.tokenizer: must be the training dataset's tokenizer/,
  );
  await expect(tg.getPipeline('pipeline-nope')).rejects.toThrow(UnknownRunError);
  expect((await temporal.client.workflow.count()).count).toBe(before);
}, 60_000);

test('pause holds a run at a round boundary; cancelled, it is retried from its checkpoint and ends with the same weights', async () => {
  const run = await tg.startPipeline(spec());
  let p = await run.progress();
  for (let i = 0; i < 600 && !(p.training && p.training.round >= 1); i++) {
    await sleep(100);
    p = await run.progress();
  }
  await run.pause();
  for (let i = 0; i < 600 && p.training?.stage !== 'paused'; i++) {
    await sleep(100);
    p = await run.progress();
  }
  expect(p.pipeline?.paused).toBe(true);
  expect(p.training).toMatchObject({ stage: 'paused', paused: true });
  const pausedAt = p.training!.round;
  expect(pausedAt).toBeGreaterThanOrEqual(1);

  await run.cancel();
  const err = await run.result().catch((e: unknown) => e);
  expect(err).toBeInstanceOf(RunFailedError);
  expect((err as RunFailedError).status).toBe('CANCELLED');
  expect((await tg.describe(run.workflowId)).searchAttributes[TruthgptStage.name]).toEqual(['cancelled']);

  const again = await tg.retryFromCheckpoint(run.workflowId);
  const r = await again.result();
  expect(r.continues).toEqual([run.workflowId]);
  expect(r.training.resumedFrom).toEqual({ runId: run.workflowId, round: pausedAt });
  expect(r.training.rounds).toBe(3);
  // Data order is a function of (seed, shard, step): the resumed run's final weights are the
  // uninterrupted run's, bit for bit.
  expect(r.training.checkpoint.files['model.safetensors'].sha256).toBe(first.training.checkpoint.files['model.safetensors'].sha256);
  expect((await tg.describe(again.workflowId)).memo).toMatchObject({ continues: [run.workflowId] });
  await expect(tg.retryFromCheckpoint(again.workflowId)).rejects.toThrow('is completed; only failed, terminated, cancelled or timed-out runs can be retried');
}, 300_000);
