// The first workflow through the whole path: a dataset step on the CPU pool that writes its
// summary to S3, then a runtime probe on the GPU pool. `truthgpt demo` runs it until the real
// pipeline replaces it.

import { proxyActivities, upsertSearchAttributes, workflowInfo, type RetryPolicy } from '@temporalio/workflow';
import type { CorpusStatsInput, CorpusStatsResult, DemoActivities, RuntimeProbeResult } from '../activities/demo';
import { TASK_QUEUES, TruthgptPipeline, TruthgptStage } from '../spec/temporal-names';

export interface DemoResult {
  workflowId: string;
  dataset: CorpusStatsResult;
  runtime: RuntimeProbeResult;
}

// Deterministic failures (bad input, a wrong ORT result) are non-retryable by type; everything
// else (a worker that died, S3 hiccups) retries with backoff.
const retry: RetryPolicy = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5, nonRetryableErrorTypes: ['InvalidInput', 'RuntimeMismatch', 'CudaUnavailable'] };

const { corpusStats } = proxyActivities<DemoActivities>({ taskQueue: TASK_QUEUES.cpu, startToCloseTimeout: '5 minutes', retry });
const { runtimeProbe } = proxyActivities<DemoActivities>({ taskQueue: TASK_QUEUES.gpu, startToCloseTimeout: '2 minutes', retry });

export async function demoWorkflow(input: CorpusStatsInput = {}): Promise<DemoResult> {
  upsertSearchAttributes([
    { key: TruthgptPipeline, value: 'demo' },
    { key: TruthgptStage, value: 'corpusStats' },
  ]);
  const dataset = await corpusStats(input);
  upsertSearchAttributes([{ key: TruthgptStage, value: 'runtimeProbe' }]);
  const runtime = await runtimeProbe();
  upsertSearchAttributes([{ key: TruthgptStage, value: 'done' }]);
  return { workflowId: workflowInfo().workflowId, dataset, runtime };
}
