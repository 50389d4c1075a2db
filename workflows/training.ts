// trainingWorkflow: DiLoCo rounds as Temporal activities.
//
//   prepareDataset (cpu) → createModel (cpu) → evaluate r0 (cpu)
//   round r: W × trainShard (gpu, parallel) → aggregateRound (cpu) → evaluate every E rounds
//   continue-as-new every `roundsPerRun` rounds or when Temporal suggests it
//
// History holds refs, hashes and metrics only (every payload a few KB). The last committed global
// checkpoint is always usable: cancelling between or during rounds loses nothing committed.

import {
  ActivityCancellationType,
  continueAsNew,
  proxyActivities,
  upsertSearchAttributes,
  workflowInfo,
  type RetryPolicy,
} from '@temporalio/workflow';
import type { ResumePoint } from '../activities/pipeline';
import type { TrainingActivities, TrainShardResult } from '../activities/training';
import type { CheckpointRef } from '../artifacts/checkpoints';
import type { DatasetRef } from '../artifacts/datasets';
import { failure, NON_RETRYABLE_ERROR_TYPES } from '../spec/errors';
import { modelShape, TASK_DATASET } from '../spec/family';
import type { TrainingSpec } from '../spec/training';
import { TASK_QUEUES, TruthgptBestValLoss, TruthgptModelFamily, TruthgptPipeline, TruthgptTask, TruthgptValAccuracy } from '../spec/temporal-names';
import { runControls } from './controls';

export interface ValPoint {
  round: number;
  step: number;
  loss: number;
  perplexity: number;
  /** Classification runs: accuracy and macro F1 over `examples` validation documents (every one). */
  accuracy?: number;
  macroF1?: number;
  examples?: number;
  /** Seq2seq runs: exact match over `examples` validation examples. */
  exactMatch?: number;
}

export interface TrainPoint {
  round: number;
  /** Mean over workers of each worker's mean train loss in the round. */
  loss: number;
  /** Wall time of the slowest shard's training loop (the round's critical path), ms. */
  trainMs: number;
  /** Wall time of the whole round as the workflow saw it (schedule → aggregate committed), ms. */
  roundMs: number;
  /** Each worker's mean train loss in the round, by shard (absent in histories recorded before it was). */
  shardLoss?: number[];
  /** L2 norm of the round's pseudo-gradient global − mean(local), the outer step's input. */
  pseudoGradNorm?: number;
}

/** What survives continue-as-new: refs and a bounded metric history. */
export interface TrainingCarry {
  dataset: DatasetRef;
  global: CheckpointRef;
  /** Rounds completed so far (the global checkpoint is r<round>). */
  round: number;
  previous: (CheckpointRef | null)[];
  valHistory: ValPoint[];
  trainHistory: TrainPoint[];
  bestValLoss: number | null;
  /** Classification runs: the best validation accuracy so far. */
  bestValAccuracy?: number | null;
  tokensSeen: number;
  startedAt: number;
  paused: boolean;
  continuedAsNew: number;
  /** Set when this run resumed another run's committed checkpoint (retryFromCheckpoint). */
  resumedFrom?: { runId: string; round: number };
}

export interface TrainingInput {
  spec: TrainingSpec;
  /** Names the run's keys in the store (default: the workflow id). */
  runId?: string;
  carry?: TrainingCarry;
  /** Start from another run's committed global checkpoint instead of a fresh model. */
  resume?: ResumePoint;
}


export interface TrainingResult {
  runId: string;
  rounds: number;
  steps: number;
  tokensSeen: number;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  valHistory: ValPoint[];
  trainHistory: TrainPoint[];
  bestValLoss: number | null;
  continuedAsNew: number;
  wallMs: number;
  resumedFrom?: { runId: string; round: number };
}

/** Histories stay bounded so the carried input stays far below Temporal's payload limit. */
const MAX_HISTORY = 2000;
const push = <T>(xs: T[], x: T) => {
  xs.push(x);
  if (xs.length > MAX_HISTORY) xs.splice(0, xs.length - MAX_HISTORY);
};

function activitiesFor(spec: TrainingSpec) {
  const retry: RetryPolicy = { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 20, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES };
  // A cancelled run waits until its running activities have really stopped (they stop at their next
  // heartbeat, activities/heartbeat.ts), so it ends CANCELED with nothing left writing to the store.
  const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;
  // Heartbeat timeout: the longest silence between two heartbeats of these CPU-pool activities was
  // 1.4 s on a 10.7M-parameter GPT and 4.7 s on an 85M one under load (README, "Heartbeat
  // timeouts"): 60 s covers a much larger model, and a worker that dies where no supervisor
  // reports it costs a minute, not 5.
  const cpu = proxyActivities<TrainingActivities>({ taskQueue: TASK_QUEUES.cpu, startToCloseTimeout: '30 minutes', heartbeatTimeout: '60 seconds', retry, cancellationType });
  const gpu = proxyActivities<TrainingActivities>({
    taskQueue: TASK_QUEUES.gpu,
    cancellationType,
    startToCloseTimeout: `${spec.shardTimeoutMinutes} minutes`,
    heartbeatTimeout: `${spec.heartbeatTimeoutSeconds} seconds`,
    retry,
  });
  return { cpu, gpu };
}

/**
 * Trains `spec.model` on `spec.dataset` with W workers for `spec.rounds` rounds of H inner steps.
 * @example await client.workflow.execute(trainingWorkflow, { taskQueue: 'truthgpt-cpu', workflowId: 'train-1', args: [{ spec }] })
 */
export async function trainingWorkflow(input: TrainingInput): Promise<TrainingResult> {
  const { spec } = input;
  const info = workflowInfo();
  const runId = input.runId ?? info.workflowId;
  const { cpu, gpu } = activitiesFor(spec);
  const ref = { runId, spec };
  const H = spec.innerSteps;
  let carry = input.carry;
  let stepInRound = 0;

  const controls = runControls(input.carry ? 'train' : 'prepareDataset', carry?.paused ?? false, () => {
    const recent = carry?.trainHistory.slice(-5) ?? [];
    const perRound = recent.length ? recent.reduce((a, p) => a + p.roundMs, 0) / recent.length : null;
    const done = carry?.round ?? 0;
    return {
      round: done,
      rounds: spec.rounds,
      step: done * H + stepInRound,
      steps: spec.rounds * H,
      tokensSeen: carry?.tokensSeen ?? 0,
      recentTrainLoss: recent.map((p) => p.loss),
      recentValLoss: carry?.valHistory.slice(-5).map((p) => p.loss) ?? [],
      bestValLoss: carry?.bestValLoss ?? null,
      etaSeconds: perRound === null ? null : Math.round((perRound * (spec.rounds - done)) / 1000),
      checkpoint: carry?.global.prefix ?? null,
    };
  });
  upsertSearchAttributes([
    { key: TruthgptPipeline, value: spec.name },
    { key: TruthgptModelFamily, value: spec.model.family },
  ]);
  // Only for families other than GPT: GPT runs issue the commands they always did.
  if (spec.model.family !== 'gpt') upsertSearchAttributes([{ key: TruthgptTask, value: spec.model.task }]);

  const evaluateAt = async (c: TrainingCarry) => {
    controls.setStage('evaluate');
    const r = await cpu.evaluate.executeWithOptions({ summary: `val loss of ${c.global.prefix} (round ${c.round}, ${spec.evalBatches} batches)` }, [{ ...ref, checkpoint: c.global, dataset: c.dataset }]);
    const cls = r.accuracy !== undefined ? { accuracy: r.accuracy, macroF1: r.macroF1, examples: r.examples } : r.exactMatch !== undefined ? { exactMatch: r.exactMatch, examples: r.examples } : {};
    push(c.valHistory, { round: c.round, step: c.round * H, loss: r.loss, perplexity: r.perplexity, ...cls });
    // A classifier's accuracy, or a seq2seq run's exact match: the run list's headline (spec/family.ts headlineMetric).
    const headline = r.accuracy ?? r.exactMatch;
    if (headline !== undefined && (c.bestValAccuracy == null || headline > c.bestValAccuracy)) {
      c.bestValAccuracy = headline;
      upsertSearchAttributes([{ key: TruthgptValAccuracy, value: headline }]);
    }
    if (c.bestValLoss === null || r.loss < c.bestValLoss) {
      c.bestValLoss = r.loss;
      upsertSearchAttributes([{ key: TruthgptBestValLoss, value: r.loss }]);
    }
  };

  if (!carry) {
    controls.setStage('prepareDataset');
    const dataset = await cpu.prepareDataset.executeWithOptions({ summary: `dataset ${spec.dataset.name}: tokenize into ${spec.workers} train shard(s) + val` }, [
      // A task that reads labelled documents asks for their labels, a seq2seq task for its pairs (absent otherwise: GPT runs send what they always did).
      { runId, dataset: { ...spec.dataset, shards: spec.workers, ...(TASK_DATASET[spec.model.task] === 'labelled' ? { labels: true } : TASK_DATASET[spec.model.task] === 'pairs' ? { pairs: true } : {}) } },
    ]);
    if (spec.model.config.vocab_size < dataset.vocabSize) {
      throw failure('InvalidConfig', `spec.model.config.vocab_size: ${spec.model.config.vocab_size} is smaller than the dataset's vocabulary (${dataset.vocabSize} tokens)`);
    }
    const short = dataset.train.findIndex((s) => s.tokens < spec.contextLength + 1);
    if (short >= 0) {
      throw failure('InvalidConfig', `spec.workers: train shard ${short} of ${dataset.prefix} has ${dataset.train[short].tokens} tokens, fewer than contextLength + 1 (${spec.contextLength + 1}); use fewer workers or more data`);
    }
    const resume = input.resume;
    if (resume && resume.previous.length !== spec.workers) {
      throw failure('InvalidConfig', `spec.workers: ${spec.workers}, but run ${resume.runId} was trained with ${resume.previous.length} workers; resume with the same number`);
    }
    let global: CheckpointRef;
    if (resume) global = resume.global;
    else {
      controls.setStage('createModel');
      const init = spec.model.from ? `weights of ${spec.model.from}` : 'seeded init';
      global = await cpu.createModel.executeWithOptions({ summary: `${spec.model.family} ${modelShape(spec.model)}: ${init}, checkpoint r0` }, [ref]);
    }
    carry = {
      dataset,
      global,
      round: resume?.round ?? 0,
      previous: resume?.previous ?? Array.from({ length: spec.workers }, () => null),
      valHistory: [],
      trainHistory: [],
      bestValLoss: resume?.bestValLoss ?? null,
      // Rounds done before the resume count: every round trains W × H × B × T tokens.
      tokensSeen: (resume?.round ?? 0) * spec.workers * H * spec.batchSize * spec.contextLength,
      startedAt: info.startTime.getTime(),
      paused: controls.paused,
      continuedAsNew: 0,
      ...(resume ? { resumedFrom: { runId: resume.runId, round: resume.round } } : {}),
    };
    await evaluateAt(carry);
  }
  const c = carry;

  for (let inThisRun = 0; c.round < spec.rounds; inThisRun++) {
    if (inThisRun >= spec.roundsPerRun || workflowInfo().continueAsNewSuggested) {
      controls.setStage('continueAsNew');
      return await continueAsNew<typeof trainingWorkflow>({ spec, runId, carry: { ...c, paused: controls.paused, continuedAsNew: c.continuedAsNew + 1 } });
    }
    await controls.waitWhilePaused();
    controls.setStage('train');
    const t0 = Date.now();
    const round = c.round;
    // The shard that ends last may run the round's aggregation in its own process (it holds the
    // weights; activities/training.ts trainShard), which saves the round the aggregation's transfers
    // and dispatch. No patch is needed: the commands differ only by what the shards returned, so a
    // history whose shards returned no aggregation (recorded before this) replays into the same
    // aggregateRound command it recorded.
    const shards: TrainShardResult[] = await Promise.all(
      Array.from({ length: spec.workers }, (_, shard) =>
        gpu.trainShard.executeWithOptions({ summary: `round ${round} shard ${shard}: ${H} steps from ${c.global.prefix}; the last shard aggregates r${round + 1} if the round fits its cache` }, [
          { ...ref, round, shard, dataset: c.dataset, global: c.global, previous: c.previous[shard], aggregate: { bestValLoss: c.bestValLoss } },
        ]),
      ),
    );
    stepInRound = H;
    controls.setStage('aggregate');
    const agg =
      shards.find((s) => s.aggregate)?.aggregate ??
      (await cpu.aggregateRound.executeWithOptions({ summary: `round ${round}: outer optimizer over ${shards.length} shard(s) → global checkpoint r${round + 1}` }, [
        { ...ref, round, global: c.global, shards: shards.map((s) => s.checkpoint), bestValLoss: c.bestValLoss },
      ]));
    c.global = agg.checkpoint;
    c.previous = shards.map((s) => s.checkpoint);
    c.round = round + 1;
    stepInRound = 0;
    c.tokensSeen += shards.reduce((n, s) => n + s.tokens, 0);
    push(c.trainHistory, {
      round: c.round,
      loss: shards.reduce((a, s) => a + s.meanLoss, 0) / shards.length,
      trainMs: Math.max(...shards.map((s) => s.trainMs)),
      roundMs: Date.now() - t0,
      shardLoss: shards.map((s) => s.meanLoss),
      pseudoGradNorm: agg.pseudoGradNorm,
    });
    if (c.round % spec.evalEvery === 0 || c.round === spec.rounds) await evaluateAt(c);
  }
  controls.setStage('done');
  return {
    runId,
    rounds: c.round,
    steps: c.round * H,
    tokensSeen: c.tokensSeen,
    checkpoint: c.global,
    dataset: c.dataset,
    valHistory: c.valHistory,
    trainHistory: c.trainHistory,
    bestValLoss: c.bestValLoss,
    continuedAsNew: c.continuedAsNew,
    wallMs: Date.now() - c.startedAt,
    ...(c.resumedFrom ? { resumedFrom: c.resumedFrom } : {}),
  };
}
