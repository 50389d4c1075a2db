// The T5 branch of familyTraining (activities/model-family.ts): what a T5 run trains on and how it
// is judged. trainShard, createModel, aggregateRound and evaluate drive it as they drive GPT's step.
//
//   t5 seq2seq          source/target pairs of a `pairs` dataset (jsonl with targetField), drawn as a
//                       pure function of (seed, shard, step) (engine/data/seq2seq.ts); evaluation:
//                       target-token loss and perplexity over every val example (teacher forcing), and
//                       exact match of greedy answers (encoder once, decoder with its KV cache) over
//                       the first evalBatches × batchSize val examples
//   t5 span-corruption  rows of contextLength tokens of the token stream, spans dropped to sentinels
//                       (engine/data/t5-span.ts); evaluation: target loss and perplexity over the first
//                       evalBatches × batchSize consecutive val rows, corrupted with fixed keys

import { sampleLmBatch } from '../engine/data/sampler';
import { sampleSeq2seqBatch, seq2seqEvalBatches } from '../engine/data/seq2seq';
import { spanCorruptionBatch, spanCorruptionLengths, t5SpanOptions, type Seq2seqPair, type SpanCorruptionOptions } from '../engine/data/t5-span';
import type { Tokenizer } from '../engine/data/tokenizer';
import { T5Generator } from '../engine/eval/generate-t5';
import { seq2seqExactMatch, seq2seqPerplexity } from '../engine/eval/seq2seq';
import type { TensorData } from '../engine/graph/ir';
import { exportT5 } from '../engine/models/export-bert-t5';
import { t5Params, type T5Config } from '../engine/models/t5';
import type { SessionConfig } from '../engine/runtime';
import { compileT5TrainStep } from '../engine/train/seq2seq';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import type { TrainingSpec } from '../spec/training';
import { readTokenizer, type DatasetRef, type ShardCache } from '../artifacts/datasets';
import { failingAs } from '../artifacts/errors';
import { loadStoredTokenizer } from '../artifacts/tokenizers';
import type { EvaluateResult, FamilyTraining } from './model-family';

/** Shard marker of the validation rows' corruption keys (train shards count from 0). */
const VAL_SHARD = 0xfffff;

/** Encoder and decoder lengths of a T5 run's batches. */
export function t5Geometry(spec: TrainingSpec): { srcLen: number; tgtLen: number } {
  if (spec.model.task === 'span-corruption') {
    const l = spanCorruptionLengths(spec.contextLength);
    return { srcLen: l.inputs, tgtLen: l.targets };
  }
  return { srcLen: spec.contextLength, tgtLen: spec.targetLength ?? spec.contextLength };
}

/** The examples of a seq2seq shard, refused (naming the spec field) when one does not fit the batch geometry. */
export async function fittingPairs(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, shard: { file: string; docs?: string }, spec: TrainingSpec): Promise<Seq2seqPair[]> {
  const { srcLen, tgtLen } = t5Geometry(spec);
  const pairs = await shards.pairs(store, dataset, shard);
  pairs.forEach((p, i) => {
    if (p.inputs.length > srcLen) throw failure('InvalidConfig', `spec.contextLength: example ${i} of ${dataset.prefix}/${shard.file} has a source of ${p.inputs.length} tokens (EOS included), more than contextLength ${srcLen}`);
    if (p.targets.length > tgtLen) throw failure('InvalidConfig', `spec.targetLength: example ${i} of ${dataset.prefix}/${shard.file} has a target of ${p.targets.length} tokens (EOS included), more than ${spec.targetLength === undefined ? 'the default targetLength (contextLength) ' : 'targetLength '}${tgtLen}`);
  });
  return pairs;
}

/** Every val example of a seq2seq dataset, shards in order. */
async function valPairs(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, spec: TrainingSpec): Promise<Seq2seqPair[]> {
  const out: Seq2seqPair[] = [];
  for (const s of dataset.val.filter((v) => v.tokens > 0)) out.push(...(await fittingPairs(store, shards, dataset, s, spec)));
  if (out.length === 0) throw failure('InvalidInput', `dataset ${dataset.prefix}: the val split holds no examples; raise dataset.valFraction`);
  return out;
}

const spanOptions = new Map<string, Promise<SpanCorruptionOptions>>();

/** Span-corruption options from the dataset's tokenizer (its sentinels and EOS), once per dataset content. */
function spanOptionsOf(store: ArtifactStore, dataset: DatasetRef, rowLength: number): Promise<SpanCorruptionOptions> {
  const key = `${dataset.contentHash}:${rowLength}`;
  let o = spanOptions.get(key);
  if (!o) {
    o = readTokenizer(store, dataset)
      .then((saved) => loadStoredTokenizer(store, saved))
      .then((tok: Tokenizer) =>
        failingAs(`dataset ${dataset.prefix}`, () => {
          if (!('tokenId' in tok)) throw failure('InvalidConfig', `spec.dataset.tokenizer: span corruption needs a T5 tokenizer with <extra_id_N> sentinels (an imported T5's tokenizer.json), not ${tok.id}`);
          return t5SpanOptions(tok as Tokenizer & { tokenId(t: string): number | null }, rowLength, `spec.dataset.tokenizer (${tok.id})`);
        }),
      );
    o.catch(() => spanOptions.delete(key));
    spanOptions.set(key, o);
  }
  return o;
}

/** The first `rows` consecutive rows of `length` val tokens, span-corrupted with fixed keys, `batchSize` rows per batch. */
function spanEvalBatches(ids: Uint16Array | Uint32Array, spec: TrainingSpec, cfg: T5Config, opts: SpanCorruptionOptions): Record<string, TensorData>[] {
  const L = spec.contextLength;
  const rows = Math.min(Math.floor(ids.length / L), spec.evalBatches * spec.batchSize);
  if (rows === 0) throw failure('InvalidConfig', `spec.contextLength: the val split has ${ids.length} tokens, fewer than one row of ${L}; raise dataset.valFraction or lower contextLength`);
  const out: Record<string, TensorData>[] = [];
  for (let first = 0, b = 0; first < rows; first += spec.batchSize, b++) {
    const n = Math.min(spec.batchSize, rows - first);
    out.push(spanCorruptionBatch(ids.subarray(first * L, (first + n) * L), n, L, { seed: spec.seed, shard: VAL_SHARD, step: b }, opts, cfg));
  }
  return out;
}

/** The T5 parts of a training run (spec.model.family === 't5'). */
export function t5Training(spec: TrainingSpec, cfg: T5Config, task: 'seq2seq' | 'span-corruption'): FamilyTraining {
  const { srcLen, tgtLen } = t5Geometry(spec);
  // stepsPerRun is absent from specs of runs started before it existed: 1.
  const stepsPerRun = spec.stepsPerRun ?? 1;
  const setup = { model: cfg, optim: spec.optimizer, batchSize: spec.batchSize, srcLen, tgtLen, stepsPerRun };
  return {
    state: { family: 't5', modelConfig: { ...cfg } },
    params: t5Params(cfg),
    stepKey: JSON.stringify(['t5', task, cfg, spec.optimizer, spec.batchSize, srcLen, tgtLen, spec.threads, ...(stepsPerRun > 1 ? [stepsPerRun] : [])]),
    compile: (session) => compileT5TrainStep(setup, session),
    batch: async (store, shards, dataset, shard, ids) => {
      const req = { seed: spec.seed, shard, batchSize: spec.batchSize };
      if (task === 'seq2seq') {
        const pairs = await fittingPairs(store, shards, dataset, dataset.train[shard], spec);
        if (pairs.length === 0) throw failure('InvalidConfig', `spec.workers: train shard ${shard} of ${dataset.prefix} holds no examples; use fewer workers or more data`);
        return (step) => sampleSeq2seqBatch(pairs, { ...req, step }, cfg, srcLen, tgtLen);
      }
      const opts = await spanOptionsOf(store, dataset, spec.contextLength);
      return (step) => spanCorruptionBatch(sampleLmBatch(ids, { ...req, step, contextLength: spec.contextLength }).tokens, spec.batchSize, spec.contextLength, { seed: spec.seed, shard, step }, opts, cfg);
    },
    evaluate: async (store, shards, dataset, weights, session, onBatch): Promise<EvaluateResult> => {
      if (task === 'span-corruption') {
        const [ids, opts] = await Promise.all([shards.split(store, dataset, 'val'), spanOptionsOf(store, dataset, spec.contextLength)]);
        const batches = spanEvalBatches(ids, spec, cfg, opts);
        const r = await failingAs('evaluate', () => seq2seqPerplexity(exportT5(cfg, weights), batches, session, onBatch));
        return { loss: r.nll, perplexity: r.ppl, tokens: r.tokens };
      }
      return evaluateSeq2seq(store, shards, dataset, weights, session, spec, cfg, onBatch);
    },
  };
}

/** Loss and perplexity over every val example; exact match over the first evalBatches × batchSize. */
async function evaluateSeq2seq(store: ArtifactStore, shards: ShardCache, dataset: DatasetRef, weights: Map<string, Float32Array>, session: SessionConfig, spec: TrainingSpec, cfg: T5Config, onBatch?: (n: number) => void): Promise<EvaluateResult> {
  const { srcLen, tgtLen } = t5Geometry(spec);
  const pairs = await valPairs(store, shards, dataset, spec);
  const ppl = await failingAs('evaluate', () => seq2seqPerplexity(exportT5(cfg, weights), seq2seqEvalBatches(pairs, spec.batchSize, cfg, srcLen, tgtLen), session, onBatch));
  const scored = pairs.slice(0, spec.evalBatches * spec.batchSize);
  const em = await failingAs('evaluate: exact match', async () => {
    const gen = await T5Generator.create(cfg, weights, { session });
    try {
      return await seq2seqExactMatch(gen, scored, { eosId: dataset.eot, maxNewTokens: tgtLen });
    } finally {
      await gen.release();
    }
  });
  return { loss: ppl.nll, perplexity: ppl.ppl, tokens: ppl.tokens, exactMatch: em.exactMatch, examples: em.examples };
}
