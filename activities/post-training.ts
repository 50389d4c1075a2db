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

import { Context } from '@temporalio/activity';
import os from 'node:os';
import { evalLmBatches, type LmBatch } from '../engine/data/sampler';
import { loadTokenizer } from '../engine/data/tokenizer';
import { Decoder, lmFeeds, lmPerplexity, measureSpeed } from '../engine/eval';
import { loadModel, serializeModel } from '../engine/graph/onnx';
import { decoderInfo, exportGpt } from '../engine/models/export';
import { gptParams, type GptConfig } from '../engine/models/gpt';
import { quantizeGraph, QuantRejectedError, validateQuantized, type QuantReport } from '../engine/quant';
import { lossCurvesSvg, renderReportHtml, type ReportLora, type ReportSample, type ReportVariant, type RunReport } from '../engine/report';
import { createSession, type SessionConfig } from '../engine/runtime';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { EvalSpecSchema, QuantSpecSchema, type EvalSpec, type QuantSpec } from '../spec/post-training';
import { formatIssues } from '../spec/training';
import { type CheckpointRef, checkpointWeights, translateReadError } from '../artifacts/checkpoints';
import { type DatasetRef, readTokenizer, ShardCache } from '../artifacts/datasets';
import { postKeys } from '../artifacts/keys';
import { MODEL_FILE, MODEL_FORMAT, type ModelMeta, type ModelRef, QUANT_REPORT_FILE, REPORT_HTML, REPORT_JSON, REPORT_SVG } from '../artifacts/models';


export interface PostTrainingDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
}

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

export interface EvaluateModelsInput {
  runId: string;
  dataset: DatasetRef;
  modelConfig: GptConfig;
  models: ModelRef[];
  eval: EvalSpec;
}

export interface ModelEvaluation {
  name: string;
  ppl: number;
  tokens: number;
  p50Ms: number;
  p95Ms: number;
  tokensPerSec: number;
  peakRssBytes: number;
  sizeBytes: number;
  samples: { prompt: string; text: string }[];
}

export interface EvaluateModelsResult {
  evaluations: ModelEvaluation[];
  /** Where the timings were taken, for the report. */
  device: string;
  /** The sampling settings in words. */
  sampling: string;
  batches: number;
  batchSize: number;
  contextLength: number;
  tokens: number;
}

export interface ReportInput {
  runId: string;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  modelConfig: GptConfig;
  trainHistory: { round: number; loss: number }[];
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

function checkEval(spec: EvalSpec): EvalSpec {
  const r = EvalSpecSchema.safeParse(spec);
  if (!r.success) throw failure('InvalidConfig', `invalid eval spec: ${formatIssues(r.error, 'eval')}`);
  return r.data;
}

function checkQuant(spec: QuantSpec): QuantSpec {
  const r = QuantSpecSchema.safeParse(spec);
  if (!r.success) throw failure('InvalidConfig', `invalid quant spec: ${formatIssues(r.error, 'quant')}`);
  return r.data;
}

/** Sampling settings in words, for the report. */
const samplingWords = (s: EvalSpec['samples']) =>
  `${s.temperature === 0 ? 'greedy' : `temperature ${s.temperature}${s.topK ? `, top-k ${s.topK}` : ''}${s.topP < 1 ? `, top-p ${s.topP}` : ''}, seed ${s.seed}`}, ${s.maxNewTokens} new tokens`;

export function createPostTrainingActivities(deps: PostTrainingDeps) {
  const { store } = deps;
  const shards = new ShardCache(4);
  const session = (spec: EvalSpec): SessionConfig => ({ ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: spec.threads });

  /** The first `eval.batches` validation batches: every variant and the gate score exactly these. */
  async function valBatches(ds: DatasetRef, spec: EvalSpec, cfg: GptConfig): Promise<LmBatch[]> {
    const T = spec.contextLength ?? cfg.block_size;
    if (T > cfg.block_size) throw failure('InvalidConfig', `eval.contextLength: ${T} exceeds the model's block_size ${cfg.block_size}`);
    const ids = await shards.split(store, ds, 'val');
    const out = [...evalLmBatches(ids, spec.batchSize, T)].slice(0, spec.batches);
    if (out.length === 0) throw failure('InvalidConfig', `eval.contextLength: the validation split of ${ds.prefix} has ${ids.length} tokens, too few for one ${T}-token window`);
    return out;
  }

  async function commitModel(prefix: string, bytes: Uint8Array, meta: ModelMeta, extra: Record<string, Uint8Array>, result: (ref: ModelRef) => unknown): Promise<ModelRef> {
    const m = await store.commit(prefix, { [MODEL_FILE]: Buffer.from(bytes), ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, Buffer.from(v)])) }, { model: meta });
    const f = m.files.find((x) => x.name === MODEL_FILE)!;
    const ref: ModelRef = { name: meta.name, method: meta.method, prefix, key: `${prefix}/${MODEL_FILE}`, sha256: f.sha256, sizeBytes: f.size, published: meta.published };
    // The result lands in a second, tiny object so a retry can return it without recomputing.
    await store.putJson(`${prefix}/result.json`, result(ref));
    return ref;
  }

  async function committedResult<T>(prefix: string): Promise<T | null> {
    if (!(await store.readManifest(prefix))) return null;
    return (await store.exists(`${prefix}/result.json`)) ? store.getJson<T>(`${prefix}/result.json`) : null;
  }

  return {
    /** fp32 inference model (KV cache) of the checkpoint, published as models/fp32, and its val perplexity. */
    async exportModel(input: ExportInput): Promise<ExportResult> {
      const spec = checkEval(input.eval);
      const prefix = postKeys.model(input.runId, 'fp32');
      const done = await committedResult<ExportResult>(prefix);
      if (done) return done;
      const { config, weights } = await checkpointWeights(store, input.checkpoint.prefix);
      const graph = exportGpt(config, weights, { kvCache: true });
      const bytes = serializeModel(graph).model;
      const val = await valBatches(input.dataset, spec, config);
      const { ppl, tokens } = await lmPerplexity(loadModel(bytes), val, session(spec));
      const meta: ModelMeta = { format: MODEL_FORMAT, name: 'fp32', method: 'fp32', modelConfig: config, kvCache: true, tokenizer: await readTokenizer(store, input.dataset), checkpoint: input.checkpoint.prefix, published: true };
      let result: ExportResult | undefined;
      await commitModel(prefix, bytes, meta, {}, (ref) => (result = { ...ref, ppl, tokens, modelConfig: config }));
      return result!;
    },

    /** One quantized variant, re-loaded from its bytes and held to its perplexity bound. */
    async quantizeModel(input: QuantizeInput): Promise<QuantizeResult> {
      const spec = checkEval(input.eval);
      const q = checkQuant(input.quant);
      for (const prefix of [postKeys.model(input.runId, q.name), postKeys.rejected(input.runId, q.name)]) {
        const done = await committedResult<QuantizeResult>(prefix);
        if (done) return done;
      }
      const { config, weights } = await checkpointWeights(store, input.checkpoint.prefix);
      const fp32 = exportGpt(config, weights, { kvCache: true });
      let calibration;
      if (q.method === 'int8-static') {
        const train = await shards.split(store, input.dataset, 'train');
        const T = spec.contextLength ?? config.block_size;
        calibration = [...evalLmBatches(train, spec.batchSize, T)].slice(0, Math.min(spec.calibrationBatches, q.calibration.batches)).map((b) => lmFeeds(fp32, b.tokens, b.dims));
      }
      let quantized;
      try {
        quantized = await quantizeGraph(fp32, q, { calibration, sessionConfig: session(spec) });
      } catch (err) {
        if (err instanceof Error && /^(quant config|calibration):/.test(err.message)) throw failure('InvalidConfig', `quant ${q.name}: ${err.message}`);
        throw err;
      }
      Context.current().heartbeat(`${q.name}: quantized ${quantized.report.quantized.length} Linears`);
      const bytes = serializeModel(quantized.graph).model;
      const val = await valBatches(input.dataset, spec, config);
      let ppl: number;
      let increase: number;
      let rejectedReason: string | undefined;
      try {
        const v = await validateQuantized(bytes, input.fp32.ppl, val, { method: q.method, maxPplIncrease: q.maxPplIncrease, sessionConfig: session(spec) });
        ({ ppl, increase } = v);
      } catch (err) {
        if (!(err instanceof QuantRejectedError)) throw err;
        ({ quantPpl: ppl, increase } = err);
        rejectedReason = err.message.replace(/^\S+ model rejected: /, '');
      }
      const published = rejectedReason === undefined;
      const r = quantized.report;
      const summary = { method: r.method, weightBytesBefore: r.weightBytesBefore, weightBytesAfter: r.weightBytesAfter, compression: r.compression, quantized: r.quantized.length, skipped: r.skipped.length };
      const meta: ModelMeta = { format: MODEL_FORMAT, name: q.name, method: q.method, modelConfig: config, kvCache: true, tokenizer: await readTokenizer(store, input.dataset), checkpoint: input.checkpoint.prefix, published };
      const prefix = published ? postKeys.model(input.runId, q.name) : postKeys.rejected(input.runId, q.name);
      const reportJson = new TextEncoder().encode(JSON.stringify({ ...r, validation: { ppl, fp32Ppl: input.fp32.ppl, increase, bound: q.maxPplIncrease, rejectedReason: rejectedReason ?? null } }, null, 2));
      let result: QuantizeResult | undefined;
      await commitModel(prefix, bytes, meta, { [QUANT_REPORT_FILE]: reportJson }, (ref) => (result = { ...ref, ppl, increase, bound: q.maxPplIncrease, rejectedReason, report: summary }));
      return result!;
    },

    /** Every model on this one worker, in turn: perplexity, speed, size, samples. */
    async evaluateModels(input: EvaluateModelsInput): Promise<EvaluateModelsResult> {
      const spec = checkEval(input.eval);
      const ctx = Context.current();
      const cfg = input.modelConfig;
      const val = await valBatches(input.dataset, spec, cfg);
      const tok = loadTokenizer(await readTokenizer(store, input.dataset));
      const evaluations: ModelEvaluation[] = [];
      for (const m of input.models) {
        let bytes: Buffer;
        try {
          bytes = await store.getVerified(m.prefix, MODEL_FILE);
        } catch (err) {
          throw translateReadError(err, `model ${m.prefix}`);
        }
        const graph = loadModel(bytes);
        const { ppl, tokens } = await lmPerplexity(graph, val, session(spec));
        ctx.heartbeat(`${m.name}: ppl ${ppl}`);
        const s = await createSession(bytes, { graphOptimizationLevel: 'all', ...session(spec) });
        let speed;
        try {
          // Full batches only: a short last batch would flatter tokens/s.
          const full = val.filter((b) => b.dims[0] === val[0].dims[0]);
          speed = await measureSpeed(s, full.map((b) => lmFeeds(graph, b.tokens, b.dims)), val[0].dims[0] * val[0].dims[1], { runs: spec.speedRuns, warmup: spec.warmup });
        } finally {
          await s.release();
        }
        ctx.heartbeat(`${m.name}: p50 ${speed.p50Ms} ms`);
        const samples: ModelEvaluation['samples'] = [];
        const d = await Decoder.create(bytes, decoderInfo(cfg, true), session(spec));
        try {
          for (const prompt of spec.samples.prompts) {
            const ids = tok.encode(prompt);
            const room = cfg.block_size - ids.length + 1;
            if (room < 1) throw failure('InvalidConfig', `eval.samples.prompts: "${prompt.slice(0, 40)}" is ${ids.length} tokens, longer than the model's block_size ${cfg.block_size}`);
            const { maxNewTokens, temperature, topK, topP, seed } = spec.samples;
            const out = await d.generate(ids, { maxNewTokens: Math.min(maxNewTokens, room), temperature, topK, topP, seed, stopToken: tok.eot });
            samples.push({ prompt, text: tok.decode(out.filter((t) => t !== tok.eot)) });
          }
        } finally {
          await d.release();
        }
        evaluations.push({ name: m.name, ppl, tokens, p50Ms: speed.p50Ms, p95Ms: speed.p95Ms, tokensPerSec: speed.tokensPerSec, peakRssBytes: speed.peakRssBytes, sizeBytes: bytes.length, samples });
      }
      const cpu = os.cpus()[0]?.model?.trim() ?? 'unknown CPU';
      return {
        evaluations,
        device: deps.ep === 'cuda' ? `CUDA device ${deps.deviceId}` : `${cpu}, ${spec.threads} ORT thread${spec.threads > 1 ? 's' : ''}`,
        sampling: samplingWords(spec.samples),
        batches: val.length,
        batchSize: val[0].dims[0],
        contextLength: val[0].dims[1],
        tokens: val.reduce((n, b) => n + b.dims[0] * b.dims[1], 0),
      };
    },

    /** The run report: HTML (with the SVG inline), the same data as JSON, and the SVG alone. */
    async writeReport(input: ReportInput): Promise<ReportResult> {
      const prefix = postKeys.report(input.runId);
      const params = gptParams(input.modelConfig).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
      const tokenizer = await readTokenizer(store, input.dataset);
      const report: RunReport = {
        runId: input.runId,
        createdAt: new Date().toISOString(),
        model: { family: 'gpt', params, config: input.modelConfig },
        dataset: {
          prefix: input.dataset.prefix,
          tokenizer: tokenizer.kind === 'bpe' ? tokenizer.id : tokenizer.kind,
          trainTokens: input.dataset.train.reduce((n, s) => n + s.tokens, 0),
          valTokens: input.dataset.val.reduce((n, s) => n + s.tokens, 0),
          documents: input.dataset.documents,
        },
        checkpoint: input.checkpoint.prefix,
        trainHistory: input.trainHistory.map((p) => ({ round: p.round, loss: p.loss })),
        valHistory: input.valHistory,
        evaluation: input.evaluation,
        variants: input.variants,
        samples: input.samples,
        config: input.config,
        ...(input.lora ? { lora: input.lora } : {}),
      };
      const html = renderReportHtml(report);
      const m = await store.commit(prefix, {
        [REPORT_HTML]: Buffer.from(html, 'utf8'),
        [REPORT_JSON]: Buffer.from(JSON.stringify(report, null, 2), 'utf8'),
        [REPORT_SVG]: Buffer.from(lossCurvesSvg({ train: report.trainHistory, val: report.valHistory }), 'utf8'),
      });
      return { reportKey: `${prefix}/${REPORT_HTML}`, jsonKey: `${prefix}/${REPORT_JSON}`, svgKey: `${prefix}/${REPORT_SVG}`, sha256: m.files.find((f) => f.name === REPORT_HTML)!.sha256 };
    },
  };
}

export type PostTrainingActivities = ReturnType<typeof createPostTrainingActivities>;
