// Every example in examples/ runs, as a user would run it: the TS scripts as `tsx` child processes
// and the demo through the `truthgpt` CLI, all against a real Temporal dev server, a real S3 server
// and both pool workers (in this process). Every spec file parses; gpt-brown.yaml (an hour of
// training) is only validated here.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import YAML from 'yaml';
import { loadConfig, type Config } from '../../infra/config';
import { listSchedules, parsePipelineSpec, TruthGPT, type PipelineResult, type PipelineSpecInput } from '../../sdk';
import { createPoolWorker, type PoolWorker } from '../../workers/worker';
import { withS3, type S3Fixture } from '../helpers/s3';
import { withTemporal, type TemporalFixture } from '../helpers/temporal';

const exec = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');
const EXAMPLES = path.join(REPO, 'examples');
const TSX = path.join(REPO, 'node_modules/.bin/tsx');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let temporal: TemporalFixture;
let s3: S3Fixture;
let config: Config;
let env: Record<string, string>;
let tg: TruthGPT;
let workers: PoolWorker[] = [];
let running: Promise<void>[] = [];

beforeAll(async () => {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  [temporal, s3] = await Promise.all([withTemporal(), withS3({ bucket: 'truthgpt-examples' })]);
  env = {
    ...(process.env as Record<string, string>),
    TRUTHGPT_TEMPORAL_PORT: String(temporal.port),
    TRUTHGPT_UI_PORT: String(temporal.uiPort),
    TRUTHGPT_S3_PORT: String(s3.server.port),
    TRUTHGPT_S3_BUCKET: 'truthgpt-examples',
    TRUTHGPT_STATE_DIR: s3.dir,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
  config = loadConfig(env);
  workers = await Promise.all([createPoolWorker(config, 'workflows'), createPoolWorker(config, 'cpu'), createPoolWorker(config, 'gpu')]);
  running = workers.map((w) => w.run());
  tg = await TruthGPT.connect({ config });
}, 180_000);

afterAll(async () => {
  await tg?.close();
  for (const w of workers) if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
  await Promise.allSettled(running);
  await Promise.allSettled([temporal?.close(), s3?.close()]);
});

const script = (name: string, ...args: string[]) => exec(TSX, [path.join(EXAMPLES, name), ...args], { cwd: REPO, env, timeout: 240_000 });
const tiny = () => YAML.parse(fs.readFileSync(path.join(EXAMPLES, 'tiny.json'), 'utf8')) as PipelineSpecInput;
/** A finished tiny pipeline (the watch-run test's when it ran), whose checkpoint the schedule example fine-tunes. */
let tinyRun: Promise<PipelineResult> | null = null;
const tinyResult = () => (tinyRun ??= tg.startPipeline(tiny()).then((r) => r.result()));

test('every spec in examples/ is a valid PipelineSpec', () => {
  const specs = fs.readdirSync(EXAMPLES).filter((f) => /\.(ya?ml|json)$/.test(f));
  expect(specs.sort()).toEqual(['demo.yaml', 'gpt-brown.yaml', 'tiny.json']);
  for (const f of specs) {
    const spec = parsePipelineSpec(YAML.parse(fs.readFileSync(path.join(EXAMPLES, f), 'utf8')));
    expect(spec.training.model.family).toBe('gpt');
  }
  // The demo is what the issue asks for: two DiLoCo workers on Brown non-fiction, LoRA on the
  // fiction genres, int8 quantization.
  const demo = parsePipelineSpec(YAML.parse(fs.readFileSync(path.join(EXAMPLES, 'demo.yaml'), 'utf8')));
  expect([demo.training.workers, demo.training.dataset.corpus.kind, demo.quantization.map((q) => q.method)]).toEqual([2, 'brown', ['int8-dynamic']]);
  const fiction = ['fiction', 'mystery', 'science_fiction', 'adventure', 'romance', 'humor'];
  const genres = (c: { kind: string; categories?: string[] }) => (c.kind === 'brown' ? (c.categories ?? []) : []);
  expect(genres(demo.training.dataset.corpus).filter((g) => fiction.includes(g))).toEqual([]);
  expect(genres(demo.lora!.dataset!.corpus).sort()).toEqual([...fiction].sort());
});

test('start-pipeline.ts starts the tiny spec and prints its variants and report', async () => {
  const { stdout } = await script('start-pipeline.ts', path.join(EXAMPLES, 'tiny.json'));
  expect(stdout).toMatch(/^started pipeline-tiny-\d{8}-\d{6}/);
  expect(stdout).toMatch(/trained 3 rounds, val loss \d\.\d{4}/);
  expect(stdout).toMatch(/fp32 +ppl \d/);
  expect(stdout).toMatch(/int8 +ppl \d/);
  const key = /report (\S+)/.exec(stdout)![1];
  expect((await s3.store.list(key)).length).toBeGreaterThan(0);
}, 240_000);

test('watch-run.ts follows a run from training to done and prints its stages', async () => {
  const run = await tg.startPipeline(tiny());
  tinyRun = run.result();
  const { stdout } = await script('watch-run.ts', run.workflowId);
  expect(stdout).toMatch(/RUNNING +train/);
  expect(stdout).toMatch(/COMPLETED done/);
  expect(stdout).toMatch(/train +done +3 rounds/);
  expect(stdout).toMatch(/lora +skipped +not requested/);
  expect(stdout).toMatch(/postTraining +done +fp32 ppl/);
  await expect(script('watch-run.ts', 'pipeline-nope')).rejects.toMatchObject({ stderr: expect.stringContaining('UnknownRunError: no run with id pipeline-nope') });
}, 240_000);

test('retry-failed-run.ts continues a cancelled run from its checkpoint', async () => {
  const run = await tg.startPipeline(tiny());
  for (let p = await run.progress(); !(p.training && p.training.round >= 1); p = await run.progress()) await sleep(100);
  await run.cancel();
  await run.result().catch(() => null);
  const { stdout } = await script('retry-failed-run.ts', run.workflowId);
  expect(stdout).toContain(`continuing ${run.workflowId}`);
  const m = /resumed (\S+) at round (\d+); finished 3 rounds/.exec(stdout);
  expect(m?.[1]).toBe(run.workflowId);
  expect(Number(m?.[2])).toBeGreaterThanOrEqual(1);
}, 240_000);

test('schedule-fine-tune.ts schedules a LoRA fine-tune of a trained checkpoint, fires it, waits for the run and deletes the schedule', async () => {
  const base = (await tinyResult()).training.checkpoint.prefix;
  const { stdout } = await script('schedule-fine-tune.ts', base);
  const id = /^scheduled (fiction-\d+) every minute$/m.exec(stdout)![1];
  expect(stdout).toMatch(/^published datasets\/sched-fiction-\w+$/m);
  const runId = /^run (finetune-\S+)$/m.exec(stdout)![1];
  expect(runId.startsWith(`finetune-${id}`)).toBe(true);
  const m = /^fine-tuned 40 steps: val loss (\d\.\d{4}) → (\d\.\d{4}), \d+\.\d\d% trainable$/m.exec(stdout);
  expect(Number(m![2])).toBeLessThan(Number(m![1]));
  const adapter = /^adapter (\S+)$/m.exec(stdout)![1];
  expect((await s3.store.readManifest(adapter))!.files.map((f) => f.name)).toContain('adapter_model.safetensors');
  expect(stdout).toContain(`deleted schedule ${id}`);
  // The run was the schedule's (Temporal fired it), and the schedule is gone.
  const desc = await tg.client.workflow.getHandle(runId).describe();
  expect(desc.type).toBe('fineTuneWorkflow');
  expect(desc.searchAttributes.TemporalScheduledById).toEqual([id]);
  expect((await listSchedules(tg.client)).map((s) => s.id)).not.toContain(id);
}, 240_000);

test('the demo (`npm start` without bringing a stack up) runs examples/demo.yaml through the CLI and saves the report', async () => {
  const { stdout, stderr } = await exec(TSX, [path.join(REPO, 'sdk/cli/main.ts'), 'demo', '--no-up'], { cwd: REPO, env, timeout: 300_000 });
  expect(stderr).toMatch(/started pipeline-demo-/);
  expect(stderr).toMatch(/train:train +round 1\/6/); // progress lines (no TTY: one per stage/round)
  expect(stderr).toMatch(/\] lora:train +round \d\/4/); // the bar follows the LoRA child during its stage
  console.log(stdout.split('\n')[0]); // the run's id, rounds, tokens and wall time
  // LoRA on fiction after non-fiction pretraining: the held-out fiction loss fell.
  const lora = /^LoRA +val loss (\d\.\d{4}) → (\d\.\d{4}) \(perplexity .*\) on datasets\/brown-fiction-\w+$/m.exec(stdout);
  expect(Number(lora![2])).toBeLessThan(Number(lora![1]));
  expect(stdout).toMatch(/^lora +done +val loss /m);
  expect(stdout).toMatch(/parameters trained \(\d+\.\d\d%\), base weights unchanged; adapter s3:\/\/truthgpt-examples\/finetunes\/pipeline-demo-\S+-lora\/adapter\/sha256-[0-9a-f]{64}\/adapter_model\.safetensors$/m);
  expect(stdout).toMatch(/^fp32 +fp32 +\d+\.\d{3}/m);
  expect(stdout).toMatch(/^int8 +int8-dynamic +\d+\.\d{3}/m);
  // The demo scores the whole validation split, and the summary says so.
  expect(stdout).toMatch(/^val ppl over all [\d,]+ target tokens of the validation split$/m);
  expect(stdout).toMatch(/^postTraining +done +fp32 ppl [\d.]+, int8 ppl [\d.]+ on the whole val split \(\d+ tokens\); report /m);
  const file = /^report +(\S+\.html)/m.exec(stdout)![1];
  expect(fs.readFileSync(file, 'utf8')).toContain('<svg');
  expect(stdout).toMatch(new RegExp(`^Web UI +http://127\\.0\\.0\\.1:${temporal.uiPort}/namespaces/default/workflows/pipeline-demo-`, 'm'));
  let runs = await tg.listRuns({ pipeline: 'demo' });
  for (let i = 0; i < 40 && runs[0]?.stage !== 'done'; i++) {
    await sleep(250); // visibility is eventually consistent
    runs = await tg.listRuns({ pipeline: 'demo' });
  }
  expect(runs[0]).toMatchObject({ status: 'COMPLETED', stage: 'done' });
}, 300_000);
