// The run report of a BERT or T5 run (engine/report/family.ts: classification, mlm, seq2seq,
// span-corruption), written where a GPT run's report goes (runs/<id>/report: report.html, report.json, loss-curves.svg).
//
//   writeFamilyReport  cpu  the run's histories, the LoRA stage and the quantized variants (all
//                           measured by the stages before it) → the page; reads only the dataset's
//                           manifest figures it was handed

import type { FamilyReport, FamilyReportLora, FamilyReportVariant } from '../engine/report';
import { isPretrainingTask, lossCurvesSvg, renderFamilyReportHtml } from '../engine/report';
import { countParams } from '../engine/models/blocks';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import type { TrainingSpec } from '../spec/training';
import type { CheckpointRef } from '../artifacts/checkpoints';
import type { DatasetRef } from '../artifacts/datasets';
import { REPORT_HTML, REPORT_JSON, REPORT_SVG } from '../artifacts/models';
import { postKeys } from '../artifacts/keys';
import type { ClassifierVariant } from './classifier-post';
import { familyTraining } from './model-family';
import type { T5Variant } from './t5-post';
import { whileBeating } from './heartbeat';

export interface FamilyReportInput {
  runId: string;
  spec: TrainingSpec;
  /** The checkpoint the table scores: the merged LoRA model, or the trained one. */
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  trainHistory: { round: number; loss: number }[];
  valHistory: { round: number; loss: number; perplexity: number; accuracy?: number; macroF1?: number; exactMatch?: number; examples?: number }[];
  lora: FamilyReportLora | null;
  classifierVariants?: ClassifierVariant[];
  t5Variants?: T5Variant[];
  /** The run's configuration as given (the pipeline spec's sections). */
  config: Record<string, unknown>;
}

export interface FamilyReportResult {
  reportKey: string;
  jsonKey: string;
  sha256: string;
}

export function createFamilyReportActivities(deps: { store: ArtifactStore }) {
  // Beats every second for the whole attempt (the CPU stage's 60 s heartbeat timeout).
  return { writeFamilyReport: (input: FamilyReportInput) => whileBeating(`writeFamilyReport ${input.runId}`, () => writeFamilyReport(deps.store, input)) };
}

/** The table's rows: fp32 (from the variants' reference scores, else the last evaluation) and each variant. */
function variantRows(input: FamilyReportInput, task: FamilyReport['task']): FamilyReportVariant[] {
  const c = input.classifierVariants ?? [];
  const t = input.t5Variants ?? [];
  const last = input.valHistory[input.valHistory.length - 1];
  const lastScore = input.lora ? input.lora.after : { score: (task === 'classification' ? last?.accuracy : last?.exactMatch) ?? NaN, macroF1: last?.macroF1 ?? null };
  const fp32 = (score: number, macroF1: number | null, perplexity: number | null, bytes: number | null): FamilyReportVariant => ({ name: 'fp32', method: 'fp32', score, macroF1, perplexity, drop: 0, bound: null, flips: null, bytes, published: true, rejectedReason: null, prefix: input.checkpoint.prefix });
  if (task === 'classification') {
    return [
      c.length ? fp32(c[0].fp32Accuracy, c[0].fp32MacroF1, null, c[0].fp32Bytes) : fp32(lastScore.score, lastScore.macroF1, null, null),
      ...c.map((v) => ({ name: v.name, method: v.method, score: v.accuracy, macroF1: v.macroF1, perplexity: null, drop: v.drop, bound: v.maxAccuracyDrop, flips: v.flips, bytes: v.bytes, published: v.published, rejectedReason: v.rejectedReason, prefix: v.prefix })),
    ];
  }
  return [
    t.length ? fp32(t[0].fp32ExactMatch, null, t[0].fp32Perplexity, t[0].fp32Bytes) : fp32(lastScore.score, null, input.lora ? null : (last?.perplexity ?? null), null),
    ...t.map((v) => ({ name: v.name, method: v.method, score: v.exactMatch, macroF1: null, perplexity: v.perplexity, drop: v.drop, bound: v.maxExactMatchDrop, flips: v.flips, bytes: v.bytes, published: v.published, rejectedReason: v.rejectedReason, prefix: v.prefix })),
  ];
}

async function writeFamilyReport(store: ArtifactStore, input: FamilyReportInput): Promise<FamilyReportResult> {
  const m = input.spec.model;
  // A GPT domain-head classifier (task classification) is reported as a BERT classifier is.
  const task = m.family === 'bert' || m.family === 't5' || m.task === 'classification' ? m.task : null;
  if (task === null) throw failure('InvalidConfig', `writeFamilyReport: reports a BERT or T5 run or a GPT classifier, not a ${m.family} ${m.task} run`);
  const pretraining = isPretrainingTask(task);
  const report: FamilyReport = {
    runId: input.runId,
    createdAt: new Date().toISOString(),
    task,
    model: { family: m.family, params: countParams(familyTraining(input.spec).params), config: m.config as Record<string, unknown>, from: m.from ?? null },
    dataset: { prefix: input.dataset.prefix, trainTokens: input.dataset.train.reduce((a, s) => a + s.tokens, 0), valTokens: input.dataset.val.reduce((a, s) => a + s.tokens, 0), documents: input.dataset.documents },
    checkpoint: input.checkpoint.prefix,
    trainHistory: input.trainHistory.map((p) => ({ round: p.round, loss: p.loss })),
    valHistory: input.valHistory.map((v) => ({ round: v.round, loss: v.loss, perplexity: v.perplexity, score: pretraining ? null : ((task === 'classification' ? v.accuracy : v.exactMatch) ?? NaN), macroF1: v.macroF1 ?? null, examples: v.examples ?? 0 })),
    lora: input.lora,
    variants: pretraining ? [] : variantRows(input, task),
    config: input.config,
  };
  const committed = await store.commit(postKeys.report(input.runId), {
    [REPORT_HTML]: Buffer.from(renderFamilyReportHtml(report), 'utf8'),
    [REPORT_JSON]: Buffer.from(JSON.stringify(report, null, 2), 'utf8'),
    [REPORT_SVG]: Buffer.from(lossCurvesSvg({ train: report.trainHistory, val: report.valHistory }), 'utf8'),
  });
  const file = (name: string) => committed.files.find((f) => f.name === name)!;
  return { reportKey: file(REPORT_HTML).key, jsonKey: file(REPORT_JSON).key, sha256: file(REPORT_HTML).sha256 };
}

export type FamilyReportActivities = ReturnType<typeof createFamilyReportActivities>;
