// Recurring fine-tunes on Temporal Schedules, on the real local stack (`truthgpt up`: Temporal dev
// server on SQLite, S3 server, supervised worker processes) in a temp state folder on free ports.
//
//   A schedule firing every 2 s fine-tunes on the newest dataset under a prefix; the firings after
//   that end "no new data"; publishing a new dataset version makes the next firing train again,
//   continuing from the previous adapter. Pause stops firings, list shows it, the schedule survives
//   a restart of the dev server on the same SQLite file, and delete removes it.

import type { Client } from '@temporalio/client';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { commitCheckpoint, toTensors } from '../../artifacts/checkpoints';
import { initParams } from '../../engine/models/blocks';
import { gptParams, GptConfigSchema } from '../../engine/models/gpt';
import { loadConfig, s3Settings, type Config } from '../../infra/config';
import { freePort } from '../../infra/ports';
import { stackDown, stackUp } from '../../infra/stack';
import { processRunning, readState, stopProcess } from '../../infra/stack-state';
import { ArtifactStore } from '../../infra/store';
import { connectTemporal } from '../../sdk/client';
import { deleteSchedule, describeSchedule, listSchedules, pauseSchedule, publishDataset, scheduleFineTune, triggerSchedule, unpauseSchedule } from '../../sdk/schedules';
import type { FineTuneCompleted, FineTuneResult } from '../../workflows/fine-tune';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ID = 'fiction-every-2s';
const CFG = GptConfigSchema.parse({ vocab_size: 259, n_layer: 2, n_embd: 32, n_head: 2, block_size: 32 });

let dir: string;
let config: Config;
let store: ArtifactStore;
let client: Client;
const results = new Map<string, FineTuneResult>();

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-schedules-'));
  config = loadConfig({
    TRUTHGPT_STATE_DIR: dir,
    TRUTHGPT_TEMPORAL_PORT: String(await freePort()),
    TRUTHGPT_UI_PORT: String(await freePort()),
    TRUTHGPT_S3_PORT: String(await freePort()),
    // TRUTHGPT_S3_SERVER=versitygw runs this stack on versitygw (README, "Local S3 server").
    ...(process.env.TRUTHGPT_S3_SERVER ? { TRUTHGPT_S3_SERVER: process.env.TRUTHGPT_S3_SERVER } : {}),
  });
  await stackUp(config, { timeoutMs: 240_000 });
  store = new ArtifactStore(s3Settings(config));
  client = await connectTemporal(config);
}, 300_000);

afterAll(async () => {
  await client?.connection.close().catch(() => {});
  store?.close();
  if (config) await stackDown(config).catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}, 90_000);

/** Results of every run the schedule has fired so far (collected from its recent actions). */
async function runsOf(id: string): Promise<FineTuneResult[]> {
  for (const wf of (await describeSchedule(client, id)).recentRuns) {
    if (results.has(wf)) continue;
    const h = client.workflow.getHandle(wf);
    const status = (await h.describe()).status.name;
    if (status === 'RUNNING') continue;
    // A failed firing is a bug here: surface its error instead of waiting out the deadline.
    if (status !== 'COMPLETED') await h.result().catch((err: Error) => fail(`${wf} ${status}: ${messages(err)}`));
    results.set(wf, (await h.result()) as FineTuneResult);
  }
  return [...results.values()];
}

function messages(err: unknown): string {
  const out: string[] = [];
  for (let e = err as Error | undefined; e; e = e.cause as Error | undefined) out.push(e.message);
  return out.join(' ← ');
}

function fail(msg: string): never {
  throw new Error(msg);
}

async function waitUntil<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms; runs so far: ${JSON.stringify([...results.values()].map((r) => [r.runId, r.status]))}`);
    await sleep(500);
  }
}

test('a 2 s schedule fine-tunes on new data only, continues from its last adapter, pauses, survives a server restart, and is deleted', async () => {
  // A base model (seeded init) and a first dataset version under the prefix.
  const specs = gptParams(CFG);
  const base = await commitCheckpoint(store, 'bases/tiny-gpt', {
    weights: toTensors(initParams(specs, 1), new Map(specs.map((s) => [s.name, s.shape]))),
    optimizer: new Map(),
    state: { modelConfig: CFG, runConfig: {}, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
  });
  const v1 = await publishDataset(client, { name: 'sched-fiction', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 }, { workflowId: 'publish-v1' });
  expect(v1.prefix.startsWith('datasets/sched-fiction-')).toBe(true);

  await scheduleFineTune(client, {
    id: ID,
    every: '2s',
    base: { kind: 'checkpoint', prefix: base.prefix },
    datasetPrefix: 'datasets/sched-fiction-',
    lora: { r: 4, lora_alpha: 8 },
    train: { steps: 30, batchSize: 4, contextLength: 32, evalBatches: 2, optimizer: { optimizer: { kind: 'adamw', lr: 1e-2 } } },
    continueFromAdapter: true,
    catchupWindow: '1 minute',
  });

  // The first firing trains on v1; the firings after it find nothing new.
  const first = await waitUntil('a completed fine-tune on v1', 180_000, async () => (await runsOf(ID)).find((r): r is FineTuneCompleted => r.status === 'completed'));
  expect(first.dataset.prefix).toBe(v1.prefix);
  expect(first.continuedFrom).toBeNull(); // nothing to continue from yet
  expect(first.valLossAfter).toBeLessThan(first.valLossBefore);
  const skipped = await waitUntil('a "no new data" run after the first', 60_000, async () => (await runsOf(ID)).find((r) => r.status === 'no-new-data'));
  expect(skipped.status === 'no-new-data' && skipped.reason).toMatch(new RegExp(`^no new data: the last successful fine-tune of lineage ${ID} \\(${first.runId}\\) already used ${v1.prefix}`));

  // A new version under the prefix: the next firing trains on it, from the previous adapter.
  const v2 = await publishDataset(client, { name: 'sched-fiction', corpus: { kind: 'brown', categories: ['humor', 'science_fiction'] }, valFraction: 0.2 }, { workflowId: 'publish-v2' });
  expect(v2.prefix).not.toBe(v1.prefix);
  const second = await waitUntil('a completed fine-tune on v2', 120_000, async () =>
    (await runsOf(ID)).find((r): r is FineTuneCompleted => r.status === 'completed' && r.dataset.prefix === v2.prefix),
  );
  expect(second.continuedFrom).toBe(first.adapter.prefix);
  expect([...results.values()].filter((r) => r.status === 'completed')).toHaveLength(2); // no run repeated v1

  // Paused: no more firings, and list says so.
  await pauseSchedule(client, ID, 'holding for review');
  await sleep(1000);
  const before = (await describeSchedule(client, ID)).recentRuns;
  await sleep(5000);
  expect((await describeSchedule(client, ID)).recentRuns).toEqual(before);
  const listed = await waitUntil('the schedule in the list', 30_000, async () => (await listSchedules(client)).find((s) => s.id === ID && s.paused));
  expect(listed).toMatchObject({ paused: true, note: 'holding for review', workflowType: 'fineTuneWorkflow' });

  // The dev server goes down and comes back on its SQLite file: the schedule is still there.
  const state = readState(dir)!;
  await stopProcess(state.temporal, 20_000);
  expect(processRunning(state.temporal)).toBe(false);
  await stackUp(config, { timeoutMs: 180_000 });
  await client.connection.close();
  client = await connectTemporal(config);
  const after = await describeSchedule(client, ID);
  expect(after).toMatchObject({ paused: true, note: 'holding for review' });
  expect(after.recentRuns).toEqual(before);

  // Triggered after the restart it fires a real run, which finds nothing new since v2.
  await unpauseSchedule(client, ID);
  await pauseSchedule(client, ID, 'manual only');
  await triggerSchedule(client, ID);
  const n = results.size;
  const third = await waitUntil('the triggered run', 60_000, async () => ((await runsOf(ID)).length > n ? [...results.values()].at(-1) : undefined));
  expect(third).toMatchObject({ status: 'no-new-data', lastRunId: second.runId });

  await deleteSchedule(client, ID);
  await expect(describeSchedule(client, ID)).rejects.toThrow(`schedule ${ID} does not exist`);
  await waitUntil('the schedule gone from the list', 30_000, async () => ((await listSchedules(client)).some((s) => s.id === ID) ? undefined : true));
}, 600_000);
