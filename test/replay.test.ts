// Replays recorded histories (test/histories/*.json, re-record with `npx tsx test/histories/record.ts`)
// against today's workflow code: a change that would break runs already in flight — a reordered
// activity, a new timer, a child started differently — fails here, before it reaches a worker.

import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import fs from 'node:fs';
import path from 'node:path';
import { historyFromJson } from './histories/load';

const DIR = path.join(__dirname, 'histories');
const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.json')).sort();
const load = (f: string) => ({ workflowId: f.replace(/\.json$/, ''), history: historyFromJson(JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')), f) });

beforeAll(() => Runtime.install({ logger: new DefaultLogger('WARN') }));

test('the recorded histories cover training (with a continue-as-new and signals), the pipeline with and without LoRA, and its children', () => {
  const types = files.map((f) => JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')).events[0].workflowExecutionStartedEventAttributes.workflowType.name);
  expect(new Set(types)).toEqual(new Set(['trainingWorkflow', 'pipelineWorkflow', 'postTrainingWorkflow', 'fineTuneWorkflow']));
  expect(files).toEqual(expect.arrayContaining(['replay-train-run1.json', 'replay-train-run2.json', 'replay-pipeline.json', 'replay-pipeline-lora.json', 'replay-pipeline-lora-lora.json', 'replay-pipeline-t5.json', 'replay-pipeline-t5-train.json', 'replay-pipeline-mlm.json', 'replay-pipeline-span.json', 'replay-pipeline-memory.json']));
  // The LoRA pipeline's history starts its fine-tune child between training and post-training.
  const children = JSON.parse(fs.readFileSync(path.join(DIR, 'replay-pipeline-lora.json'), 'utf8'))
    .events.filter((e: { startChildWorkflowExecutionInitiatedEventAttributes?: unknown }) => e.startChildWorkflowExecutionInitiatedEventAttributes)
    .map((e: { startChildWorkflowExecutionInitiatedEventAttributes: { workflowType: { name: string } } }) => e.startChildWorkflowExecutionInitiatedEventAttributes.workflowType.name);
  expect(children).toEqual(['trainingWorkflow', 'fineTuneWorkflow', 'postTrainingWorkflow']);
});

test('every recorded history replays against the current workflows', async () => {
  const results = [];
  for await (const r of Worker.runReplayHistories({ workflowsPath: require.resolve('../workflows') }, files.map(load))) results.push(r);
  expect(results.map((r) => [r.workflowId, r.error?.message ?? null])).toEqual(files.map((f) => [f.replace(/\.json$/, ''), null]));
}, 120_000);

test('a reordered trainingWorkflow fails replay with a determinism error', async () => {
  const history = load('replay-train-run1.json');
  await expect(Worker.runReplayHistory({ workflowsPath: require.resolve('./histories/broken') }, history.history, history.workflowId)).rejects.toThrow(/[Nn]ondeterminism|DeterminismViolation/);
}, 120_000);
