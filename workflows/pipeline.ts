// pipelineWorkflow: one PipelineSpec from corpus to report, each stage a child workflow.
//
//   [locateCheckpoint]   only for retryFromCheckpoint: where the continued run's training stopped
//   train                trainingWorkflow child: prepareDataset → createModel → DiLoCo rounds
//   lora                 fineTuneWorkflow child (only when the spec has `lora`): adapters on the
//                        trained checkpoint, on the training dataset or one of its own → merged model;
//                        a BERT classifier's or a T5 seq2seq model's: chunks of trainClassifierLora /
//                        trainT5Lora (gpu queue), then the merge, the PEFT files and the evaluation
//   postTraining         postTrainingWorkflow child: quantize → evaluate → report, on the merged
//                        model and the LoRA dataset when there was a LoRA stage; a classifier's or a
//                        seq2seq model's: its gated int8 variants, then writeFamilyReport; a BERT mlm or
//                        T5 span-corruption run's: skipped, then writeFamilyReport (loss, perplexity)
//
// Every stage's outcome lands in the memo (`stages`) and the search attributes (TruthgptStage,
// TruthgptBestValLoss, ...), so the Temporal UI's list and detail pages tell the story without a
// query. The `progress` query adds the live child ids; the SDK queries the training child itself.

import {
  condition,
  defineQuery,
  executeChild,
  isCancellation,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
  type ChildWorkflowHandle,
} from '@temporalio/workflow';
import type { ClassifierLoraActivities, ClassifierLoraOutcome } from '../activities/classifier-lora';
import type { ClassifierPostActivities, ClassifierVariant } from '../activities/classifier-post';
import type { FamilyReportActivities } from '../activities/family-report';
import type { T5LoraActivities, T5LoraOutcome } from '../activities/t5-lora';
import type { T5PostActivities, T5Variant } from '../activities/t5-post';
import type { PipelineActivities, ResumePoint } from '../activities/pipeline';
import type { CheckpointRef } from '../artifacts/checkpoints';
import type { LoraMetrics } from '../engine/finetune';
import type { FamilyReportLora, ReportLora } from '../engine/report';
import { errorTypeOf, failure, NON_RETRYABLE_ERROR_TYPES } from '../spec/errors';
import { modelShape } from '../spec/family';
import type { FineTuneSpec } from '../spec/lora';
import type { PipelineSpec } from '../spec/pipeline';
import { committedFileKey } from '../spec/store-layout';
import { TASK_QUEUES, TruthgptBestValLoss, TruthgptModelFamily, TruthgptPipeline, TruthgptStage, TruthgptTask, TruthgptValAccuracy } from '../spec/temporal-names';
import { loraMetrics, type FineTuneCompleted, type fineTuneWorkflow } from './fine-tune';
import type { EvaluationCoverage, postTrainingWorkflow, PostTrainingResult, VariantResult } from './post-training';
import { pauseSignal, resumeSignal } from './controls';
import { trainingWorkflow, type TrainingResult, type ValPoint } from './training';

export const PIPELINE_STAGES = ['train', 'lora', 'postTraining'] as const;
export type PipelineStage = (typeof PIPELINE_STAGES)[number];

export interface StageOutcome {
  stage: PipelineStage;
  status: 'running' | 'done' | 'failed' | 'cancelled' | 'skipped';
  /** Child workflow id, when the stage runs as one. */
  workflowId: string | null;
  /** One line for people: what the stage produced or why it stopped. */
  summary: string;
  startedAt: string;
  endedAt: string | null;
}

export interface PipelineInput {
  spec: PipelineSpec;
  /** Pipeline run ids this run continues (retryFromCheckpoint), newest first. */
  continues?: string[];
}

export interface PipelineProgress {
  name: string;
  stage: PipelineStage | 'locateCheckpoint' | 'done' | 'failed' | 'cancelled';
  stages: StageOutcome[];
  /** The trainingWorkflow child; query it for rounds, steps and losses. */
  trainingWorkflowId: string;
  /** The fineTuneWorkflow child when the spec has `lora` (same progress query as training). */
  loraWorkflowId: string | null;
  paused: boolean;
  continues: string[];
  resumedFrom: { runId: string; round: number } | null;
}

export interface PipelineResult {
  workflowId: string;
  name: string;
  continues: string[];
  training: {
    workflowId: string;
    rounds: number;
    steps: number;
    tokensSeen: number;
    bestValLoss: number | null;
    valHistory: ValPoint[];
    checkpoint: CheckpointRef;
    resumedFrom: { runId: string; round: number } | null;
    wallMs: number;
  };
  /** The LoRA stage's outcome, null without `spec.lora`. */
  lora: LoraOutcome | null;
  variants: VariantResult[];
  /** A classifier's int8 variants, gated on validation accuracy (BERT classification runs with quantization). */
  classifierVariants?: ClassifierVariant[];
  /** A BERT classifier's LoRA stage: the merged checkpoint, the PEFT files, accuracy after. */
  classifierLora?: ClassifierLoraOutcome;
  /** A T5 seq2seq model's int8 variants, gated on validation exact match (T5 seq2seq runs with quantization). */
  t5Variants?: T5Variant[];
  /** A T5 seq2seq model's LoRA stage: the merged checkpoint, the PEFT files, loss and exact match after, train loss per chunk. */
  t5Lora?: T5LoraOutcome & { chunkLoss: FamilyReportLora['chunkLoss'] };
  /** What the variants' perplexity covers (absent for runs from before it was recorded). */
  evaluation?: EvaluationCoverage;
  reportKey: string;
  stages: StageOutcome[];
  wallMs: number;
}

/** The LoRA stage's outcome, also the run's memo `lora` (so the UI shows it): the fine-tune's metrics plus where its artifacts are. */
export type LoraOutcome = Pick<FineTuneCompleted, keyof LoraMetrics | 'valLossAfterMerged' | 'merged' | 'wallMs'> & {
  workflowId: string;
  /** The dataset the adapters trained and were evaluated on (post-training evaluates on it too). */
  datasetPrefix: string;
  /** PEFT files: `<adapterPrefix>/adapter_model.safetensors` + `adapter_config.json`. */
  adapterPrefix: string;
  adapterKey: string;
  /** sha256 of each base checkpoint file as the fine-tune read it (only adapters train). */
  baseSha256: Record<string, string>;
};

export const pipelineProgressQuery = defineQuery<PipelineProgress>('progress');

/** The pipeline whose training run holds each store prefix: children use the pipeline's id. */
export const trainingChildId = (pipelineId: string) => `${pipelineId}-train`;
export const postTrainingChildId = (pipelineId: string) => `${pipelineId}-post`;
export const loraChildId = (pipelineId: string) => `${pipelineId}-lora`;

/** Deterministic errors fail at once; anything else is retried, ten times at most. */
const RETRY = { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES } as const;
/**
 * The CPU-queue activities of the non-GPT stages (classifier LoRA merge, classifier and T5
 * post-training). They heartbeat every second while their event loop turns (activities/heartbeat.ts
 * whileBeating), so a worker lost where no supervisor reports it costs the heartbeat timeout, not
 * the 60-minute start-to-close one; 60 s like post-training's (README, "Heartbeat timeouts").
 */
const CPU_STAGE = { taskQueue: TASK_QUEUES.cpu, startToCloseTimeout: '60 minutes', heartbeatTimeout: '60 seconds', retry: RETRY } as const;

/** The GPU-queue chunks of the non-GPT LoRA stages: resumed from their last snapshot on retry (timeouts: loraChunkOptions). */
const LORA_CHUNK = { taskQueue: TASK_QUEUES.gpu, retry: { ...RETRY, maximumAttempts: 20 } } as const;

const classifierLoraCpu = proxyActivities<ClassifierLoraActivities>(CPU_STAGE);
const t5LoraCpu = proxyActivities<T5LoraActivities>(CPU_STAGE);
const familyReport = proxyActivities<FamilyReportActivities>(CPU_STAGE);
const classifierPost = proxyActivities<ClassifierPostActivities>(CPU_STAGE);
const t5Post = proxyActivities<T5PostActivities>(CPU_STAGE);

const { locateCheckpoint } = proxyActivities<PipelineActivities>({ taskQueue: TASK_QUEUES.cpu, startToCloseTimeout: '5 minutes', retry: RETRY });

const now = () => new Date().toISOString();

/** A run's stages and children, and how it tells the world: memo, search attributes, details. */
class PipelineState {
  readonly stages: StageOutcome[] = [];
  current: PipelineProgress['stage'] = 'train';
  paused = false;
  trainChild: ChildWorkflowHandle<typeof trainingWorkflow> | null = null;
  loraChild: ChildWorkflowHandle<typeof fineTuneWorkflow> | null = null;
  resumedFrom: PipelineProgress['resumedFrom'] = null;
  lora: LoraOutcome | null = null;
  /** A classifier's quantized variants (non-GPT runs with quantization). */
  classifierVariants: ClassifierVariant[] | null = null;
  /** A classifier's LoRA stage outcome. */
  classifierLora: ClassifierLoraOutcome | null = null;
  /** A T5 seq2seq model's quantized variants. */
  t5Variants: T5Variant[] | null = null;
  /** A T5 seq2seq model's LoRA stage outcome. */
  t5Lora: PipelineResult['t5Lora'] | null = null;
  /** A classifier's or a seq2seq model's LoRA stage, as its report tells it. */
  familyLora: FamilyReportLora | null = null;
  /** The stage a failure or a cancellation is recorded against. */
  running: StageOutcome | null = null;
  readonly loraWorkflowId: string | null;

  constructor(
    readonly spec: PipelineSpec,
    readonly id: string,
    readonly continues: string[],
  ) {
    // A BERT classifier's LoRA stage runs as activities of the pipeline, not as a child workflow.
    this.loraWorkflowId = spec.lora && spec.training.model.family === 'gpt' ? loraChildId(id) : null;
  }

  publish(): void {
    const { stages, continues, resumedFrom, loraWorkflowId, lora } = this;
    // `lora` keys only for specs with a LoRA stage: runs recorded before it keep their memo.
    upsertMemo({ stages, continues, trainingWorkflowId: trainingChildId(this.id), resumedFrom, ...(loraWorkflowId ? { loraWorkflowId, lora } : {}) });
    const last = stages[stages.length - 1];
    if (last) setCurrentDetails(`**${last.stage}** ${last.status}: ${last.summary}`);
  }

  setStage(s: PipelineProgress['stage']): void {
    this.current = s;
    upsertSearchAttributes([{ key: TruthgptStage, value: s }]);
  }

  begin(stage: PipelineStage, workflowId: string | null, summary: string): StageOutcome {
    const o: StageOutcome = { stage, status: 'running', workflowId, summary, startedAt: now(), endedAt: null };
    this.stages.push(o);
    this.setStage(stage);
    this.publish();
    return o;
  }

  end(o: StageOutcome, status: StageOutcome['status'], summary: string): void {
    Object.assign(o, { status, summary, endedAt: now() });
    this.publish();
  }

  // Pause holds training before its next round and LoRA before its next chunk (the children's own
  // signals), and the pipeline before its next stage; resume releases them all.
  installHandlers(): void {
    setHandler(pipelineProgressQuery, () => ({
      name: this.spec.name,
      stage: this.current,
      stages: this.stages,
      trainingWorkflowId: trainingChildId(this.id),
      loraWorkflowId: this.loraWorkflowId,
      paused: this.paused,
      continues: this.continues,
      resumedFrom: this.resumedFrom,
    }));
    setHandler(pauseSignal, async () => {
      this.paused = true;
      await this.trainChild?.signal(pauseSignal);
      await this.loraChild?.signal(pauseSignal);
    });
    setHandler(resumeSignal, async () => {
      this.paused = false;
      await this.trainChild?.signal(resumeSignal);
      await this.loraChild?.signal(resumeSignal);
    });
  }

  async waitWhilePaused(): Promise<void> {
    if (this.paused) await condition(() => !this.paused);
  }
}

/**
 * Runs a parsed PipelineSpec; use the SDK (`TruthGPT.connect().startPipeline(spec)`) to start it.
 * @example await client.workflow.start(pipelineWorkflow, { taskQueue: 'truthgpt-cpu', workflowId: 'pipeline-brown-…', args: [{ spec }] })
 */
export async function pipelineWorkflow(input: PipelineInput): Promise<PipelineResult> {
  const { spec } = input;
  const info = workflowInfo();
  const st = new PipelineState(spec, info.workflowId, input.continues ?? []);
  st.installHandlers();
  upsertSearchAttributes([
    { key: TruthgptPipeline, value: spec.name },
    { key: TruthgptModelFamily, value: spec.training.model.family },
  ]);
  // A GPT domain-head classifier (task classification) is told by its task too; GPT lm runs never
  // were (their recorded specs may have no task at all).
  if (spec.training.model.family !== 'gpt' || spec.training.model.task === 'classification') upsertSearchAttributes([{ key: TruthgptTask, value: spec.training.model.task }]);
  try {
    const resume = await locateStage(st);
    const trained = await trainStage(st, resume);
    const gpt = spec.training.model.family === 'gpt';
    const tuned = gpt ? await loraStage(st, trained) : null;
    const t5 = spec.training.model.family === 't5';
    // A classifier's (or a seq2seq model's) LoRA stage leaves a merged checkpoint that post-training quantizes instead of the trained one.
    const classifier = gpt ? trained : t5 ? await t5LoraStage(st, trained) : await classifierLoraStage(st, trained);
    // Classifiers and seq2seq models get a report, and so do mlm / span-corruption runs (a later patch);
    // runs recorded before either existed replay without one.
    const model = spec.training.model;
    const pretraining = model.task === 'mlm' || model.task === 'span-corruption';
    // A GPT domain-head classifier (model.variant, task classification) gets the classifier's report;
    // GPT lm runs, the only GPT runs recorded before it, never reach the patch.
    const report = gpt ? model.task === 'classification' && patched('family-report-domain-head') : pretraining ? patched('family-report-pretraining') : (model.task === 'classification' || model.task === 'seq2seq') && patched('family-report');
    // A memory-augmented GPT runs GPT's post-training since the exporter reads its slots
    // (engine/models/export.ts; runs recorded before that replay with the stage skipped); an
    // image-prefix GPT's is skipped (no exporter for the projector); a domain-head GPT's is the
    // classifier's (exportDomainGpt, int8 gated on accuracy).
    const variantKind = model.family === 'gpt' ? model.variant?.kind : undefined;
    const variant = variantKind !== undefined && !(variantKind === 'memory' && patched('memory-post-training'));
    const post = gpt && !variant ? await postTrainingStage(st, trained, tuned) : spec.quantization.length ? await (t5 ? t5PostStage(st, classifier) : classifierPostStage(st, classifier)) : skipPostTraining(st, classifier, report);
    const told = report ? await familyReportStage(st, trained, classifier, post) : post;
    return resultOf(st, trained, told, Date.now() - info.startTime.getTime());
  } catch (err) {
    const cancelled = isCancellation(err);
    const message = causeMessage(err);
    if (st.running) st.end(st.running, cancelled ? 'cancelled' : 'failed', message);
    st.setStage(cancelled ? 'cancelled' : 'failed');
    if (cancelled) throw err;
    // The stage and the vocabulary type stay visible at the top of the failure.
    throw failure(errorTypeOf(err) ?? 'StageFailed', `stage ${st.running?.stage ?? st.current}: ${message}`, undefined, err as Error);
  }
}

/** retryFromCheckpoint only: where the continued run's training stopped. */
async function locateStage(st: PipelineState): Promise<ResumePoint | null> {
  const { continues } = st;
  if (!continues.length) return null;
  st.setStage('locateCheckpoint');
  const resume = await locateCheckpoint.executeWithOptions({ summary: `last committed checkpoint of ${continues[0]}` }, [{ runIds: continues, workers: st.spec.training.workers }]);
  if (!resume) {
    throw failure('MissingArtifact', `retry of ${continues[0]}: no committed checkpoint under runs/${continues.join(', runs/')}/global; start it afresh instead`);
  }
  st.resumedFrom = { runId: resume.runId, round: resume.round };
  return resume;
}

async function trainStage(st: PipelineState, resume: ResumePoint | null): Promise<TrainingResult> {
  const t = st.spec.training;
  const id = trainingChildId(st.id);
  const plan = t.rounds === 0 ? `no pretraining: evaluate ${t.model.from}` : `${t.workers} worker(s) × ${t.rounds} rounds × ${t.innerSteps} steps${t.model.from ? ` from ${t.model.from}` : ''}`;
  st.running = st.begin('train', id, resume ? `resuming ${resume.runId} at round ${resume.round}` : plan);
  st.trainChild = await startChild(trainingWorkflow, {
    workflowId: id,
    taskQueue: TASK_QUEUES.cpu,
    args: [{ spec: t, runId: st.id, ...(resume ? { resume } : {}) }],
    staticSummary: `train ${t.model.family} ${modelShape(t.model)} on ${t.dataset.name}: W=${t.workers}, ${t.rounds} rounds × H=${t.innerSteps}`,
  });
  if (st.paused) await st.trainChild.signal(pauseSignal);
  const trained: TrainingResult = await st.trainChild.result();
  st.trainChild = null;
  if (trained.bestValLoss !== null) upsertSearchAttributes([{ key: TruthgptBestValLoss, value: trained.bestValLoss }]);
  const lastVal = trained.valHistory[trained.valHistory.length - 1];
  const firstVal = trained.valHistory[0];
  if (lastVal?.accuracy !== undefined && firstVal?.accuracy !== undefined) {
    // A classifier is told by its accuracy and macro F1 over every validation document.
    const best = Math.max(...trained.valHistory.map((v) => v.accuracy ?? 0));
    upsertSearchAttributes([{ key: TruthgptValAccuracy, value: best }]);
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    st.end(st.running, 'done', `${trained.rounds} rounds, val accuracy ${pct(firstVal.accuracy)} → ${pct(lastVal.accuracy)}, macro F1 ${firstVal.macroF1!.toFixed(3)} → ${lastVal.macroF1!.toFixed(3)} over ${lastVal.examples} val documents, ${trained.checkpoint.prefix}`);
    return trained;
  }
  if (lastVal?.exactMatch !== undefined && firstVal?.exactMatch !== undefined) {
    // A seq2seq model is told by its target loss and the exact match of its greedy answers.
    upsertSearchAttributes([{ key: TruthgptValAccuracy, value: Math.max(...trained.valHistory.map((v) => v.exactMatch ?? 0)) }]);
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    st.end(st.running, 'done', `${trained.rounds} rounds, val loss ${firstVal.loss.toFixed(4)} → ${lastVal.loss.toFixed(4)}, exact match ${pct(firstVal.exactMatch)} → ${pct(lastVal.exactMatch)} over ${lastVal.examples} val examples, ${trained.checkpoint.prefix}`);
    return trained;
  }
  st.end(st.running, 'done', `${trained.rounds} rounds, ${trained.tokensSeen} tokens, val loss ${lastVal?.loss.toFixed(4) ?? '-'} (best ${trained.bestValLoss?.toFixed(4) ?? '-'}), ${trained.checkpoint.prefix}`);
  return trained;
}

/** The fineTuneWorkflow child on the trained checkpoint, when the spec has `lora`. */
async function loraStage(st: PipelineState, trained: TrainingResult): Promise<FineTuneCompleted | null> {
  const l = st.spec.lora;
  if (!l) {
    st.end(st.begin('lora', null, 'not requested'), 'skipped', 'not requested');
    return null;
  }
  await st.waitWhilePaused();
  const id = loraChildId(st.id);
  const on = l.dataset ? l.dataset.name : `${st.spec.training.dataset.name} (the training dataset)`;
  st.running = st.begin('lora', id, `r=${l.lora.r} on ${on}, ${l.train.steps} steps`);
  const { dataset: _d, ...rest } = l;
  const ftSpec: FineTuneSpec = {
    ...rest,
    base: { kind: 'checkpoint', prefix: trained.checkpoint.prefix },
    dataset: l.dataset ? { kind: 'spec', spec: l.dataset } : { kind: 'ref', prefix: trained.dataset.prefix },
    continueFromAdapter: false,
    skipIfSeen: false,
    lineage: null,
  };
  st.loraChild = await startChild<typeof fineTuneWorkflow>('fineTuneWorkflow', {
    workflowId: id,
    taskQueue: TASK_QUEUES.cpu,
    args: [{ spec: ftSpec, runId: id }],
    staticSummary: `LoRA r=${l.lora.r} α=${l.lora.lora_alpha} on ${on}: ${l.train.steps} steps from ${trained.checkpoint.prefix}`,
  });
  if (st.paused) await st.loraChild.signal(pauseSignal);
  const r = await st.loraChild.result();
  st.loraChild = null;
  // Without a lineage the fine-tune never skips; a skip here would be a bug worth stopping on.
  if (r.status !== 'completed') throw failure('StageFailed', `fine-tune ended without training: ${r.reason}`);
  st.lora = loraOutcome(id, r);
  const pct = (r.trainableFraction * 100).toFixed(2);
  st.end(st.running, 'done', `val loss ${r.valLossBefore.toFixed(4)} → ${r.valLossAfter.toFixed(4)} (ppl ${r.perplexityBefore.toFixed(2)} → ${r.perplexityAfter.toFixed(2)}), ${r.trainable} trainable (${pct}%), adapter ${r.adapter.prefix}`);
  return r;
}

/** The postTrainingWorkflow child, on the merged model and the LoRA dataset when there was a LoRA stage. */
async function postTrainingStage(st: PipelineState, trained: TrainingResult, tuned: FineTuneCompleted | null): Promise<PostTrainingResult> {
  const { spec } = st;
  await st.waitWhilePaused();
  const evaluated = tuned ? `merged LoRA model on ${tuned.dataset.prefix}` : 'trained model';
  st.running = st.begin('postTraining', postTrainingChildId(st.id), `fp32${spec.quantization.map((q) => ` + ${q.method}`).join('')} of the ${evaluated}: evaluate and report`);
  const post = await executeChild<typeof postTrainingWorkflow>('postTrainingWorkflow', {
    workflowId: postTrainingChildId(st.id),
    taskQueue: TASK_QUEUES.cpu,
    args: [
      {
        runId: st.id,
        checkpoint: tuned ? tuned.merged : trained.checkpoint,
        dataset: tuned ? tuned.dataset : trained.dataset,
        quant: spec.quantization,
        eval: spec.evaluation,
        trainHistory: trained.trainHistory,
        valHistory: trained.valHistory,
        config: { name: spec.name, training: spec.training, ...(spec.lora ? { lora: spec.lora } : {}), quantization: spec.quantization, evaluation: spec.evaluation },
        ...(st.lora ? { lora: reportLora(st.lora, trained) } : {}),
      },
    ],
    staticSummary: `quantize (${spec.quantization.map((q) => q.method).join(', ') || 'none'}), evaluate, report`,
  });
  const told = post.variants.map((v) => `${v.name} ppl ${v.ppl.toFixed(3)}${v.published ? '' : ' (refused)'}`);
  st.end(st.running, 'done', `${told.join(', ')}${post.evaluation ? ` on ${coverageWords(post.evaluation)}` : ''}; report ${post.reportKey}`);
  st.running = null;
  st.setStage('done');
  return post;
}

/**
 * LoRA on a BERT classifier (activities/classifier-lora.ts): chunks of `stepsPerActivity` steps on
 * the GPU queue, then the merge, the PEFT SEQ_CLS files and the merged model's accuracy. Returns
 * the training result with the merged checkpoint in place of the trained one (what post-training
 * quantizes); without `spec.lora` the stage is skipped and the trained result returned.
 */
async function classifierLoraStage(st: PipelineState, trained: TrainingResult): Promise<TrainingResult> {
  const l = st.spec.lora;
  if (!l) {
    st.end(st.begin('lora', null, 'not requested'), 'skipped', 'not requested');
    return trained;
  }
  await st.waitWhilePaused();
  const id = loraChildId(st.id);
  st.running = st.begin('lora', null, `r=${l.lora.r} on the classifier ${trained.checkpoint.prefix}, ${l.train.steps} steps`);
  const settings = { lora: l.lora, train: l.train };
  const gpu = proxyActivities<ClassifierLoraActivities>(loraChunkOptions(l));
  const { final, chunkLoss } = await loraChunks(st, l, 'the classifier', (chunk, previous, summary) =>
    gpu.trainClassifierLora.executeWithOptions({ summary }, [
      { runId: id, spec: st.spec.training, settings, base: trained.checkpoint, dataset: trained.dataset, chunk, previous },
    ]),
  );
  const lastLoss = chunkLoss[chunkLoss.length - 1].last;
  const o = await classifierLoraCpu.mergeClassifierLora.executeWithOptions({ summary: 'merge the adapters, write PEFT files, evaluate' }, [
    { runId: id, spec: st.spec.training, settings, base: trained.checkpoint, dataset: trained.dataset, final },
  ]);
  st.classifierLora = o;
  const before = trained.valHistory[trained.valHistory.length - 1];
  st.familyLora = {
    ...familyLoraOf(l, o, chunkLoss),
    before: { loss: before?.loss ?? NaN, score: before?.accuracy ?? NaN, macroF1: before?.macroF1 ?? null },
    after: { loss: o.lossAfter, score: o.accuracyAfter, macroF1: o.macroF1After },
  };
  const pct = (x: number | undefined) => (x === undefined ? '-' : `${(100 * x).toFixed(1)}%`);
  const share = ((100 * o.trainable) / o.total).toFixed(2);
  st.end(
    st.running,
    'done',
    `val accuracy ${pct(before?.accuracy)} → ${pct(o.accuracyAfter)}, macro F1 ${before?.macroF1?.toFixed(3) ?? '-'} → ${o.macroF1After.toFixed(3)} over ${o.examples} val documents (last train loss ${lastLoss.toFixed(4)}), ${o.trainable} trainable (${share}%: adapters on ${o.targetModules.join(', ')} + the head), adapter ${o.adapterPrefix}`,
  );
  st.running = null;
  return { ...trained, checkpoint: o.merged };
}

/**
 * LoRA on a T5 seq2seq model (activities/t5-lora.ts): chunks of `stepsPerActivity` steps on the GPU
 * queue, then the merge, the PEFT SEQ_2_SEQ_LM files and the merged model's loss and exact match.
 * Returns the training result with the merged checkpoint in place of the trained one (what
 * post-training quantizes); without `spec.lora` the stage is skipped and the trained result returned.
 */
async function t5LoraStage(st: PipelineState, trained: TrainingResult): Promise<TrainingResult> {
  const l = st.spec.lora;
  if (!l) {
    st.end(st.begin('lora', null, 'not requested'), 'skipped', 'not requested');
    return trained;
  }
  await st.waitWhilePaused();
  const id = loraChildId(st.id);
  st.running = st.begin('lora', null, `r=${l.lora.r} on the seq2seq model ${trained.checkpoint.prefix}, ${l.train.steps} steps`);
  const settings = { lora: l.lora, train: l.train };
  const gpu = proxyActivities<T5LoraActivities>(loraChunkOptions(l));
  const { final, chunkLoss } = await loraChunks(st, l, 'the seq2seq model', (chunk, previous, summary) =>
    gpu.trainT5Lora.executeWithOptions({ summary }, [
      { runId: id, spec: st.spec.training, settings, base: trained.checkpoint, dataset: trained.dataset, chunk, previous },
    ]),
  );
  const o = await t5LoraCpu.mergeT5Lora.executeWithOptions({ summary: 'merge the adapters, write PEFT files, evaluate' }, [
    { runId: id, spec: st.spec.training, settings, base: trained.checkpoint, dataset: trained.dataset, final },
  ]);
  st.t5Lora = { ...o, chunkLoss };
  const before = trained.valHistory[trained.valHistory.length - 1];
  st.familyLora = { ...familyLoraOf(l, o, chunkLoss), before: { loss: before?.loss ?? NaN, score: before?.exactMatch ?? NaN, macroF1: null }, after: { loss: o.lossAfter, score: o.exactMatchAfter, macroF1: null } };
  const pct = (x: number | undefined) => (x === undefined ? '-' : `${(100 * x).toFixed(1)}%`);
  const share = ((100 * o.trainable) / o.total).toFixed(2);
  st.end(
    st.running,
    'done',
    `train loss ${chunkLoss[0].first.toFixed(4)} → ${chunkLoss[chunkLoss.length - 1].last.toFixed(4)}, val loss ${before?.loss.toFixed(4) ?? '-'} → ${o.lossAfter.toFixed(4)}, exact match ${pct(before?.exactMatch)} → ${pct(o.exactMatchAfter)} over ${o.examples} val examples, ${o.trainable} trainable (${share}%: adapters on ${o.targetModules.join(', ')}), adapter ${o.adapterPrefix}`,
  );
  st.running = null;
  return { ...trained, checkpoint: o.merged };
}

/**
 * The GPU-queue chunk options of a non-GPT LoRA stage: the spec's heartbeat and activity timeouts,
 * as a GPT fine-tune's chunks take them, so a dead worker's chunk is retried that soon.
 */
function loraChunkOptions(l: NonNullable<PipelineSpec['lora']>) {
  return { ...LORA_CHUNK, heartbeatTimeout: `${l.heartbeatTimeoutSeconds} seconds`, startToCloseTimeout: `${l.activityTimeoutMinutes} minutes` } as const;
}

/**
 * A non-GPT LoRA stage's chunks of `stepsPerActivity` steps, one after another (each resumes from
 * the one before it), pausable between chunks; `what` names the model in each chunk's summary. Returns the last chunk's checkpoint and the train
 * loss at each chunk's start and end.
 */
async function loraChunks(
  st: PipelineState,
  l: NonNullable<PipelineSpec['lora']>,
  what: string,
  runChunk: (chunk: number, previous: CheckpointRef | null, summary: string) => Promise<{ checkpoint: CheckpointRef; firstLoss?: number; lastLoss: number }>,
): Promise<{ final: CheckpointRef; chunkLoss: FamilyReportLora['chunkLoss'] }> {
  const chunks = Math.ceil(l.train.steps / l.train.stepsPerActivity);
  let previous: CheckpointRef | null = null;
  const chunkLoss: FamilyReportLora['chunkLoss'] = [];
  for (let chunk = 0; chunk < chunks; chunk++) {
    await st.waitWhilePaused();
    const r = await runChunk(chunk, previous, `LoRA chunk ${chunk + 1}/${chunks} of ${what}`);
    previous = r.checkpoint;
    chunkLoss.push({ step: Math.min((chunk + 1) * l.train.stepsPerActivity, l.train.steps), first: r.firstLoss ?? NaN, last: r.lastLoss });
  }
  return { final: previous!, chunkLoss };
}

/** What a non-GPT LoRA stage's report says besides its before/after figures. */
function familyLoraOf(l: NonNullable<PipelineSpec['lora']>, o: { trainable: number; total: number; targetModules: string[]; adapterPrefix: string; merged: CheckpointRef }, chunkLoss: FamilyReportLora['chunkLoss']): Omit<FamilyReportLora, 'before' | 'after'> {
  return { r: l.lora.r, alpha: l.lora.lora_alpha, targetModules: o.targetModules, trainable: o.trainable, total: o.total, steps: l.train.steps, chunkLoss, adapterPrefix: o.adapterPrefix, mergedCheckpoint: o.merged.prefix };
}

/** A BERT or T5 run's report (activities/family-report.ts), where a GPT run's goes. */
async function familyReportStage(st: PipelineState, trained: TrainingResult, evaluated: TrainingResult, post: PostTrainingResult): Promise<PostTrainingResult> {
  const { spec } = st;
  const r = await familyReport.writeFamilyReport.executeWithOptions({ summary: 'the run report: loss curves, metrics per round, LoRA, variants' }, [
    {
      runId: st.id,
      spec: spec.training,
      checkpoint: evaluated.checkpoint,
      dataset: trained.dataset,
      trainHistory: trained.trainHistory.map((p) => ({ round: p.round, loss: p.loss })),
      valHistory: trained.valHistory,
      lora: st.familyLora,
      ...(st.classifierVariants ? { classifierVariants: st.classifierVariants } : {}),
      ...(st.t5Variants ? { t5Variants: st.t5Variants } : {}),
      config: { name: spec.name, training: spec.training, ...(spec.lora ? { lora: spec.lora } : {}), quantization: spec.quantization },
    },
  ]);
  return { ...post, reportKey: r.reportKey };
}

/**
 * A classifier's post-training: each int8 variant quantized and gated on validation accuracy
 * (activities/classifier-post.ts); a refused variant marked `required` fails the run (QuantRejected).
 */
async function classifierPostStage(st: PipelineState, trained: TrainingResult): Promise<PostTrainingResult> {
  const { spec } = st;
  await st.waitWhilePaused();
  st.running = st.begin('postTraining', null, `quantize ${spec.quantization.map((q) => q.name).join(', ')} and gate on validation accuracy`);
  const variants: ClassifierVariant[] = [];
  for (const quant of spec.quantization) {
    variants.push(
      await classifierPost.quantizeClassifier.executeWithOptions({ summary: `${quant.method} of ${trained.checkpoint.prefix}, gated on accuracy` }, [
        { runId: st.id, spec: spec.training, checkpoint: trained.checkpoint, dataset: trained.dataset, quant },
      ]),
    );
  }
  st.classifierVariants = variants;
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  const told = variants.map((v) => `${v.name} accuracy ${pct(v.accuracy)} vs fp32 ${pct(v.fp32Accuracy)}${v.published ? '' : ' (refused)'}`);
  const refused = variants.filter((v, i) => !v.published && spec.quantization[i].required);
  if (refused.length) throw failure('QuantRejected', refused.map((v) => `required variant ${v.name} (${v.method}) was refused: ${v.rejectedReason}`).join('; '));
  st.end(st.running, 'done', `${told.join(', ')} over ${variants[0]?.examples ?? 0} val documents`);
  st.running = null;
  st.setStage('done');
  return { variants: [], reportKey: '', reportJsonKey: '' };
}

/**
 * A T5 seq2seq model's post-training: each int8 variant's encoder/decoder pair quantized and gated on
 * validation exact match (activities/t5-post.ts); a refused variant marked `required` fails the run.
 */
async function t5PostStage(st: PipelineState, trained: TrainingResult): Promise<PostTrainingResult> {
  const { spec } = st;
  await st.waitWhilePaused();
  st.running = st.begin('postTraining', null, `quantize ${spec.quantization.map((q) => q.name).join(', ')} and gate on validation exact match`);
  const variants: T5Variant[] = [];
  for (const quant of spec.quantization) {
    variants.push(
      await t5Post.quantizeT5.executeWithOptions({ summary: `${quant.method} of ${trained.checkpoint.prefix}, gated on exact match` }, [
        { runId: st.id, spec: spec.training, checkpoint: trained.checkpoint, dataset: trained.dataset, quant },
      ]),
    );
  }
  st.t5Variants = variants;
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  const told = variants.map((v) => `${v.name} exact match ${pct(v.exactMatch)} vs fp32 ${pct(v.fp32ExactMatch)}${v.published ? `, ppl ${v.perplexity!.toFixed(3)} vs ${v.fp32Perplexity!.toFixed(3)}` : ' (refused)'}`);
  const refused = variants.filter((v, i) => !v.published && spec.quantization[i].required);
  if (refused.length) throw failure('QuantRejected', refused.map((v) => `required variant ${v.name} (${v.method}) was refused: ${v.rejectedReason}`).join('; '));
  st.end(st.running, 'done', `${told.join(', ')} over ${variants[0]?.examples ?? 0} val examples`);
  st.running = null;
  st.setStage('done');
  return { variants: [], reportKey: '', reportJsonKey: '' };
}

/**
 * A model of another family than GPT: its training evaluations are the run's result, and the
 * post-training stage (GPT's quantization, evaluation table and report) is skipped, saying so.
 */
function skipPostTraining(st: PipelineState, trained: TrainingResult, reported = false): PostTrainingResult {
  const model = st.spec.training.model;
  const pretraining = model.task === 'mlm' || model.task === 'span-corruption';
  const why = reported
    ? pretraining
      ? `post-training quantization is offered for classifiers and seq2seq models, not for ${model.family} ${model.task} pretraining; the model is ${trained.checkpoint.prefix} (the report follows)`
      : `no quantization asked for; the ${model.family} ${model.task} model is ${trained.checkpoint.prefix} (the report follows)`
    : model.family === 'gpt' && model.variant
      ? `post-training (export, quantization, evaluation table) of ${model.variant.kind === 'memory' ? 'a memory-augmented' : `an ${model.variant.kind}`} GPT is not wired yet; the model is ${trained.checkpoint.prefix}`
      : `post-training (quantization, report) runs on GPT models so far; the ${model.family} ${model.task} model is ${trained.checkpoint.prefix}`;
  st.end(st.begin('postTraining', null, why), 'skipped', why);
  st.running = null;
  st.setStage('done');
  return { variants: [], reportKey: '', reportJsonKey: '' };
}

/** "the whole val split (88890 tokens)" or "4096 val tokens, 4.61% of the split": what a ppl figure covers (engine/report coverageText, short). */
export function coverageWords(e: EvaluationCoverage): string {
  return e.tokens >= e.splitTokens ? `the whole val split (${e.tokens} tokens)` : `${e.tokens} val tokens, ${((100 * e.tokens) / e.splitTokens).toFixed(2)}% of the split`;
}

function resultOf(st: PipelineState, trained: TrainingResult, post: PostTrainingResult, wallMs: number): PipelineResult {
  return {
    workflowId: st.id,
    name: st.spec.name,
    continues: st.continues,
    training: {
      workflowId: trainingChildId(st.id),
      rounds: trained.rounds,
      steps: trained.steps,
      tokensSeen: trained.tokensSeen,
      bestValLoss: trained.bestValLoss,
      valHistory: trained.valHistory,
      checkpoint: trained.checkpoint,
      resumedFrom: trained.resumedFrom ?? null,
      wallMs: trained.wallMs,
    },
    lora: st.lora,
    variants: post.variants,
    ...(st.classifierVariants ? { classifierVariants: st.classifierVariants } : {}),
    ...(st.classifierLora ? { classifierLora: st.classifierLora } : {}),
    ...(st.t5Variants ? { t5Variants: st.t5Variants } : {}),
    ...(st.t5Lora ? { t5Lora: st.t5Lora } : {}),
    ...(post.evaluation ? { evaluation: post.evaluation } : {}),
    reportKey: post.reportKey,
    stages: st.stages,
    wallMs,
  };
}

/** engine/lora/peft.ts's ADAPTER_WEIGHTS_FILE (workflows import only types from engine/). */
const ADAPTER_WEIGHTS = 'adapter_model.safetensors';

/** What the LoRA stage produced: the fine-tune's metrics and where its artifacts are. */
function loraOutcome(workflowId: string, r: FineTuneCompleted): LoraOutcome {
  return {
    workflowId,
    datasetPrefix: r.dataset.prefix,
    ...loraMetrics(r),
    valLossAfterMerged: r.valLossAfterMerged,
    adapterPrefix: r.adapter.prefix,
    adapterKey: committedFileKey(r.adapter.prefix, ADAPTER_WEIGHTS, r.adapter.files[ADAPTER_WEIGHTS]!.sha256),
    merged: r.merged,
    baseSha256: Object.fromEntries(Object.entries(r.base.files).map(([n, f]) => [n, f.sha256])),
    wallMs: r.wallMs,
  };
}

/** What the report says about the LoRA stage (the post-training child's input stays small). */
function reportLora(l: LoraOutcome, trained: TrainingResult): ReportLora {
  return { datasetPrefix: l.datasetPrefix, baseCheckpoint: trained.checkpoint.prefix, pretrainDatasetPrefix: trained.dataset.prefix, ...loraMetrics(l), adapterKey: l.adapterKey };
}

/** The innermost message of a failure chain (child → activity → application failure). */
function causeMessage(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  let message = e?.message ?? String(err);
  for (let depth = 0; e && depth < 8; e = e.cause as typeof e, depth++) if (e.message) message = e.message;
  return message;
}
