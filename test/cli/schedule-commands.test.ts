// `truthgpt schedule ...` as a user runs it, against a real Temporal dev server (no workers: a
// triggered firing starts a fineTuneWorkflow that simply waits for one).

import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ScheduleSummaryRow } from '../../sdk/schedules';
import { withTemporal, type TemporalFixture } from '../helpers/temporal';

const exec = promisify(execFile);
const CLI = join(__dirname, '..', '..', 'bin', 'truthgpt.js');
const dir = mkdtempSync(join(tmpdir(), 'truthgpt-schedule-cli-'));
let temporal: TemporalFixture;

beforeAll(async () => {
  temporal = await withTemporal();
}, 120_000);

afterAll(async () => {
  await temporal?.close();
});

const cli = async (...args: string[]) => (await exec(process.execPath, [CLI, ...args, '--temporal-port', String(temporal.port)], { encoding: 'utf8' })).stdout.trim();

const SPEC = `
id: nightly-fiction
every: 1h
base: { kind: checkpoint, prefix: runs/pre/global/r000002 }
datasetPrefix: datasets/fiction-
lora: { r: 8, lora_alpha: 16 }
train: { steps: 100, batchSize: 8, contextLength: 32 }
continueFromAdapter: true
catchupWindow: 5 minutes
`;

test('create, list, pause, trigger and delete a fine-tune schedule', async () => {
  const file = join(dir, 'schedule.yaml');
  writeFileSync(file, SPEC);
  expect(await cli('schedule', 'create', file, '--paused')).toBe('created schedule nightly-fiction: fineTuneWorkflow every 1h on the newest dataset under datasets/fiction-');

  // The schedule as Temporal holds it: paused, our workflow, SKIP overlap and the catch-up window we set.
  const desc = await temporal.client.schedule.getHandle('nightly-fiction').describe();
  expect(desc.state.paused).toBe(true);
  expect(desc.policies).toMatchObject({ overlap: 'SKIP', catchupWindow: 5 * 60_000 });
  expect(desc.action).toMatchObject({ type: 'startWorkflow', workflowType: 'fineTuneWorkflow', taskQueue: 'truthgpt-cpu' });
  const spec = (desc.action as { args: { spec: Record<string, unknown> }[] }).args[0].spec;
  expect(spec).toMatchObject({ lineage: 'nightly-fiction', skipIfSeen: true, continueFromAdapter: true, dataset: { kind: 'newest', prefix: 'datasets/fiction-' } });

  let rows: ScheduleSummaryRow[] = [];
  for (let i = 0; i < 40 && !rows.some((r) => r.id === 'nightly-fiction'); i++) {
    rows = JSON.parse(await cli('schedule', 'list', '--json')) as ScheduleSummaryRow[];
    if (!rows.length) await new Promise((r) => setTimeout(r, 250)); // list reads visibility, which lags a little
  }
  expect(rows.find((r) => r.id === 'nightly-fiction')).toMatchObject({ paused: true, workflowType: 'fineTuneWorkflow' });

  expect(await cli('schedule', 'unpause', 'nightly-fiction')).toBe('unpaused nightly-fiction');
  expect(await cli('schedule', 'pause', 'nightly-fiction', '--note', 'data review')).toBe('paused nightly-fiction');
  expect((await temporal.client.schedule.getHandle('nightly-fiction').describe()).state).toMatchObject({ paused: true, note: 'data review' });

  expect(await cli('schedule', 'trigger', 'nightly-fiction')).toBe('triggered nightly-fiction');
  let recent: unknown[] = [];
  for (let i = 0; i < 40 && recent.length === 0; i++) {
    recent = (await temporal.client.schedule.getHandle('nightly-fiction').describe()).info.recentActions;
    if (!recent.length) await new Promise((r) => setTimeout(r, 250));
  }
  expect(recent).toHaveLength(1);

  expect(await cli('schedule', 'delete', 'nightly-fiction')).toBe('deleted nightly-fiction');
  const gone = spawnSync(process.execPath, [CLI, 'schedule', 'pause', 'nightly-fiction', '--temporal-port', String(temporal.port)], { encoding: 'utf8' });
  expect(gone.status).toBe(1);
  expect(gone.stderr.trim()).toBe('truthgpt: schedule nightly-fiction does not exist');
}, 120_000);

test('a bad schedule file gets one line naming the file and the field; nothing is created', async () => {
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, SPEC.replace('steps: 100', 'steps: 0'));
  const r = spawnSync(process.execPath, [CLI, 'schedule', 'create', file, '--temporal-port', String(temporal.port)], { encoding: 'utf8' });
  expect(r.status).toBe(1);
  expect(r.stderr.trim()).toBe(`truthgpt: ${file}: invalid fine-tune spec: spec.train.steps: Too small: expected number to be >=1`);
  const both = spawnSync(process.execPath, [CLI, 'schedule', 'create', join(dir, 'schedule.yaml'), '--cron', '0 3 * * *', '--every', '1h', '--temporal-port', String(temporal.port)], { encoding: 'utf8' });
  expect(both.status).toBe(1);
  expect(both.stderr.trim()).toMatch(/give exactly one of every or cron/);
}, 60_000);
