// Post-training activities (thin: resolve refs → one engine call each → store → return refs):
//
//   exportModel     cpu  checkpoint → fp32 inference ONNX (KV cache) + its validation perplexity
//   quantizeModel   cpu  checkpoint → one quantized variant, re-loaded and gated on perplexity;
//                        published under models/<name>, or kept under rejected/<name> with the reason
//   evaluateModels  gpu  every model side by side on one worker (that pool runs one activity at a
//                        time, so latencies are not disturbed by a neighbour): ppl, p50/p95, tokens/s,
//                        size, generation samples
//   writeReport     cpu  loss curves + eval table + samples + config → report.html/json/svg
//
// Models are exported once with the KV cache: with an empty past the same graph scores and serves
// like the no-cache one, so the evaluated bytes are the bytes `truthgpt generate` decodes with.

import { beat, whileBeating, yieldThenBeat } from './heartbeat';
import type { LmBatch } from '../engine/data/sampler';
import { lmEvalWindows, lmFeeds, lmPerplexity } from '../engine/eval';
import type { Graph } from '../engine/graph/ir';
import { loadModel, serializeModel } from '../engine/graph/onnx';
import { exportGpt } from '../engine/models/export';
import { gptParams, type GptConfig } from '../engine/models/gpt';
import { memoryConfigOf, memoryGptParams, type MemoryVariant } from '../engine/models/memory-slots';
import { quantizeGraph, QuantRejectedError, validateQuantized, type QuantReport } from '../engine/quant';
import { lossCurvesSvg, renderReportHtml, type ReportLora, type ReportSample, type ReportVariant, type RunReport } from '../engine/report';
import type { ArtifactStore } from '../infra/store';
import { quantConfigOf, type EvalSpec, type QuantSpec } from '../spec/post-training';
import { type CheckpointRef, checkpointModel, checkpointModelVariant } from '../artifacts/checkpoints';
import { type DatasetRef, readTokenizer, ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { postKeys } from '../artifacts/keys';
import { MODEL_FILE, MODEL_FORMAT, type ModelMeta, type ModelRef, QUANT_REPORT_FILE, REPORT_HTML, REPORT_JSON, REPORT_SVG } from '../artifacts/models';
import { evaluateModels, type EvaluateModelsInput } from './evaluate-models';
import { valBatches, type PostTrainingContext, type PostTrainingDeps } from './post-training-context';


export type { PostTrainingDeps } from './post-training-context';
export type { EvaluateModelsInput, EvaluateModelsResult, ModelEvaluation } from './evaluate-models';

export interface ExportInput {
  runId: string;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  eval: EvalSpec;
}

export interface ExportResult extends ModelRef {
  /** Validation perplexity of fp32: the reference every variant's gate compares with. */
  ppl: number;
  tokens: number;
  modelConfig: GptConfig;
  /** The memory-augmented GPT's variant (`model.variant`), exported inside the model; absent for a plain GPT. */
  memory?: MemoryVariant;
}

export interface QuantizeInput extends ExportInput {
  fp32: ExportResult;
  quant: QuantSpec;
}

export interface QuantizeResult extends ModelRef {
  ppl: number;
  /** (ppl − fp32) / fp32. */
  increase: number;
  bound: number;
  rejectedReason?: string;
  report: Pick<QuantReport, 'method' | 'weightBytesBefore' | 'weightBytesAfter' | 'compression'> & { quantized: number; skipped: number };
}

export interface ReportInput {
  runId: string;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  modelConfig: GptConfig;
  trainHistory: RunReport['trainHistory'];
  valHistory: { round: number; step: number; loss: number; perplexity: number }[];
  variants: ReportVariant[];
  samples: ReportSample[];
  evaluation: RunReport['evaluation'];
  config: Record<string, unknown>;
  /** The pipeline's LoRA stage, when the checkpoint is a LoRA-merged model. */
  lora?: ReportLora;
}

export interface ReportResult {
  reportKey: string;
  jsonKey: string;
  svgKey: string;
  sha256: string;
}

export function createPostTrainingActivities(deps: PostTrainingDeps) {
  const p: PostTrainingContext = {
    store: deps.store,
    shards: new ShardCache(4),
    deps,
    session: (spec) => ({ ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.threads }),
  };
  return {
    exportModel: (input: ExportInput) => exportModel(p, input),
    quantizeModel: (input: QuantizeInput) => quantizeModel(p, input),
    evaluateModels: (input: EvaluateModelsInput) => evaluateModels(p, input),
    writeReport: (input: ReportInput) => writeReport(p.store, input),
  };
}

async function commitModel(store: ArtifactStore, prefix: string, bytes: Uint8Array, meta: ModelMeta, extra: Record<string, Uint8Array>): Promise<ModelRef> {
  const m = await store.commit(prefix, { [MODEL_FILE]: Buffer.from(bytes), ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, Buffer.from(v)])) }, { model: meta });
  const f = m.files.find((x) => x.name === MODEL_FILE)!;
  // The object's own key (commits are content-addressed, infra/store-manifest.ts).
  return { name: meta.name, method: meta.method, prefix, key: f.key, sha256: f.sha256, sizeBytes: f.size, published: meta.published };
}

/** The result lands in a second, tiny object so a retry can return it without recomputing. */
async function commitResult<R>(store: ArtifactStore, prefix: string, result: R): Promise<R> {
  await store.putJson(`${prefix}/result.json`, result);
  return result;
}

async function committedResult<T>(store: ArtifactStore, prefix: string): Promise<T | null> {
  if (!(await store.readManifest(prefix))) return null;
  return (await store.exists(`${prefix}/result.json`)) ? store.getJson<T>(`${prefix}/result.json`) : null;
}

const modelMeta = async (p: PostTrainingContext, input: ExportInput, name: string, method: string, modelConfig: GptConfig, memory: MemoryVariant | null, published: boolean): Promise<ModelMeta> => ({
  format: MODEL_FORMAT,
  name,
  method,
  modelConfig,
  ...(memory ? { memory } : {}),
  kvCache: true,
  tokenizer: await readTokenizer(p.store, input.dataset),
  checkpoint: input.checkpoint.prefix,
  published,
});

/** Heartbeats while perplexity runs over the validation split (Temporal throttles the calls). */
/** Between Linears: yield to the event loop (so a heartbeat's answer, a cancel, can arrive), then beat. */
const quantHeartbeat = (name: string) => async (done: number, of: number) => {
  await new Promise((r) => setImmediate(r));
  beat(`${name}: quantized ${done} of ${of} Linears`);
};
const heartbeatPpl = (name: string) => (done: number, of: number) => beat(`${name}: val ppl batch ${done} of ${of}`);

/** fp32 inference model (KV cache) of the checkpoint, published as models/fp32, and its val perplexity. */
async function exportModel(p: PostTrainingContext, input: ExportInput): Promise<ExportResult> {
  const spec = input.eval;
  const prefix = postKeys.model(input.runId, 'fp32');
  const done = await committedResult<ExportResult>(p.store, prefix);
  if (done) return done;
  const { config, weights, memory } = await whileBeating(`fp32: reading ${input.checkpoint.prefix}`, () => checkpointModel(p.store, input.checkpoint.prefix));
  await yieldThenBeat('fp32: exporting');
  const bytes = serializeModel(exportGpt(config, weights, { kvCache: true, memory })).model;
  await yieldThenBeat('fp32: exported');
  const val = await valBatches(p, input.dataset, spec, config);
  const { ppl, tokens } = await lmPerplexity(loadModel(bytes), val.batches, p.session(spec), heartbeatPpl('fp32'));
  const meta = await modelMeta(p, input, 'fp32', 'fp32', config, memory, true);
  // Uploading the model was the longest silence of exportModel (14 s for 57M parameters, measured).
  // Both commits inside one whileBeating: its cancel check comes after the result is written too.
  return whileBeating('fp32: committing', async () => {
    const ref = await commitModel(p.store, prefix, bytes, meta, {});
    return commitResult(p.store, prefix, { ...ref, ppl, tokens, modelConfig: config, ...(memory ? { memory } : {}) });
  });
}

/** One quantized variant, re-loaded from its bytes and held to its perplexity bound. */
async function quantizeModel(p: PostTrainingContext, input: QuantizeInput): Promise<QuantizeResult> {
  const { eval: spec, quant: q } = input;
  for (const prefix of [postKeys.model(input.runId, q.name), postKeys.rejected(input.runId, q.name)]) {
    const done = await committedResult<QuantizeResult>(p.store, prefix);
    if (done) return done;
  }
  const { config, weights, memory } = await whileBeating(`${q.name}: reading ${input.checkpoint.prefix}`, () => checkpointModel(p.store, input.checkpoint.prefix));
  await yieldThenBeat(`${q.name}: exporting fp32`);
  const fp32 = exportGpt(config, weights, { kvCache: true, memory });
  await yieldThenBeat(`${q.name}: exported fp32`);
  const quantized = await failingAs(`quant ${q.name}`, async () => quantizeGraph(fp32, quantConfigOf(q), { calibration: await calibration(p, input, fp32, config), sessionConfig: p.session(spec), onSite: quantHeartbeat(q.name) }));
  await yieldThenBeat(`${q.name}: quantized ${quantized.report.quantized.length} Linears`);
  const bytes = serializeModel(quantized.graph).model;
  await yieldThenBeat(`${q.name}: serialized`);
  const { ppl, increase, rejectedReason } = await gate(p, input, bytes, (await valBatches(p, input.dataset, spec, config)).batches);
  const published = rejectedReason === undefined;
  const r = quantized.report;
  const summary = { method: r.method, weightBytesBefore: r.weightBytesBefore, weightBytesAfter: r.weightBytesAfter, compression: r.compression, quantized: r.quantized.length, skipped: r.skipped.length };
  const prefix = published ? postKeys.model(input.runId, q.name) : postKeys.rejected(input.runId, q.name);
  const reportJson = new TextEncoder().encode(JSON.stringify({ ...r, validation: { ppl, fp32Ppl: input.fp32.ppl, increase, bound: q.maxPplIncrease, rejectedReason: rejectedReason ?? null } }, null, 2));
  const meta = await modelMeta(p, input, q.name, q.method, config, memory, published);
  return whileBeating(`${q.name}: committing`, async () => {
    const ref = await commitModel(p.store, prefix, bytes, meta, { [QUANT_REPORT_FILE]: reportJson });
    return commitResult(p.store, prefix, { ...ref, ppl, increase, bound: q.maxPplIncrease, rejectedReason, report: summary });
  });
}

/** int8-static's calibration feeds: the first train batches, as the fp32 graph takes them. */
async function calibration(p: PostTrainingContext, input: QuantizeInput, fp32: Graph, config: GptConfig) {
  const { eval: spec, quant: q } = input;
  if (q.method !== 'int8-static') return undefined;
  const train = await p.shards.split(p.store, input.dataset, 'train');
  const batches = lmEvalWindows(train, config.block_size, { ...spec, batches: Math.min(spec.calibrationBatches, q.calibration.batches) });
  return [...batches].map((b) => lmFeeds(fp32, b.tokens, b.dims));
}

/** The publish gate: the re-loaded bytes' perplexity against fp32's, refused above the bound. */
async function gate(p: PostTrainingContext, input: QuantizeInput, bytes: Uint8Array, val: Iterable<LmBatch>): Promise<{ ppl: number; increase: number; rejectedReason?: string }> {
  const q = input.quant;
  try {
    const v = await validateQuantized(bytes, input.fp32.ppl, val, { method: q.method, maxPplIncrease: q.maxPplIncrease, sessionConfig: p.session(input.eval), onBatch: heartbeatPpl(q.name) });
    return { ppl: v.ppl, increase: v.increase };
  } catch (err) {
    if (!(err instanceof QuantRejectedError)) throw err;
    return { ppl: err.quantPpl, increase: err.increase, rejectedReason: err.reason };
  }
}

/** The `model.from` of the run's training spec, as the pipeline passes it in the report's config. */
function modelFromOf(config: Record<string, unknown>): string | null {
  const from = ((config.training as { model?: { from?: unknown } } | undefined)?.model ?? {}).from;
  return typeof from === 'string' ? from : null;
}

/** The run report: HTML (with the SVG inline), the same data as JSON, and the SVG alone. */
async function writeReport(store: ArtifactStore, input: ReportInput): Promise<ReportResult> {
  const prefix = postKeys.report(input.runId);
  // A memory GPT's slots and cross-attention count too; its checkpoint records the variant.
  const memory = (await checkpointModelVariant(store, input.checkpoint.prefix)) ?? undefined;
  const params = (memory ? memoryGptParams(memoryConfigOf(input.modelConfig, memory)) : gptParams(input.modelConfig)).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  const tokenizer = await readTokenizer(store, input.dataset);
  const report: RunReport = {
    runId: input.runId,
    createdAt: new Date().toISOString(),
    model: { family: 'gpt', params, config: memory ? { ...input.modelConfig, variant: memory } : input.modelConfig, from: modelFromOf(input.config) },
    dataset: {
      prefix: input.dataset.prefix,
      tokenizer: tokenizer.kind === 'bpe' ? tokenizer.id : tokenizer.kind === 'hf' ? (tokenizer.id ?? 'hf') : (tokenizer.kind ?? 'hf'),
      trainTokens: input.dataset.train.reduce((n, s) => n + s.tokens, 0),
      valTokens: input.dataset.val.reduce((n, s) => n + s.tokens, 0),
      documents: input.dataset.documents,
    },
    checkpoint: input.checkpoint.prefix,
    trainHistory: input.trainHistory.map((p) => ({ round: p.round, loss: p.loss, ...(p.shardLoss ? { shardLoss: p.shardLoss } : {}), ...(p.pseudoGradNorm !== undefined ? { pseudoGradNorm: p.pseudoGradNorm } : {}) })),
    valHistory: input.valHistory,
    evaluation: input.evaluation,
    variants: input.variants,
    samples: input.samples,
    config: input.config,
    ...(input.lora ? { lora: input.lora } : {}),
  };
  const m = await store.commit(prefix, {
    [REPORT_HTML]: Buffer.from(renderReportHtml(report), 'utf8'),
    [REPORT_JSON]: Buffer.from(JSON.stringify(report, null, 2), 'utf8'),
    [REPORT_SVG]: Buffer.from(lossCurvesSvg({ train: report.trainHistory, val: report.valHistory }), 'utf8'),
  });
  const file = (name: string) => m.files.find((f) => f.name === name)!;
  return { reportKey: file(REPORT_HTML).key, jsonKey: file(REPORT_JSON).key, svgKey: file(REPORT_SVG).key, sha256: file(REPORT_HTML).sha256 };
}

export type PostTrainingActivities = ReturnType<typeof createPostTrainingActivities>;
