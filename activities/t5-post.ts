// Post-training of a T5 seq2seq model (a `seq2seq` run): one activity per quantized variant.
//
//   quantizeT5  cpu  checkpoint → fp32 encoder + decoder-step (KV cache) ONNX pair, as `truthgpt
//                    generate` serves it → int8-dynamic → greedy answers of both scored against the
//                    targets (exact match) on the run's exact-match examples, and target perplexity of
//                    the cache-free graph on every validation example → published under
//                    runs/<id>/models/<name> (encoder.onnx, decoder.onnx) when the exact-match drop is
//                    within maxExactMatchDrop, else kept under runs/<id>/rejected/<name> with the reason
//
// The result is recorded in the commit's manifest, so a retry returns it.

import type { Seq2seqPair } from '../engine/data/t5-span';
import type { T5Config } from '../engine/models/t5';
import { ExactMatchRejectedError, gateSeq2seq, quantizeT5 } from '../engine/quant/seq2seq-gate';
import type { ArtifactStore } from '../infra/store';
import { committedVariant } from './post-training-context';
import { quantConfigOf, type QuantSpec } from '../spec/post-training';
import type { TrainingSpec } from '../spec/training';
import { failure } from '../spec/errors';
import { checkpointWeightsAnyFamily, type CheckpointRef } from '../artifacts/checkpoints';
import { ShardCache, type DatasetRef } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { postKeys } from '../artifacts/keys';
import { whileBeating } from './heartbeat';
import { t5Geometry } from './t5-training';

export interface QuantizeT5Input {
  runId: string;
  spec: TrainingSpec;
  checkpoint: CheckpointRef;
  dataset: DatasetRef;
  quant: QuantSpec;
}

export interface T5Variant {
  name: string;
  method: string;
  /** Validation examples whose greedy answers are scored (the first evalBatches × batchSize, as the run's evaluations). */
  examples: number;
  fp32ExactMatch: number;
  exactMatch: number;
  /** fp32 exact match − this variant's (absolute). */
  drop: number;
  maxExactMatchDrop: number;
  /** Target-token perplexity over every validation example, fp32 and this variant (null when refused). */
  fp32Perplexity: number | null;
  perplexity: number | null;
  /** Examples whose greedy answer differs from fp32's (null when refused). */
  flips: number | null;
  published: boolean;
  rejectedReason: string | null;
  /** Where the encoder.onnx + decoder.onnx pair is: runs/<id>/models/<name> or runs/<id>/rejected/<name>. */
  prefix: string;
  /** Bytes of the quantized and of the fp32 encoder + decoder pair. */
  bytes: number;
  fp32Bytes: number;
}

/** The default bound of a T5 variant: two points of exact match. */
export const DEFAULT_MAX_EXACT_MATCH_DROP = 0.02;
export const T5_ENCODER_FILE = 'encoder.onnx';
export const T5_DECODER_FILE = 'decoder.onnx';

export function createT5PostActivities(deps: { store: ArtifactStore }) {
  const shards = new ShardCache();
  return {
    quantizeT5: (input: QuantizeT5Input) => quantizeT5Variant(deps.store, shards, input),
  };
}

// The whole attempt heartbeats every second while its event loop turns (its proxy has a 60 s
// heartbeat timeout): export, quantization and the greedy decoding have no units to beat between here.
function quantizeT5Variant(store: ArtifactStore, shards: ShardCache, input: QuantizeT5Input): Promise<T5Variant> {
  return whileBeating(`quantizeT5 ${input.quant.name}`, () => quantizeAndGate(store, shards, input));
}

async function quantizeAndGate(store: ArtifactStore, shards: ShardCache, input: QuantizeT5Input): Promise<T5Variant> {
  const { runId, quant, spec, dataset } = input;
  const who = `quantizeT5 ${quant.name}`;
  const done = await committedVariant<T5Variant>(store, runId, quant.name, 't5');
  if (done) return done;
  if (spec.model.family !== 't5' || spec.model.task !== 'seq2seq') throw failure('InvalidConfig', `${who}: the run trains a ${spec.model.family} ${spec.model.task} model, not a T5 seq2seq model`);
  const ck = await checkpointWeightsAnyFamily(store, input.checkpoint.prefix);
  const cfg = ck.config as T5Config;
  const { srcLen, tgtLen } = t5Geometry(spec);
  const pairs: Seq2seqPair[] = [];
  for (const s of dataset.val.filter((v) => v.tokens > 0)) pairs.push(...(await shards.pairs(store, dataset, s)));
  if (pairs.length === 0) throw failure('InvalidInput', `${who}: dataset ${dataset.prefix} has no validation examples`);
  const emPairs = pairs.slice(0, spec.evalBatches * spec.batchSize);
  const bound = quant.maxExactMatchDrop ?? DEFAULT_MAX_EXACT_MATCH_DROP;
  return failingAs(who, async () => {
    const { fp32, quant: q } = await quantizeT5(cfg, ck.weights, quantConfigOf(quant));
    const base = { name: quant.name, method: quant.method, maxExactMatchDrop: bound, bytes: q.encoder.byteLength + q.decoder.byteLength, fp32Bytes: fp32.encoder.byteLength + fp32.decoder.byteLength };
    let result: T5Variant;
    try {
      const g = await gateSeq2seq(cfg, fp32, q, emPairs, pairs, { method: quant.method, maxExactMatchDrop: bound, eosId: dataset.eot, srcLen, tgtLen, batchSize: spec.batchSize, ids: cfg, sessionConfig: { intraOpThreads: spec.threads } });
      result = { ...base, examples: g.fp32.examples, fp32ExactMatch: g.fp32.exactMatch, exactMatch: g.quant.exactMatch, drop: g.drop, fp32Perplexity: g.fp32.perplexity, perplexity: g.quant.perplexity, flips: g.flips, published: true, rejectedReason: null, prefix: postKeys.model(runId, quant.name) };
    } catch (err) {
      if (!(err instanceof ExactMatchRejectedError)) throw err;
      result = { ...base, examples: err.examples, fp32ExactMatch: err.fp32ExactMatch, exactMatch: err.quantExactMatch, drop: err.drop, fp32Perplexity: null, perplexity: null, flips: null, published: false, rejectedReason: err.reason, prefix: postKeys.rejected(runId, quant.name) };
    }
    await store.commit(result.prefix, { [T5_ENCODER_FILE]: Buffer.from(q.encoder), [T5_DECODER_FILE]: Buffer.from(q.decoder) }, { t5: result });
    return result;
  });
}

export type T5PostActivities = ReturnType<typeof createT5PostActivities>;
