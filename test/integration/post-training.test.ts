// postTrainingWorkflow end to end on the real stack pieces: a Temporal dev server, an S3 server
// and both pool workers in this process. A tiny byte-level GPT is trained on Brown text by
// trainingWorkflow; post-training exports it, builds int8 and int4 variants (plus an int4 held to
// an impossible bound), evaluates all side by side, and writes the report, which the real
// `truthgpt report` process prints and `truthgpt generate` decodes with.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import { startTraining, waitTraining, type WaitOutcome } from '../../sdk/cli/run-commands';
import { errorTypeOf } from '../../spec/errors';
import { parsePostTrainingSpec } from '../../spec/post-training';
import type { TrainingSpecInput } from '../../spec/training';
import type { RunReport } from '../../engine/report';
import { contentKeyOf } from '../../infra/store';
import type { postTrainingWorkflow, PostTrainingResult } from '../../workflows/post-training';
import type { S3Fixture } from '../helpers/s3';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';
import type { TemporalFixture } from '../helpers/temporal';

const run = promisify(execFile);
const BIN = path.join(__dirname, '../../bin/truthgpt.js');

let stack: InProcessStack;
let temporal: TemporalFixture;
let s3: S3Fixture;
let trained: Extract<WaitOutcome, { status: 'completed' }>;

// Byte vocabulary, 2 layers × 64 wide, context 64: ~110k parameters, trained 3 × 60 steps.
const training: TrainingSpecInput = {
  name: 'brown-post',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_layer: 2, n_embd: 64, n_head: 2, block_size: 64 } },
  dataset: { name: 'brown-post', corpus: { kind: 'brown', categories: ['humor', 'science_fiction'] }, valFraction: 0.2 },
  workers: 1,
  rounds: 3,
  innerSteps: 60,
  batchSize: 8,
  contextLength: 64,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0 }, grad_clip: 1 },
  outer: { kind: 'average' },
  evalBatches: 4,
  checkpoint: { everySteps: 1000, everySeconds: 0 },
};

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-post', logLevel: 'WARN' });
  ({ temporal, s3 } = stack);
  const id = await startTraining(temporal.client, training, { workflowId: 'brown-post' });
  const r = await waitTraining(temporal.client, id);
  if (r.status !== 'completed') throw new Error(`training failed: ${JSON.stringify(r.error)}`);
  trained = r;
}, 300_000);

afterAll(async () => {
  await stack?.close();
});

const cli = (args: string[]) =>
  run(process.execPath, [BIN, ...args, '--temporal-port', String(temporal.port), '--s3-port', String(s3.server.port), '--state-dir', s3.dir], {
    env: { ...process.env, TRUTHGPT_S3_BUCKET: 'truthgpt-post' },
    timeout: 120_000,
  });

// 80 new tokens after an 8-byte prompt run past block_size 64: the context slides.
function postInput(runId: string, quant: unknown[], evalSpec: Record<string, unknown> = {}) {
  const post = parsePostTrainingSpec({ quant, eval: { batchSize: 8, speedRuns: 5, samples: { prompts: ['The man ', 'It was '], maxNewTokens: 80 }, ...evalSpec } });
  return {
    runId,
    checkpoint: trained.checkpoint,
    dataset: trained.dataset,
    quant: post.quant,
    eval: post.eval,
    trainHistory: trained.trainHistory,
    valHistory: trained.valHistory,
    config: { training, postTraining: { quant } },
  };
}

const CLIPPED = { method: 'int8-static', calibration: { batches: 1, method: 'percentile', percentile: 91 } } as const;

test('int8 within 2% and int4 within 5% of fp32 perplexity are published; a variant over its bound is not, and the report says why', async () => {
  const quant = [
    { method: 'int8-dynamic', maxPplIncrease: 0.02 },
    { method: 'int4', blockSize: 32, maxPplIncrease: 0.05 },
    // A deliberately bad variant: calibration on one batch that clips the outer 9% of every
    // activation's range. It rose +0.39% (AVX2), against a bound of 0.01%. (An int4 of every
    // Linear, head included, is no such variant: it came out 0.002% *below* fp32 there.)
    { name: 'clipped', ...CLIPPED, maxPplIncrease: 0.0001 },
  ];
  const r: PostTrainingResult = await temporal.client.workflow.execute<typeof postTrainingWorkflow>('postTrainingWorkflow', {
    taskQueue: 'truthgpt-cpu',
    workflowId: 'brown-post-quant',
    args: [postInput('brown-post', quant)],
  });
  expect(r.variants.map((v) => [v.name, v.method, v.published])).toEqual([
    ['fp32', 'fp32', true],
    ['int8', 'int8-dynamic', true],
    ['int4', 'int4', true],
    ['clipped', 'int8-static', false],
  ]);
  const [fp32, int8, int4, clipped] = r.variants;
  console.log(r.variants.map((v) => `${v.name}: ppl ${v.ppl.toFixed(4)} (${v.pplDeltaPct.toFixed(3)}%), ${v.sizeBytes} B, p50 ${v.p50Ms.toFixed(2)} ms, ${Math.round(v.tokensPerSec)} tok/s`).join('\n'));
  // The model learned (uniform over 259 bytes would be 259), and the bounds of the issue hold.
  expect(fp32.ppl).toBeLessThan(20);
  expect(int8.pplDeltaPct).toBeLessThanOrEqual(2);
  expect(int4.pplDeltaPct).toBeLessThanOrEqual(5);
  expect(clipped.pplDeltaPct).toBeGreaterThan(0.01);
  expect(clipped.rejectedReason).toMatch(/^validation perplexity \d+\.\d{4} vs fp32 \d+\.\d{4} is \d+\.\d\d% higher, above the bound maxPplIncrease = 0\.01%$/);
  // The quantized files are smaller (embeddings stay float in int8/int4) and stored where the result says.
  expect(int8.sizeBytes).toBeLessThan(fp32.sizeBytes * 0.6);
  expect(int4.sizeBytes).toBeLessThan(int8.sizeBytes);
  // Commits are content-addressed: <prefix>/sha256-<hex>/<name> (infra/store-manifest.ts).
  expect(int8.key).toBe(contentKeyOf('runs/brown-post/models/int8', 'model.onnx', int8.sha256));
  expect(clipped.key).toBe(contentKeyOf('runs/brown-post/rejected/clipped', 'model.onnx', clipped.sha256));
  expect(await s3.store.readManifest('runs/brown-post/models/clipped')).toBeNull();
  for (const v of r.variants) expect((await s3.store.head(v.key)).sha256).toBe(v.sha256);
  for (const v of r.variants) expect(v.p95Ms).toBeGreaterThanOrEqual(v.p50Ms);

  // The report in S3: curves with every val point, one row per variant, the refusal, samples, config.
  expect(r.reportKey).toMatch(/^runs\/brown-post\/report\/sha256-[0-9a-f]{64}\/report\.html$/);
  const html = (await s3.store.get(r.reportKey)).toString('utf8');
  expect([...html.matchAll(/<circle [^>]*data-x="(\d+)"/g)].length).toBe(trained.trainHistory.length + trained.valHistory.length);
  for (const v of r.variants) expect(html).toContain(`data-variant="${v.name}"`);
  expect(html).toContain(`<b>no</b>: ${clipped.rejectedReason}`);
  expect(html).toContain('<th>training.optimizer.optimizer.lr</th><td>0.003</td>');
  const json = JSON.parse((await s3.store.get(r.reportJsonKey)).toString('utf8')) as RunReport;
  // Perplexity covers the whole validation split by default: every token after the first, in the result and the report.
  const valTokens = trained.dataset.val.reduce((n, sh) => n + sh.tokens, 0);
  expect(r.evaluation).toEqual({ tokens: valTokens - 1, splitTokens: valTokens - 1, batchCap: null });
  expect(json.evaluation).toMatchObject({ tokens: valTokens - 1, splitTokens: valTokens - 1, batchCap: null });
  expect(html).toContain(`Validation perplexity over all ${(valTokens - 1).toLocaleString('en-US')} target tokens of the validation split.`);
  // Per variant and prompt: greedy, then the seeded sample with the settings a user would pick.
  const settings = ['greedy, 80 new tokens', 'temperature 0.8, top-k 40, top-p 0.95, seed 0, 80 new tokens'];
  expect(json.samples.map((s) => [s.variant, s.prompt, s.settings])).toEqual(
    ['fp32', 'int8', 'int4', 'clipped'].flatMap((v) => ['The man ', 'It was '].flatMap((p) => settings.map((st) => [v, p, st]))),
  );
  const sample = (variant: string, setting: number) => json.samples.find((s) => s.variant === variant && s.prompt === 'The man ' && s.settings === settings[setting])!.text;
  // Text from a model that learned English bytes: mostly letters and spaces, greedy and sampled.
  for (const setting of [0, 1]) {
    const text = json.samples.filter((s) => s.variant === 'fp32' && s.settings === settings[setting]).map((s) => s.text).join('');
    expect(text.length).toBeGreaterThan(100); // 2 prompts × 80 bytes, past block_size, minus any end-of-text stop
    expect((text.match(/[a-z ]/gi) ?? []).length / text.length).toBeGreaterThan(0.7);
  }
  expect(sample('fp32', 1)).not.toBe(sample('fp32', 0));

  // The real CLI: `truthgpt report ID` prints the story, `generate` decodes with the int8 model.
  const out = path.join(os.tmpdir(), `truthgpt-report-${process.pid}.html`);
  const longPrompt = 'The jury further said in term-end presentments that the City Executive Committee, which had over-all charge';
  const [rep, gen, fromCkpt, missing, cropped] = await Promise.all([
    cli(['report', 'brown-post']).then(async (r) => ({ ...r, saved: await cli(['report', 'brown-post', '--out', out]) })),
    cli(['generate', '--model', 'runs/brown-post/models/int8', '--max-new-tokens', '80', '--json', 'The man ']),
    // A training checkpoint is exported on the fly; its byte vocabulary picks the byte tokenizer.
    cli(['generate', '--model', `s3://truthgpt-post/${trained.checkpoint.prefix}`, '--max-new-tokens', '150', 'The man ']),
    cli(['generate', '--model', 'runs/nope/models/int8', 'The man ']).catch((e: { code: number; stderr: string }) => e),
    cli(['generate', '--model', 'runs/brown-post/models/fp32', '--max-new-tokens', '4', longPrompt]),
  ]);
  // Same weights, same greedy decoding: the checkpoint continues the prompt like the fp32 model did,
  // for 150 new tokens in a 64-token context (the report's 80 are their start).
  expect(fromCkpt.stdout.startsWith(`The man ${sample('fp32', 0)}`)).toBe(true);
  expect(fromCkpt.stderr).toMatch(new RegExp(`${trained.checkpoint.prefix}, fp32: 150 tokens at [\\d.]+ tokens/s; the context slid \\d+ times past block_size 64`));
  expect(cropped.stderr).toContain(`(the prompt is ${longPrompt.length} tokens, longer than the model's block_size 64: it saw only the last 64)`);
  expect((missing as { code: number }).code).toBe(1);
  expect((missing as { stderr: string }).stderr).toMatch(/^truthgpt: model runs\/nope\/models\/int8: nothing is committed under s3:\/\/truthgpt-post\/runs\/nope\/models\/int8 \(expected a model prefix/);
  expect(fs.readFileSync(out, 'utf8')).toBe(html); // --out saves the stored page as is
  if (!process.env.TRUTHGPT_KEEP_REPORT) fs.rmSync(out);
  expect(rep.saved.stderr).toContain(`wrote ${out}`);
  expect(rep.stdout).toContain('TruthGPT run brown-post');
  expect(rep.stdout).toMatch(/clipped\s+int8-static\s+\d+\s+[\d.]+\s+\+[\d.]+%\s+0\.01%.*NO/);
  expect(rep.stdout).toContain(`clipped not published: ${clipped.rejectedReason}`);
  const g = JSON.parse(gen.stdout) as { text: string; tokens: number; method: string; blockSize: number; promptCropped: number; slides: number };
  expect(g.method).toBe('int8-dynamic');
  expect(g).toMatchObject({ blockSize: 64, promptCropped: 0 });
  expect(g.slides).toBeGreaterThan(0);
  // The CLI decodes the same bytes greedily with the same prompt: the same text as the report's sample.
  expect(g.text).toBe(sample('int8', 0));
}, 400_000);

test('a required variant that is refused fails the workflow with QuantRejected after writing the report', async () => {
  const err = await temporal.client.workflow
    .execute<typeof postTrainingWorkflow>('postTrainingWorkflow', {
      taskQueue: 'truthgpt-cpu',
      workflowId: 'brown-post-required',
      args: [postInput('brown-post-required', [{ name: 'strict', ...CLIPPED, maxPplIncrease: 0.0001, required: true }], { batches: 4 })],
    })
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect(errorTypeOf(err)).toBe('QuantRejected');
    expect(((err as WorkflowFailedError).cause as Error).message).toMatch(/required variant strict \(int8-static\) was refused: .*above the bound maxPplIncrease = 0\.01% \(report: runs\/brown-post-required\/report\/sha256-[0-9a-f]{64}\/report\.html\)/);
  expect((await s3.store.readManifest('runs/brown-post-required/report'))!.files.map((f) => f.name)).toContain('report.html');
  // evaluation.batches caps perplexity at 4 batches of 8 × 64: the report says how much of the split that is.
  const report = JSON.parse((await s3.store.getVerified('runs/brown-post-required/report', 'report.json')).toString('utf8')) as RunReport;
  const split = trained.dataset.val.reduce((n, sh) => n + sh.tokens, 0) - 1;
  expect(report.evaluation).toMatchObject({ tokens: 4 * 8 * 64, splitTokens: split, batchCap: 4 });
  const html = (await s3.store.getVerified('runs/brown-post-required/report', 'report.html')).toString('utf8');
  expect(html).toContain(`over 2,048 of the validation split&#39;s ${split.toLocaleString('en-US')} target tokens (${((100 * 2048) / split).toFixed(2)}%, evaluation.batches 4)`);
  // Seeded samples: this run writes the same text as the first test's run of the same model did.
  const first = await s3.store.getVerified('runs/brown-post/report', 'report.json').catch(() => null);
  if (first) {
    const fp32 = (r: RunReport) => r.samples.filter((s) => s.variant === 'fp32');
    expect(fp32(report)).toEqual(fp32(JSON.parse(first.toString('utf8')) as RunReport));
  }
}, 300_000);
