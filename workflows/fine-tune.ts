// fineTuneWorkflow: LoRA adapters on a frozen base, as Temporal activities.
//
//   resolve dataset (cpu: prefix | newest under a prefix | prepare a spec)
//   → lineage check: a run whose data the lineage already fine-tuned on ends "no new data"
//   → evaluate before (cpu) → chunks of trainAdapter (gpu, resumable) → export adapter + merged (cpu)
//   → evaluate after, unmerged and merged (cpu) → record the success in the lineage (cpu)
//
// Progress query, pause/resume signals and the stage are training's (workflows/controls.ts),
// so the CLI, the UI and the SDK watch both the same way. History holds refs and metrics only.

import { ActivityCancellationType, proxyActivities, upsertSearchAttributes, workflowInfo, type RetryPolicy } from '@temporalio/workflow';
import type { FineTuneActivities, TrainAdapterResult } from '../activities/fine-tune';
import type { LoraMetrics } from '../engine/finetune';
import type { CheckpointRef } from '../artifacts/checkpoints';
import type { DatasetRef } from '../artifacts/datasets';
import type { LineageRecord } from '../artifacts/lineages';
import type { BaseRef } from '../artifacts/models';
import { NON_RETRYABLE_ERROR_TYPES } from '../spec/errors';
import type { FineTuneSpec } from '../spec/lora';
import { TASK_QUEUES, TruthgptBestValLoss, TruthgptModelFamily, TruthgptPipeline, TruthgptStage } from '../spec/temporal-names';
import { runControls } from './controls';

export interface FineTuneInput {
  /** A parsed FineTuneSpec (spec/lora.ts parseFineTuneSpec). */
  spec: FineTuneSpec;
  /** Names the run's keys in the store (default: the workflow id, made key-safe). */
  runId?: string;
}

export interface FineTuneCompleted extends LoraMetrics {
  status: 'completed';
  runId: string;
  /** The base and the sha256 of each of its files (unchanged by construction: only adapters train). */
  base: BaseRef;
  dataset: DatasetRef;
  /** PEFT files: adapter_model.safetensors + adapter_config.json. */
  adapter: CheckpointRef;
  /** The base with the adapter merged: checkpoint files (our models) or model.onnx. */
  merged: CheckpointRef;
  /** valLossAfter with the adapter folded into the base weights. */
  valLossAfterMerged: number;
  trainHistory: { step: number; loss: number }[];
  /** The adapter this run started from (continueFromAdapter), or null for the fresh init. */
  continuedFrom: string | null;
  wallMs: number;
}

export interface FineTuneSkipped {
  status: 'no-new-data';
  runId: string;
  dataset: DatasetRef | null;
  reason: string;
  /** The lineage's last successful run, whose data this run would have repeated. */
  lastRunId: string | null;
}

export type FineTuneResult = FineTuneCompleted | FineTuneSkipped;

// Every LoraMetrics field, once: `satisfies` fails the build when one is added or renamed there.
const LORA_METRICS = Object.keys({
  valLossBefore: 1,
  valLossAfter: 1,
  perplexityBefore: 1,
  perplexityAfter: 1,
  trainable: 1,
  total: 1,
  trainableFraction: 1,
  steps: 1,
} satisfies Record<keyof LoraMetrics, 1>) as (keyof LoraMetrics)[];

/** The LoraMetrics of a larger record (a fine-tune's result, the pipeline's LoRA outcome). */
export const loraMetrics = (r: LoraMetrics): LoraMetrics => Object.fromEntries(LORA_METRICS.map((k) => [k, r[k]])) as unknown as LoraMetrics;

const MAX_HISTORY = 2000;
const keySafe = (id: string) => id.replace(/[^A-Za-z0-9._=+-]/g, '-');

function activitiesFor(spec: FineTuneSpec) {
  const retry: RetryPolicy = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 20, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES };
  // A cancelled run waits until its running activities have really stopped (activities/heartbeat.ts).
  const timeouts = { startToCloseTimeout: `${spec.activityTimeoutMinutes} minutes`, heartbeatTimeout: `${spec.heartbeatTimeoutSeconds} seconds`, retry, cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } as const;
  // The CPU activities' longest silence between heartbeats: 3.1 s (evaluateFineTune) on a
  // 10.7M-parameter GPT, 8.1 s on an 85M one (README, "Heartbeat timeouts").
  const cpu = proxyActivities<FineTuneActivities>({ taskQueue: TASK_QUEUES.cpu, ...timeouts, heartbeatTimeout: '60 seconds' });
  const gpu = proxyActivities<FineTuneActivities>({ taskQueue: TASK_QUEUES.gpu, ...timeouts });
  return { cpu, gpu };
}

/**
 * Fine-tunes LoRA adapters of `spec.base` on `spec.dataset`; returns the adapter, the merged model
 * and the validation loss before and after, or ends early with "no new data".
 * @example await client.workflow.execute(fineTuneWorkflow, { taskQueue: 'truthgpt-cpu', workflowId: 'ft-1', args: [{ spec: parseFineTuneSpec(input) }] })
 */
export async function fineTuneWorkflow(input: FineTuneInput): Promise<FineTuneResult> {
  const { spec } = input;
  const info = workflowInfo();
  const runId = input.runId ?? keySafe(info.workflowId);
  const { cpu, gpu } = activitiesFor(spec);
  const S = spec.train.stepsPerActivity;
  const chunks = Math.ceil(spec.train.steps / S);
  const tokensPerStep = spec.train.batchSize * spec.train.contextLength;
  let done = 0;
  let step = 0;
  let checkpoint: CheckpointRef | null = null;
  const history: { step: number; loss: number }[] = [];
  const valLosses: number[] = [];
  const chunkMs: number[] = [];

  const controls = runControls('resolveDataset', false, () => {
    const recent = chunkMs.slice(-5);
    const perChunk = recent.length ? recent.reduce((a, b) => a + b, 0) / recent.length : null;
    return {
      round: done,
      rounds: chunks,
      step,
      steps: spec.train.steps,
      tokensSeen: step * tokensPerStep,
      recentTrainLoss: history.slice(-5).map((p) => p.loss),
      recentValLoss: valLosses.slice(-5),
      bestValLoss: valLosses.length ? Math.min(...valLosses) : null,
      etaSeconds: perChunk === null ? null : Math.round((perChunk * (chunks - done)) / 1000),
      checkpoint: checkpoint?.prefix ?? null,
    };
  });
  upsertSearchAttributes([
    { key: TruthgptPipeline, value: spec.name },
    { key: TruthgptModelFamily, value: spec.lora.family ?? (spec.base.kind === 'checkpoint' ? 'gpt' : 'onnx') },
  ]);
  controls.setStage('resolveDataset');

  const source = spec.dataset;
  const dataset: DatasetRef | null =
    source.kind === 'spec' ? await cpu.prepareFineTuneDataset({ runId, dataset: source.spec }) : await cpu.resolveFineTuneDataset({ source });
  if (!dataset) {
    controls.setStage('no-new-data');
    return { status: 'no-new-data', runId, dataset: null, reason: `no dataset is committed under ${source.kind === 'spec' ? source.spec.name : source.prefix}`, lastRunId: null };
  }
  const last: LineageRecord | null = spec.lineage ? await cpu.lastFineTune({ lineage: spec.lineage }) : null;
  if (spec.skipIfSeen && last && last.dataset.contentHash === dataset.contentHash) {
    controls.setStage('no-new-data');
    return {
      status: 'no-new-data',
      runId,
      dataset,
      reason: `no new data: the last successful fine-tune of lineage ${spec.lineage} (${last.runId}) already used ${dataset.prefix} (content ${dataset.contentHash.slice(0, 12)})`,
      lastRunId: last.runId,
    };
  }
  const continuedFrom = spec.continueFromAdapter === true ? (last?.adapter.prefix ?? null) : spec.continueFromAdapter || null;

  controls.setStage('evaluate');
  const base = spec.base.kind === 'checkpoint' ? spec.base.prefix : spec.base.key;
  const before = await cpu.evaluateFineTune.executeWithOptions({ summary: `val loss before: ${base}${continuedFrom ? ` + adapter ${continuedFrom}` : ''} on ${dataset.prefix}` }, [
    { spec, dataset, adapter: continuedFrom },
  ]);
  valLosses.push(before.loss);

  let report = { trainable: 0, total: 0, trainableFraction: 0 };
  for (let chunk = 0; chunk < chunks; chunk++) {
    await controls.waitWhilePaused();
    controls.setStage('train');
    const t0 = Date.now();
    const from = chunk * S;
    const to = Math.min(from + S, spec.train.steps);
    const r: TrainAdapterResult = await gpu.trainAdapter.executeWithOptions(
      { summary: `chunk ${chunk + 1}/${chunks}: LoRA r=${spec.lora.r} steps ${from}–${to} of ${spec.train.steps} on ${dataset.prefix}` },
      [{ runId, spec, chunk, dataset, previous: checkpoint, initAdapter: chunk === 0 ? continuedFrom : null }],
    );
    checkpoint = r.checkpoint;
    step = r.endStep;
    done = chunk + 1;
    chunkMs.push(Date.now() - t0);
    report = { trainable: r.trainable, total: r.total, trainableFraction: r.trainableFraction };
    history.push(...r.losses);
    if (history.length > MAX_HISTORY) history.splice(0, history.length - MAX_HISTORY);
  }

  controls.setStage('export');
  const exported = await cpu.exportFineTune.executeWithOptions({ summary: `PEFT adapter + ${base} with the adapter merged` }, [{ runId, spec, trained: checkpoint! }]);
  controls.setStage('evaluate');
  const after = await cpu.evaluateFineTune.executeWithOptions({ summary: `val loss after: adapter ${exported.adapter.prefix}, unmerged and merged, on ${dataset.prefix}` }, [
    { spec, dataset, adapter: exported.adapter.prefix },
  ]);
  valLosses.push(after.loss);
  upsertSearchAttributes([{ key: TruthgptBestValLoss, value: Math.min(...valLosses) }]);

  if (spec.lineage) {
    controls.setStage('record');
    await cpu.recordFineTune({
      lineage: spec.lineage,
      record: { runId, dataset: { prefix: dataset.prefix, contentHash: dataset.contentHash }, adapter: exported.adapter, merged: exported.merged, valLossAfter: after.loss },
    });
  }
  controls.setStage('done');
  return {
    status: 'completed',
    runId,
    base: before.base,
    dataset,
    adapter: exported.adapter,
    merged: exported.merged,
    valLossBefore: before.loss,
    valLossAfter: after.loss,
    valLossAfterMerged: after.merged!.loss,
    perplexityBefore: before.perplexity,
    perplexityAfter: after.perplexity,
    ...report,
    steps: step,
    trainHistory: history,
    continuedFrom,
    wallMs: Date.now() - info.startTime.getTime(),
  };
}

/**
 * Prepares (or reuses) a dataset and commits it: how a new dataset version under a prefix is
 * published for scheduled fine-tunes (`datasets/<name>-<spec hash>`).
 * @example await client.workflow.execute(prepareDatasetWorkflow, { taskQueue: 'truthgpt-cpu', workflowId: 'ds-fiction-2', args: [{ dataset: { name: 'fiction', corpus: { kind: 'brown', categories: ['mystery'] } } }] })
 */
export async function prepareDatasetWorkflow(input: { dataset: Extract<FineTuneSpec['dataset'], { kind: 'spec' }>['spec'] }): Promise<DatasetRef> {
  const cpu = proxyActivities<FineTuneActivities>({
    taskQueue: TASK_QUEUES.cpu,
    startToCloseTimeout: '2 hours',
    // prepareDataset heartbeats per document: 0.15 s was its longest silence (README, "Heartbeat timeouts").
    heartbeatTimeout: '60 seconds',
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    retry: { maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
  });
  upsertSearchAttributes([{ key: TruthgptStage, value: 'prepareDataset' }]);
  const ref = await cpu.prepareFineTuneDataset({ runId: keySafe(workflowInfo().workflowId), dataset: input.dataset });
  upsertSearchAttributes([{ key: TruthgptStage, value: 'done' }]);
  return ref;
}
