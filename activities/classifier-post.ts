// Post-training of a classifier (a BERT `classification` run, or a GPT domain-head one): one
// activity per quantized variant.
//
//   quantizeClassifier  cpu  checkpoint → fp32 inference ONNX (exportBert, classifier head; or
//                            exportDomainGpt, the GPT's score head on each document's last token) →
//                            int8-dynamic → both scored on every validation document → published
//                            under runs/<id>/models/<name> when the accuracy drop is within
//                            maxAccuracyDrop, else kept under runs/<id>/rejected/<name> with the reason
//
// The result is recorded in the commit's manifest, so a retry returns it.

import { Tensor } from 'onnxruntime-node';
import type { BertModelConfig } from '../engine/hf/bert';
import { serializeModel } from '../engine/graph/onnx';
import { exportBert } from '../engine/models/export-bert-t5';
import { exportDomainGpt } from '../engine/models/export-domain';
import type { Graph } from '../engine/graph/ir';
import { frameGptDocs, domainLabelMap } from '../engine/train/domain';
import type { LabelledDoc } from '../engine/train/bert';
import { quantizeGraph } from '../engine/quant';
import { AccuracyRejectedError, gateClassifier, type ClassifierBatchFeeds } from '../engine/quant/classifier-gate';
import { bertEncoderConfig, bertTokensOf, frameDocs, labelledDocs, labelMapOf, numLabelsOf } from '../engine/train/bert';
import type { ArtifactStore } from '../infra/store';
import { committedVariant } from './post-training-context';
import { quantConfigOf, type QuantSpec } from '../spec/post-training';
import type { TrainingSpec } from '../spec/training';
import { failure } from '../spec/errors';
import { checkpointWeightsAnyFamily, type CheckpointRef } from '../artifacts/checkpoints';
import { readTokenizer, ShardCache, type DatasetRef } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { postKeys } from '../artifacts/keys';
import { MODEL_FILE } from '../artifacts/models';
import { loadStoredTokenizer } from '../artifacts/tokenizers';
import { whileBeating, yieldThenBeat } from './heartbeat';

export interface QuantizeClassifierInput {
  runId: string;
  spec: TrainingSpec;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  quant: QuantSpec;
}

export interface ClassifierVariant {
  name: string;
  method: string;
  /** Validation documents scored (every one). */
  examples: number;
  fp32Accuracy: number;
  fp32MacroF1: number | null;
  accuracy: number;
  /** null when refused (the gate stops at accuracy). */
  macroF1: number | null;
  /** fp32 accuracy − this variant's (absolute). */
  drop: number;
  maxAccuracyDrop: number;
  /** Documents whose predicted class differs from fp32's (null when refused). */
  flips: number | null;
  published: boolean;
  rejectedReason: string | null;
  /** Where the ONNX model is: runs/<id>/models/<name> or runs/<id>/rejected/<name>. */
  prefix: string;
  bytes: number;
  fp32Bytes: number;
}

/** The default bound of a classifier variant: one point of accuracy. */
export const DEFAULT_MAX_ACCURACY_DROP = 0.01;

export function createClassifierPostActivities(deps: { store: ArtifactStore }) {
  const shards = new ShardCache();
  return {
    quantizeClassifier: (input: QuantizeClassifierInput) => quantizeClassifier(deps.store, shards, input),
  };
}

// The whole attempt heartbeats every second while its event loop turns (its proxy has a 60 s
// heartbeat timeout), and beats between the synchronous stretches: export, serialize, each Linear.
function quantizeClassifier(store: ArtifactStore, shards: ShardCache, input: QuantizeClassifierInput): Promise<ClassifierVariant> {
  return whileBeating(`quantizeClassifier ${input.quant.name}`, () => quantizeAndGate(store, shards, input));
}

async function quantizeAndGate(store: ArtifactStore, shards: ShardCache, input: QuantizeClassifierInput): Promise<ClassifierVariant> {
  const { runId, quant, spec } = input;
  const who = `quantizeClassifier ${quant.name}`;
  const done = await committedVariant<ClassifierVariant>(store, runId, quant.name, 'classifier');
  if (done) return done;
  const m = spec.model;
  const domain = m.family === 'gpt' && m.task === 'classification' ? m : null;
  if (!domain && (m.family !== 'bert' || m.task !== 'classification')) throw failure('InvalidConfig', `${who}: the run trains a ${m.family} ${m.task} model, not a classifier`);
  const ck = await checkpointWeightsAnyFamily(store, input.checkpoint.prefix);
  const cfg = ck.config as BertModelConfig;
  const dataset = input.dataset;
  if (!dataset.labelNames) throw failure('InvalidInput', `${who}: dataset ${dataset.prefix} has no document labels`);
  const tokenizer = await loadStoredTokenizer(store, await readTokenizer(store, dataset));
  const T = spec.contextLength;
  const bound = quant.maxAccuracyDrop ?? DEFAULT_MAX_ACCURACY_DROP;
  return failingAs(who, async () => {
    // Every val document, framed as the family's training framed it (BERT: [CLS] … [SEP] [PAD];
    // a GPT domain head: padded on the right, read at its last real token).
    const map = domain ? domainLabelMap(domain.variant.n_classes, dataset.labelNames!) : labelMapOf(cfg, dataset.labelNames!);
    const frame = (ids: ArrayLike<number>, part: LabelledDoc[]) => {
      if (!domain) return frameDocs(ids, part, T, bertTokensOf(tokenizer));
      const f = frameGptDocs(ids, part, T, tokenizer.eot);
      const last = BigInt64Array.from(part, (_, b) => (f.pool.data as BigInt64Array)[b] - BigInt(b * T));
      return { input_ids: f.tokens, last_token: { dtype: 'int64' as const, dims: [part.length], data: last } };
    };
    const batches: ClassifierBatchFeeds[] = [];
    for (const s of dataset.val.filter((v) => v.tokens > 0)) {
      const { ids, docs } = await shards.labelled(store, dataset, s);
      const all = labelledDocs(ids, docs, map, `${dataset.prefix}/${s.file}`);
      for (let i = 0; i < all.length; i += spec.batchSize) {
        const part = all.slice(i, i + spec.batchSize);
        const f = frame(ids, part);
        batches.push({ feeds: Object.fromEntries(Object.entries(f).map(([k, v]) => [k, new Tensor('int64', v.data as BigInt64Array, v.dims)])), labels: part.map((d) => d.label) });
      }
    }
    await yieldThenBeat(`${who}: exporting fp32`);
    const graph: Graph = domain
      ? exportDomainGpt(domain.config, domain.variant, ck.weights, `gpt_domain_head_${quant.name}`)
      : exportBert(bertEncoderConfig(cfg), ck.weights, { head: 'classifier', graphName: `bert_classifier_${quant.name}` });
    await yieldThenBeat(`${who}: exported fp32`);
    const fp32 = serializeModel(graph).model;
    await yieldThenBeat(`${who}: serialized fp32`);
    const onSite = (done: number, of: number) => yieldThenBeat(`${who}: quantized ${done} of ${of} Linears`);
    const quantized = serializeModel((await quantizeGraph(graph, quantConfigOf(quant), { onSite })).graph).model;
    await yieldThenBeat(`${who}: gating on accuracy`);
    const base = { name: quant.name, method: quant.method, maxAccuracyDrop: bound, bytes: quantized.byteLength, fp32Bytes: fp32.byteLength };
    let result: ClassifierVariant;
    try {
      const g = await gateClassifier(fp32, quantized, batches, { method: quant.method, numLabels: domain ? domain.variant.n_classes : numLabelsOf(cfg), maxAccuracyDrop: bound, sessionConfig: { intraOpThreads: spec.threads } });
      result = { ...base, examples: g.fp32.count, fp32Accuracy: g.fp32.accuracy, fp32MacroF1: g.fp32.macroF1, accuracy: g.quant.accuracy, macroF1: g.quant.macroF1, drop: g.drop, flips: g.flips, published: true, rejectedReason: null, prefix: postKeys.model(runId, quant.name) };
    } catch (err) {
      if (!(err instanceof AccuracyRejectedError)) throw err;
      result = { ...base, examples: err.examples, fp32Accuracy: err.fp32Accuracy, fp32MacroF1: null, accuracy: err.quantAccuracy, macroF1: null, drop: err.drop, flips: null, published: false, rejectedReason: err.reason, prefix: postKeys.rejected(runId, quant.name) };
    }
    await store.commit(result.prefix, { [MODEL_FILE]: Buffer.from(quantized) }, { classifier: result });
    return result;
  });
}

export type ClassifierPostActivities = ReturnType<typeof createClassifierPostActivities>;
