// postTrainingWorkflow: from a trained checkpoint to published models and a run report.
//
//   exportModel (cpu) → quantizeModel × variants (cpu, parallel; each gated on val perplexity)
//   → evaluateModels fp32 + every variant (gpu pool, one activity: same device, same batches)
//   → writeReport (cpu) → fail with QuantRejected if a `required` variant was refused
//
// A refused variant is not an error: it is kept under rejected/<name>, marked unpublished, and
// the report names its bound and figure. Runs as a child of the pipeline or on its own.

import { ActivityCancellationType, proxyActivities, upsertSearchAttributes, type RetryPolicy } from '@temporalio/workflow';
import type { EvaluateModelsResult, PostTrainingActivities, QuantizeResult, ReportInput } from '../activities/post-training';
import type { ReportVariant, VariantSummary } from '../engine/report';
import type { CheckpointRef } from '../artifacts/checkpoints';
import type { DatasetRef } from '../artifacts/datasets';
import type { ModelRef } from '../artifacts/models';
import { failure, NON_RETRYABLE_ERROR_TYPES } from '../spec/errors';
import type { EvalSpec, QuantSpec } from '../spec/post-training';
import { TASK_QUEUES, TruthgptStage } from '../spec/temporal-names';
import type { TrainPoint, ValPoint } from './training';

export interface PostTrainingWorkflowInput {
  /** Names the run's keys in the store (runs/<runId>/models, /rejected, /report). */
  runId: string;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  /** Parsed QuantSpecs (spec/post-training.ts parsePostTrainingSpec). */
  quant: QuantSpec[];
  eval: EvalSpec;
  trainHistory: Pick<TrainPoint, 'round' | 'loss' | 'shardLoss' | 'pseudoGradNorm'>[];
  valHistory: ValPoint[];
  /** The run's configuration as the user gave it; shown in the report. */
  config: Record<string, unknown>;
  /**
   * Set by the pipeline when `checkpoint` is a LoRA-merged model: the report then says so (a
   * section and a headline sentence), since its loss curves are still pretraining's.
   */
  lora?: ReportInput['lora'];
}

/** One model of the run (fp32 or a variant): the report's row without how it was gated and built. */
export type VariantResult = VariantSummary;

/** What every variant's perplexity was computed on. */
export interface EvaluationCoverage {
  /** Target tokens scored. */
  tokens: number;
  /** Target tokens of the whole validation split; `tokens` equals it unless `batchCap` is set. */
  splitTokens: number;
  /** evaluation.batches as given (null: the whole split). */
  batchCap: number | null;
}

export interface PostTrainingResult {
  /** fp32 first, then the variants in spec order. */
  variants: VariantResult[];
  /** Absent in results of runs from before it was recorded. */
  evaluation?: EvaluationCoverage;
  reportKey: string;
  reportJsonKey: string;
}

const retry: RetryPolicy = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES };
// A cancelled run waits until its running activities have really stopped (activities/heartbeat.ts).
const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;
// Heartbeat timeouts: the longest silence between two heartbeats was 4.0 s (exportModel) on a
// 10.7M-parameter GPT and 9.9 s (quantizeModel) on an 85M one, 13.0 s for evaluateModels's model
// load (README, "Heartbeat timeouts"). 60 s covers those with room for load: a worker that dies
// where no supervisor reports it costs a minute, not 10.
const cpu = proxyActivities<PostTrainingActivities>({ taskQueue: TASK_QUEUES.cpu, startToCloseTimeout: '60 minutes', heartbeatTimeout: '60 seconds', retry, cancellationType });
const gpu = proxyActivities<PostTrainingActivities>({ taskQueue: TASK_QUEUES.gpu, startToCloseTimeout: '120 minutes', heartbeatTimeout: '60 seconds', retry, cancellationType });

/**
 * Exports, quantizes, evaluates side by side and reports a trained checkpoint.
 * @example await executeChild(postTrainingWorkflow, { args: [{ runId, checkpoint: r.checkpoint, dataset: r.dataset, quant, eval, trainHistory: r.trainHistory, valHistory: r.valHistory, config: { training: spec } }] })
 */
export async function postTrainingWorkflow(input: PostTrainingWorkflowInput): Promise<PostTrainingResult> {
  const stage = (s: string) => upsertSearchAttributes([{ key: TruthgptStage, value: s }]);
  const base = { runId: input.runId, checkpoint: input.checkpoint, dataset: input.dataset, eval: input.eval };

  stage('export');
  const fp32 = await cpu.exportModel.executeWithOptions({ summary: `export fp32 ONNX of ${input.checkpoint.prefix}` }, [base]);
  stage('quantize');
  const quantized = await Promise.all(
    input.quant.map((quant) =>
      cpu.quantizeModel.executeWithOptions({ summary: `quantize ${quant.method} as ${quant.name}, gated at val ppl +${(quant.maxPplIncrease * 100).toFixed(2)}%` }, [{ ...base, fp32, quant }]),
    ),
  );

  stage('evaluate');
  const models: ModelRef[] = [fp32, ...quantized].map(({ name, method, prefix, key, sha256, sizeBytes, published }) => ({ name, method, prefix, key, sha256, sizeBytes, published }));
  const ev = await gpu.evaluateModels.executeWithOptions({ summary: `evaluate ${models.map((m) => m.name).join(', ')}: ppl on ${input.eval.batches === null ? 'the whole val split' : `${input.eval.batches} val batches`} of ${input.dataset.prefix}, latency, samples` }, [
    { runId: input.runId, dataset: input.dataset, modelConfig: fp32.modelConfig, models, eval: input.eval },
  ]);
  const variants = reportVariants(models, quantized, ev);

  stage('report');
  const report = await cpu.writeReport.executeWithOptions({ summary: `report runs/${input.runId}/report${input.lora ? ' (with the LoRA stage)' : ''}` }, [{
    runId: input.runId,
    checkpoint: input.checkpoint,
    dataset: input.dataset,
    modelConfig: fp32.modelConfig,
    trainHistory: input.trainHistory,
    valHistory: input.valHistory,
    variants,
    samples: ev.evaluations.flatMap((e) => e.samples.map((s) => ({ variant: e.name, prompt: s.prompt, text: s.text, settings: s.settings ?? ev.sampling }))),
    evaluation: { batches: ev.batches, batchSize: ev.batchSize, contextLength: ev.contextLength, tokens: ev.tokens, splitTokens: ev.splitTokens, batchCap: ev.batchCap, speedRuns: input.eval.speedRuns, device: ev.device },
    config: input.config,
    ...(input.lora ? { lora: input.lora } : {}),
  }]);

  const refused = input.quant.filter((q) => q.required).map((q) => variants.find((v) => v.name === q.name)!).filter((v) => !v.published);
  if (refused.length) {
    stage('rejected');
    throw failure('QuantRejected', refused.map((v) => `required variant ${v.name} (${v.method}) was refused: ${v.rejectedReason}`).join('; ') + ` (report: ${report.reportKey})`, {
      variants: refused.map((v) => v.name),
      reportKey: report.reportKey,
    });
  }
  stage('done');
  return {
    variants: variants.map(summaryOf),
    evaluation: { tokens: ev.tokens, splitTokens: ev.splitTokens, batchCap: ev.batchCap },
    reportKey: report.reportKey,
    reportJsonKey: report.jsonKey,
  };
}

/** The report's rows: each model's evaluation (on the gate's batches, so with the gate's figures) and, for a variant, its gate and build. */
function reportVariants(models: ModelRef[], quantized: QuantizeResult[], ev: EvaluateModelsResult): ReportVariant[] {
  const byName = new Map(ev.evaluations.map((e) => [e.name, e]));
  const fp32Ppl = byName.get('fp32')!.ppl;
  return models.map((m, i) => {
    const e = byName.get(m.name)!;
    const q = i === 0 ? null : quantized[i - 1];
    return {
      name: m.name,
      method: m.method,
      key: m.key,
      sha256: m.sha256,
      sizeBytes: m.sizeBytes,
      ppl: e.ppl,
      pplDeltaPct: ((e.ppl - fp32Ppl) / fp32Ppl) * 100,
      maxPplIncrease: q ? q.bound : null,
      p50Ms: e.p50Ms,
      p95Ms: e.p95Ms,
      tokensPerSec: e.tokensPerSec,
      peakRssBytes: e.peakRssBytes,
      published: m.published,
      ...(q?.rejectedReason ? { rejectedReason: q.rejectedReason } : {}),
      quantizedNodes: q ? q.report.quantized : null,
      skippedNodes: q ? q.report.skipped : null,
      compression: q ? q.report.compression : null,
    };
  });
}

/** A row as the run's result lists it. */
const summaryOf = ({ maxPplIncrease: _b, peakRssBytes: _r, quantizedNodes: _q, skippedNodes: _s, compression: _c, ...v }: ReportVariant): VariantSummary => v;
