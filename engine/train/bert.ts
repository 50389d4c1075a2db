// BERT in sharded training: the one-graph step for each task (sequence classification, masked
// LM), its batches as pure functions of (seed, shard, step) like the LM sampler's, and evaluation.
//
//   classification  a labelled shard (token ids + per-document (length, label) pairs, written by
//                   prepareDataset with `labels`) → B documents drawn by a counter-based RNG, each
//                   as [CLS] + its first T-2 tokens + [SEP], padded with [PAD] (attention_mask 0)
//   mlm             contiguous T-token windows of the token stream (engine/data/sampler.ts), masked
//                   by engine/data/masking.ts's mlmMask keyed by the same (seed, shard, step)
//
// Evaluation: classification scores every val document once (cross-entropy, accuracy, macro F1,
// confusion); MLM scores the first `maxBatches` non-overlapping val windows with a fixed mask.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import '../autodiff/rules';
import { mlmMask } from '../data/masking';
import { Counter } from '../data/random';
import { evalLmBatches, sampleLmBatch } from '../data/sampler';
import { EngineError } from '../errors';
import { scoreLogitRows, type ClassificationMetrics } from '../eval/classify';
import { Graph, type TensorData, type Value } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { reshape } from '../graph/ops';
import { bertModelParams, type BertModelConfig } from '../hf/bert';
import { bertClassifierLogits, bertClassifierTrainLoss, BertConfigSchema, bertEncoder, bertMemoryEquivalent, bertMlmLogits, bertMlmTrainLoss, type BertConfig } from '../models/bert';
import type { ParamSpec } from '../models/blocks';
import { writeSafetensors } from '../checkpoint/safetensors';
import { isAdapterParam, loraModel, planLora, type LoraConfigInput, type LoraPlan } from '../lora';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, peftAdapterConfig } from '../lora/peft';
import type { OptimConfig } from '../optim';
import { createSession, StepRunner, type SessionConfig } from '../runtime';
import { checkTrainMemory, compileBuiltStep, type CompiledTrainStep, type TrainMemoryLimits } from './shard';
import { buildTrainStep, type TrainStep } from './step';

export type BertTask = 'classification' | 'mlm';

export interface BertTrainSetup {
  model: BertModelConfig;
  task: BertTask;
  optim: OptimConfig;
  batchSize: number;
  contextLength: number;
  /** Optimizer steps per session.run (engine/train/ksteps.ts); default 1. */
  stepsPerRun?: number;
}

/** The encoder's config without the head. */
export function bertEncoderConfig(cfg: BertModelConfig): BertConfig {
  const { head: _h, ...enc } = cfg;
  return BertConfigSchema.parse(enc);
}

/** Every parameter a BERT model of this config (encoder + its head) has. */
export const bertTrainParams = (cfg: BertModelConfig): ParamSpec[] => bertModelParams(cfg);

/** The number of classes of a classification head. */
export function numLabelsOf(cfg: BertModelConfig): number {
  if (cfg.head.kind !== 'classification') throw new EngineError('config', `model head is ${cfg.head.kind}, not a classification head`);
  return cfg.head.num_labels;
}

export function buildBertTrainStep(s: BertTrainSetup): TrainStep {
  const enc = bertEncoderConfig(s.model);
  if (s.task === 'classification') numLabelsOf(s.model);
  else if (s.model.head.kind !== 'mlm') throw new EngineError('config', `an mlm run needs the mlm head, the model has ${s.model.head.kind}`);
  const loss = s.task === 'classification' ? bertClassifierTrainLoss(enc, s.batchSize, s.contextLength) : bertMlmTrainLoss(enc, s.batchSize, s.contextLength);
  return buildTrainStep({ params: bertTrainParams(s.model), loss }, s.optim);
}

/** The step compiled once per worker (a too-big step fails before anything is allocated). */
export async function compileBertTrainStep(s: BertTrainSetup, sessionConfig: SessionConfig = {}, limits: TrainMemoryLimits = {}): Promise<CompiledTrainStep> {
  checkTrainMemory({ model: bertMemoryEquivalent(bertEncoderConfig(s.model)), optim: s.optim, batchSize: s.batchSize, contextLength: s.contextLength }, limits);
  return compileBuiltStep(`bert ${s.task} training step`, () => buildBertTrainStep(s), s.stepsPerRun ?? 1, sessionConfig);
}

// ---------------------------------------------------------------- batches

/** The special ids a BERT batch is framed with. */
export interface BertTokens {
  cls: number;
  sep: number;
  pad: number;
  /** [MASK], needed by MLM only. */
  mask?: number;
  /** Ids never masked in MLM (end-of-text between documents, CLS, SEP, PAD). */
  specials: number[];
  vocabSize: number;
}

/** One document of a labelled shard: where its ids start, how many (end-of-text excluded), its label. */
export interface LabelledDoc {
  start: number;
  length: number;
  label: number;
}

/** Labelled shards as one id stream, each shard's document starts shifted past the shards before it (one evaluation pass over every document). */
export function concatLabelled(parts: { ids: Uint16Array | Uint32Array; docs: LabelledDoc[] }[]): { ids: Uint32Array; docs: LabelledDoc[] } {
  const ids = new Uint32Array(parts.reduce((n, p) => n + p.ids.length, 0));
  const docs: LabelledDoc[] = [];
  let off = 0;
  for (const p of parts) {
    ids.set(p.ids, off);
    for (const d of p.docs) docs.push({ ...d, start: d.start + off });
    off += p.ids.length;
  }
  return { ids, docs };
}

/**
 * The documents of a labelled shard, labels mapped to the model's classes by `labelMap` (dataset
 * label index → class id).
 */
export function labelledDocs(ids: ArrayLike<number>, docs: Uint32Array, labelMap: number[], where: string): LabelledDoc[] {
  const out: LabelledDoc[] = [];
  let start = 0;
  for (let i = 0; i + 1 < docs.length; i += 2) {
    const [n, label] = [docs[i], docs[i + 1]];
    const cls = labelMap[label];
    if (cls === undefined) throw new EngineError('corrupt', `${where}: document ${i / 2} has label index ${label}, the dataset names ${labelMap.length} labels`);
    out.push({ start, length: Math.max(0, n - 1), label: cls }); // the last id of each document is its end-of-text
    start += n;
  }
  if (start !== ids.length) throw new EngineError('corrupt', `${where}: its documents add up to ${start} ids, the shard has ${ids.length}`);
  return out;
}

/** input_ids, attention_mask, token_type_ids (B, T) of documents framed as [CLS] x [SEP] [PAD]…. */
export function frameDocs(ids: ArrayLike<number>, docs: LabelledDoc[], T: number, tok: BertTokens): Record<string, TensorData> {
  const B = docs.length;
  const inputIds = new BigInt64Array(B * T).fill(BigInt(tok.pad));
  const mask = new BigInt64Array(B * T);
  docs.forEach((d, b) => {
    const n = Math.min(d.length, T - 2);
    const row = b * T;
    inputIds[row] = BigInt(tok.cls);
    for (let t = 0; t < n; t++) inputIds[row + 1 + t] = BigInt(ids[d.start + t]);
    inputIds[row + 1 + n] = BigInt(tok.sep);
    mask.fill(1n, row, row + n + 2);
  });
  return {
    input_ids: { dtype: 'int64', dims: [B, T], data: inputIds },
    attention_mask: { dtype: 'int64', dims: [B, T], data: mask },
    token_type_ids: { dtype: 'int64', dims: [B, T], data: new BigInt64Array(B * T) },
  };
}

export interface BertBatchRequest {
  seed: number;
  shard: number;
  step: number;
  batchSize: number;
  contextLength: number;
}

/** B documents drawn with replacement, keyed by (seed, shard, step), with their labels. */
export function classificationBatch(ids: ArrayLike<number>, docs: LabelledDoc[], req: BertBatchRequest, tok: BertTokens): Record<string, TensorData> {
  if (docs.length === 0) throw new EngineError('config', `shard ${req.shard}: no documents to classify`);
  const rng = new Counter(req.seed, req.shard, req.step, 0x636c73); // 'cls' stream
  const picked = Array.from({ length: req.batchSize }, () => docs[rng.int(docs.length)]);
  return { ...frameDocs(ids, picked, req.contextLength, tok), labels: { dtype: 'int64', dims: [req.batchSize], data: BigInt64Array.from(picked, (d) => BigInt(d.label)) } };
}

function mlmFeeds(tokens: BigInt64Array, B: number, T: number, key: { seed: number; shard: number; step: number }, tok: BertTokens): Record<string, TensorData> {
  if (tok.mask === undefined) throw new EngineError('config', 'the tokenizer has no mask token ([MASK], <mask> or the byte tokenizer\'s <|mask|>); an mlm run needs one');
  const m = mlmMask(tokens, key, { maskId: tok.mask, vocabSize: tok.vocabSize, specialIds: tok.specials });
  return {
    input_ids: { dtype: 'int64', dims: [B, T], data: m.inputIds },
    attention_mask: { dtype: 'int64', dims: [B, T], data: new BigInt64Array(B * T).fill(1n) },
    token_type_ids: { dtype: 'int64', dims: [B, T], data: new BigInt64Array(B * T) },
    labels: { dtype: 'int64', dims: [B, T], data: m.labels },
  };
}

/** B random T-token windows of the stream, masked (15%: 80% [MASK], 10% random, 10% kept), keyed by (seed, shard, step). */
export function mlmBatch(ids: Uint16Array | Uint32Array, req: BertBatchRequest, tok: BertTokens): Record<string, TensorData> {
  const b = sampleLmBatch(ids, req);
  return mlmFeeds(b.tokens, req.batchSize, req.contextLength, req, tok);
}

// ---------------------------------------------------------------- evaluation

export interface BertClassificationEval extends ClassificationMetrics {
  /** Mean cross-entropy over the documents. */
  loss: number;
}

export interface BertMlmEval {
  /** Mean cross-entropy over the masked positions. */
  loss: number;
  perplexity: number;
  /** Masked positions scored. */
  tokens: number;
  batches: number;
}

/** Sessions by (config, task, B, T), weights as inputs so one session serves every checkpoint. */
export class BertEvaluator {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  private readonly enc: BertConfig;

  constructor(
    private readonly cfg: BertModelConfig,
    private readonly sessionConfig: SessionConfig = {},
  ) {
    this.enc = bertEncoderConfig(cfg);
  }

  private session(task: BertTask, B: number, T: number): Promise<ort.InferenceSession> {
    const key = `${task}:${B}x${T}`;
    let s = this.sessions.get(key);
    if (!s) {
      const g = new Graph(`eval_bert_${task}`);
      const weights = new Map<string, Value>(bertTrainParams(this.cfg).map((p) => [p.name, g.input(p.name, 'float32', p.shape)]));
      const p = (n: string) => weights.get(n)!;
      const inputs = { inputIds: g.input('input_ids', 'int64', [B, T]), attentionMask: g.input('attention_mask', 'int64', [B, T]), tokenTypeIds: g.input('token_type_ids', 'int64', [B, T]) };
      if (task === 'classification') g.output(bertClassifierLogits(this.enc, inputs, p), 'logits');
      else {
        const logits = bertMlmLogits(this.enc, bertEncoder(this.enc, inputs, p), p);
        const labels = g.input('labels', 'int64', [B, T]);
        g.output(g.op('SoftmaxCrossEntropyLoss', [logits, reshape(labels, [-1])], { reduction: 'sum', ignore_index: -100 }, { outputs: 1 })[0], 'loss_sum');
      }
      s = createSession(serializeModel(g).model, { graphOptimizationLevel: 'all', ...this.sessionConfig });
      this.sessions.set(key, s);
    }
    return s;
  }

  private weightFeeds(weights: Map<string, Float32Array>): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = {};
    for (const s of bertTrainParams(this.cfg)) {
      const w = weights.get(s.name);
      if (!w) throw new EngineError('config', `evaluate: parameter "${s.name}" is missing from the checkpoint`);
      feeds[s.name] = new Tensor('float32', w, s.shape);
    }
    return feeds;
  }

  /** The classifier's logits (one row of num_labels per document), in batches of `batchSize`. */
  async logits(weights: Map<string, Float32Array>, ids: ArrayLike<number>, docs: LabelledDoc[], o: { batchSize: number; contextLength: number }, tok: BertTokens): Promise<Float32Array[]> {
    const C = numLabelsOf(this.cfg);
    const feedsW = this.weightFeeds(weights);
    const rows: Float32Array[] = [];
    for (let i = 0; i < docs.length; i += o.batchSize) {
      const part = docs.slice(i, i + o.batchSize);
      const framed = frameDocs(ids, part, o.contextLength, tok);
      const feeds = { ...feedsW, ...Object.fromEntries(Object.entries(framed).map(([k, t]) => [k, new Tensor('int64', t.data as BigInt64Array, t.dims)])) };
      const out = await (await this.session('classification', part.length, o.contextLength)).run(feeds, ['logits']);
      const data = out.logits.data as Float32Array;
      for (let b = 0; b < part.length; b++) rows.push(data.slice(b * C, (b + 1) * C));
    }
    return rows;
  }

  /** Every document once, in batches of `batchSize`: loss, accuracy, macro F1, confusion. */
  async classify(weights: Map<string, Float32Array>, ids: ArrayLike<number>, docs: LabelledDoc[], o: { batchSize: number; contextLength: number }, tok: BertTokens): Promise<BertClassificationEval> {
    if (docs.length === 0) throw new EngineError('config', 'the validation split has no documents (raise dataset.valFraction)');
    const C = numLabelsOf(this.cfg);
    const rows = await this.logits(weights, ids, docs, o, tok);
    return scoreLogitRows(rows, docs.map((d) => d.label), C);
  }

  /** The first `maxBatches` non-overlapping T-token windows, masked with the key (seed, 0xffff, batch index). */
  async mlm(weights: Map<string, Float32Array>, ids: Uint16Array | Uint32Array, o: { batchSize: number; contextLength: number; maxBatches?: number; seed: number }, tok: BertTokens): Promise<BertMlmEval> {
    const T = o.contextLength;
    if (ids.length < T + 1) throw new EngineError('config', `validation split has ${ids.length} tokens, need at least contextLength + 1 = ${T + 1}`);
    const feedsW = this.weightFeeds(weights);
    let sum = 0;
    let tokens = 0;
    let batches = 0;
    for (const b of evalLmBatches(ids, o.batchSize, T)) {
      if (o.maxBatches !== undefined && batches >= o.maxBatches) break;
      const [B] = b.dims;
      const f = mlmFeeds(b.tokens, B, T, { seed: o.seed, shard: 0xffff, step: batches }, tok);
      const masked = (f.labels.data as BigInt64Array).reduce((n, l) => (l >= 0n ? n + 1 : n), 0);
      batches++;
      if (masked === 0) continue;
      const feeds = { ...feedsW, ...Object.fromEntries(Object.entries(f).map(([k, t]) => [k, new Tensor('int64', t.data as BigInt64Array, t.dims)])) };
      const out = await (await this.session('mlm', B, T)).run(feeds, ['loss_sum']);
      sum += (out.loss_sum.data as Float32Array)[0];
      tokens += masked;
    }
    if (tokens === 0) throw new EngineError('config', 'mlm evaluation masked no position (a validation split of special tokens only?)');
    const loss = sum / tokens;
    return { loss, perplexity: Math.exp(loss), tokens, batches };
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

/**
 * Dataset label index → the model's class id: by name when the head's id2label names every
 * dataset label, else by the sorted label names (so "ham" < "spam" is 0, 1).
 */
export function labelMapOf(cfg: BertModelConfig, labelNames: string[]): number[] {
  const C = numLabelsOf(cfg);
  const id2label = cfg.head.kind === 'classification' ? cfg.head.id2label : undefined;
  if (id2label) {
    const byName = new Map(Object.entries(id2label).map(([id, name]) => [name, Number(id)]));
    if (labelNames.every((n) => byName.has(n))) return labelNames.map((n) => byName.get(n)!);
  }
  if (labelNames.length > C) throw new EngineError('config', `the dataset has ${labelNames.length} labels (${labelNames.join(', ')}), the model's head num_labels is ${C}`);
  const sorted = [...labelNames].sort();
  return labelNames.map((n) => sorted.indexOf(n));
}

/** The framing ids from a tokenizer's specials: BERT's [CLS]/[SEP]/[PAD]/[MASK], else end-of-text (byte, BPE tokenizers). */
export function bertTokensOf(t: { eot: number; vocabSize: number; specials: Record<string, number> }): BertTokens {
  const s = t.specials;
  const cls = s.cls ?? t.eot;
  const sep = s.sep ?? t.eot;
  const pad = s.pad ?? t.eot;
  return { cls, sep, pad, ...(s.mask !== undefined ? { mask: s.mask } : {}), specials: [...new Set([t.eot, cls, sep, pad])], vocabSize: t.vocabSize };
}

// ---------------------------------------------------------------- LoRA (sequence classification)

/**
 * LoRA on a BERT classifier as PEFT's SEQ_CLS does it: adapters on the target linear layers (BERT's
 * HF names: query, key, value, dense; `all-linear`), the classifier head trained in full
 * (`modules_to_save`), everything else frozen.
 */
export const isBertLoraTrainable = (name: string): boolean => isAdapterParam(name) || name.startsWith('classifier.');

export function bertLoraPlan(s: BertTrainSetup, lora: LoraConfigInput): LoraPlan {
  const enc = bertEncoderConfig(s.model);
  return planLora({ params: bertTrainParams(s.model), loss: bertClassifierTrainLoss(enc, s.batchSize, s.contextLength) }, { ...lora, family: 'bert' });
}

/**
 * The LoRA step compiled once: `frozen` holds the base's weights (the classifier head excepted),
 * fed unchanged; a runner's params are the adapters and the head.
 */
export async function compileBertLoraStep(s: BertTrainSetup, plan: LoraPlan, frozen: Map<string, Float32Array>, sessionConfig: SessionConfig = {}, limits: TrainMemoryLimits = {}): Promise<CompiledTrainStep> {
  if (s.task !== 'classification') throw new EngineError('config', `lora: a ${s.task} BERT run; LoRA tunes BERT classifiers so far`);
  checkTrainMemory({ model: bertMemoryEquivalent(bertEncoderConfig(s.model)), optim: s.optim, batchSize: s.batchSize, contextLength: s.contextLength }, limits);
  const enc = bertEncoderConfig(s.model);
  let step: TrainStep;
  try {
    step = buildTrainStep(loraModel({ params: bertTrainParams(s.model), loss: bertClassifierTrainLoss(enc, s.batchSize, s.contextLength) }, plan), s.optim, { trainable: isBertLoraTrainable });
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw new EngineError('config', `bert lora step: ${(err as Error).message}`);
  }
  const fixed: Record<string, Float32Array> = {};
  for (const p of step.frozen) {
    const w = frozen.get(p.name);
    if (!w) throw new EngineError('config', `bert lora step: base weight "${p.name}" is missing`);
    fixed[p.name] = w;
  }
  const session = await createSession(serializeModel(step.graph).model, { graphOptimizationLevel: 'all', ...sessionConfig });
  return { step, session, runner: (init) => new StepRunner(session, { params: init.params, state: init.state, frozen: fixed, step: init.step }) };
}

/**
 * PEFT files of a SEQ_CLS adapter: the adapters under `base_model.model.bert.<module>` and the
 * trained head under `base_model.model.classifier.*` (the keys PEFT's own save_pretrained writes
 * for a SEQ_CLS adapter, whose `modules_to_save` is ['classifier']), so
 * AutoPeftModelForSequenceClassification loads them beside the exported base.
 */
export function bertSeqClsAdapterFiles(plan: LoraPlan, trained: Map<string, Float32Array>, baseModelNameOrPath: string | null): Map<string, Buffer> {
  const tensors = new Map<string, TensorData>();
  for (const s of plan.adapterParams) {
    const data = trained.get(s.name);
    if (!data) throw new EngineError('config', `adapter tensor ${s.name} is missing`);
    tensors.set(`base_model.model.bert.${s.name}`, { dtype: 'float32', dims: s.shape, data });
  }
  for (const name of ['classifier.weight', 'classifier.bias']) {
    const data = trained.get(name);
    if (!data) throw new EngineError('config', `head tensor ${name} is missing`);
    const dims = name.endsWith('weight') ? [data.length / plan.modules[0].inFeatures, plan.modules[0].inFeatures] : [data.length];
    tensors.set(`base_model.model.${name}`, { dtype: 'float32', dims, data });
  }
  const config = { ...peftAdapterConfig(plan, { modulePrefix: 'bert.', taskType: 'SEQ_CLS', fanInFanOut: false, baseModelNameOrPath }), modules_to_save: ['classifier'] };
  return new Map([
    [ADAPTER_WEIGHTS_FILE, writeSafetensors(tensors, { format: 'pt' })],
    [ADAPTER_CONFIG_FILE, Buffer.from(JSON.stringify(config, null, 2) + '\n')],
  ]);
}
