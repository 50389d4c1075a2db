// The Temporal Web UI tells a pipeline's story, checked in a real browser: Debian's chromium driven
// by playwright-core against the dev server's UI. A tiny pipeline runs for real (Temporal, S3, both
// pool workers); the UI's workflow list, filtered by our TruthgptPipeline search attribute, shows
// it; its detail page shows our search attributes with stage `done` and the stage memo.
// Screenshots go to test-output/ (gitignored). On a developer's machine without chromium it is
// skipped, saying why; under CI (CI=true, `.ci/run` installs chromium) a missing browser fails.

import fs from 'node:fs';
import path from 'node:path';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadConfig } from '../../infra/config';
import { TruthGPT, type PipelineResult } from '../../sdk';
import { createPoolWorker, type PoolWorker } from '../../workers/worker';
import { withS3, type S3Fixture } from '../helpers/s3';
import { withTemporal, type TemporalFixture } from '../helpers/temporal';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OUT = path.resolve(__dirname, '../../test-output');
const have = fs.existsSync(CHROMIUM);
const maybe = have ? test : test.skip;
const howToGetIt = `apt-get install -y chromium, or set CHROMIUM_PATH`;
if (!have && process.env.CI) {
  test('chromium is installed: CI runs the browser test', () => {
    throw new Error(`no chromium at ${CHROMIUM}: CI must run the Temporal UI test (${howToGetIt})`);
  });
} else if (!have) {
  console.warn(`temporal-ui test skipped: no chromium at ${CHROMIUM} (${howToGetIt})`);
}

let temporal: TemporalFixture;
let s3: S3Fixture;
let tg: TruthGPT;
let workers: PoolWorker[] = [];
let running: Promise<void>[] = [];
let browser: Browser | undefined;

beforeAll(async () => {
  if (!have) return;
  Runtime.install({ logger: new DefaultLogger('WARN') });
  [temporal, s3] = await Promise.all([withTemporal({ headless: false }), withS3({ bucket: 'truthgpt-ui' })]);
  const config = loadConfig({
    TRUTHGPT_TEMPORAL_PORT: String(temporal.port),
    TRUTHGPT_UI_PORT: String(temporal.uiPort),
    TRUTHGPT_S3_PORT: String(s3.server.port),
    TRUTHGPT_S3_BUCKET: 'truthgpt-ui',
    TRUTHGPT_STATE_DIR: s3.dir,
  });
  workers = await Promise.all([createPoolWorker(config, 'workflows'), createPoolWorker(config, 'cpu'), createPoolWorker(config, 'gpu')]);
  running = workers.map((w) => w.run());
  tg = await TruthGPT.connect({ config });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // A new profile per launch (playwright's default temp user-data-dir) and nothing phoning home.
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run'],
  });
  fs.mkdirSync(OUT, { recursive: true });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await tg?.close();
  for (const w of workers) if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
  await Promise.allSettled(running);
  await Promise.allSettled([temporal?.close(), s3?.close()]);
});

async function tab(page: Page, name: string): Promise<string> {
  await page.getByRole('link', { name, exact: true }).or(page.getByRole('tab', { name, exact: true })).first().click();
  await page.waitForTimeout(500);
  return page.innerText('main');
}

maybe('the workflow list finds the pipeline by our search attribute; its page shows the attributes, stage done and the stage memo', async () => {
  const run = await tg.startPipeline({
    name: 'ui-check',
    model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
    dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
    training: { workers: 2, rounds: 1, innerSteps: 5, batchSize: 4, contextLength: 32, evalBatches: 1 },
    evaluation: { batches: 1, speedRuns: 1, warmup: 0, samples: { prompts: ['The '], maxNewTokens: 4 } },
  });
  const result: PipelineResult = await run.result();
  const ui = `http://127.0.0.1:${temporal.uiPort}/namespaces/default`;
  const page = await browser!.newPage({ viewport: { width: 1600, height: 1000 } });

  // The list, filtered by our TruthgptPipeline attribute: the pipeline run and its training child.
  const query = encodeURIComponent(`TruthgptPipeline = "ui-check"`);
  await page.goto(`${ui}/workflows?query=${query}`);
  const row = page.getByRole('link', { name: run.workflowId, exact: true });
  await row.waitFor({ timeout: 30_000 });
  const list = await page.innerText('main');
  expect(list).toContain('pipelineWorkflow');
  expect(list).toContain('Completed');
  // The training child carries the pipeline's name too, so the filter shows the whole run.
  expect(list).toContain(`${run.workflowId}-train`);
  expect(list).toContain('trainingWorkflow');
  await page.screenshot({ path: path.join(OUT, 'temporal-ui-list.png') });

  await row.click();
  await page.waitForURL(new RegExp(`/workflows/${run.workflowId}/`), { timeout: 30_000 });
  await page.getByText('pipelineWorkflow').first().waitFor();
  const attributes = await tab(page, 'Search Attributes');
  for (const s of ['TruthgptStage', 'done', 'TruthgptPipeline', 'ui-check', 'TruthgptModelFamily', 'gpt', 'TruthgptBestValLoss']) expect(attributes).toContain(s);
  expect(attributes).toContain(String(result.training.bestValLoss).slice(0, 5));
  await page.screenshot({ path: path.join(OUT, 'temporal-ui-search-attributes.png'), fullPage: true });

  const memo = await tab(page, 'Memo');
  for (const s of ['stages', 'postTraining', 'trainingWorkflowId']) expect(memo).toContain(s);
  await page.screenshot({ path: path.join(OUT, 'temporal-ui-memo.png'), fullPage: true });
  await page.close();
}, 240_000);
