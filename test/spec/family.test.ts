// Model families and tasks in specs (spec/family.ts, spec/training.ts): what each family trains,
// the dataset each task needs, and the one-line refusals that name the field.

import { parsePipelineSpec, InvalidSpecError } from '../../spec/pipeline';
import { datasetSpecOf, parseTrainingSpec } from '../../spec/training';
import { resolveTask, FAMILY_TASKS } from '../../spec/family';

const training = { rounds: 1, innerSteps: 2, batchSize: 4, contextLength: 32 };
const spam = { name: 'spam', corpus: { kind: 'spam-assassin' } };
const brown = { name: 'brown', corpus: { kind: 'brown', categories: ['humor'] } };
const issuesOf = (input: unknown): string[] => {
  try {
    parsePipelineSpec(input);
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues;
    throw e;
  }
  throw new Error('parsed');
};

test('a GPT spec parses as before: family gpt, task lm', () => {
  const s = parseTrainingSpec({ model: { preset: 'tiny-gpt' }, dataset: brown, ...training });
  expect(s.model.family).toBe('gpt');
  expect(s.model.task).toBe('lm');
  expect(s.model.family === 'gpt' && s.model.config.block_size).toBe(64);
});

test('a BERT classifier from a preset: the head from the spec, the encoder from the preset', () => {
  const s = parseTrainingSpec({ model: { family: 'bert', preset: 'tiny-bert', config: { head: { kind: 'classification', num_labels: 2 } } }, dataset: spam, ...training });
  expect(s.model.family).toBe('bert');
  expect(s.model.task).toBe('classification');
  expect(s.model.config).toMatchObject({ hidden_size: 64, num_hidden_layers: 2, max_position_embeddings: 64, head: { kind: 'classification', num_labels: 2 } });
});

test('BERT MLM from scratch gets the mlm head by default', () => {
  const s = parseTrainingSpec({ model: { family: 'bert', task: 'mlm', preset: 'tiny-bert' }, dataset: brown, ...training });
  expect(s.model.config).toMatchObject({ head: { kind: 'mlm' } });
});

test('refusals name the field: a task the family lacks, a head that does not fit, an unlabelled corpus, context past the positions', () => {
  expect(issuesOf({ name: 'x', model: { family: 'gpt', task: 'classification', preset: 'tiny-gpt' }, dataset: spam, training })).toEqual([
    'spec.model.task: a GPT classifies with a domain head: add variant { kind: domain-head, n_classes: <labels> } (or train a classifier with family bert)',
  ]);
  expect(issuesOf({ name: 'x', model: { family: 'bert', task: 'seq2seq', preset: 'tiny-bert' }, dataset: spam, training })).toEqual([
    'spec.model.task: a bert model does not train for seq2seq; it trains classification, mlm',
  ]);
  expect(issuesOf({ name: 'x', model: { family: 'bert', preset: 'tiny-bert' }, dataset: spam, training })).toEqual([
    'spec.model.config.head: a classification run needs the head { kind: classification, num_labels: <labels> }',
  ]);
  expect(issuesOf({ name: 'x', model: { family: 'bert', preset: 'tiny-bert', config: { head: { kind: 'classification', num_labels: 2 } } }, dataset: { name: 't', corpus: { kind: 'text', path: 'README.md' } }, training })).toEqual([
    'spec.dataset.corpus: a classification run needs a labelled corpus (spam-assassin, brown (its genres), or jsonl with labelField), not text',
  ]);
  expect(issuesOf({ name: 'x', model: { family: 'bert', preset: 'tiny-bert', config: { head: { kind: 'classification', num_labels: 2 } } }, dataset: spam, training: { ...training, contextLength: 128 } })).toEqual([
    'spec.training.contextLength: must not exceed model max_position_embeddings (128 > 64)',
  ]);
  expect(issuesOf({ name: 'x', model: { family: 'bert', preset: 'tiny-gpt' }, dataset: spam, training })).toEqual(['spec.model.preset: preset "tiny-gpt" is a gpt model, but model.family is bert']);
  // Unknown keys of a BERT config are named, with the nearest known key.
  expect(issuesOf({ name: 'x', model: { family: 'bert', preset: 'tiny-bert', config: { hiden_size: 8 } }, dataset: spam, training })).toEqual(['spec.model.config.hiden_size: unknown key (did you mean hidden_size?)']);
});

test('a BERT pipeline: LoRA for classifiers only, on the training dataset; a classifier quantizes int8-dynamic gated on accuracy; maxAccuracyDrop is for classifiers only', () => {
  const model = { family: 'bert', preset: 'tiny-bert', config: { head: { kind: 'classification', num_labels: 2 } } };
  const lora = { lora: { r: 4 }, train: { steps: 2, batchSize: 2, contextLength: 16 } };
  expect(issuesOf({ name: 'x', model: { family: 'bert', task: 'mlm', preset: 'tiny-bert' }, dataset: brown, training, lora })).toEqual([
    "spec.lora: the pipeline's LoRA stage tunes GPT models, BERT classifiers and T5 seq2seq models so far, and this is a bert mlm model; leave lora out",
  ]);
  expect(issuesOf({ name: 'x', model, dataset: spam, training, lora: { ...lora, dataset: brown } })).toEqual([
    "spec.lora.dataset: a classifier's LoRA stage trains on the training dataset (its labels); leave lora.dataset out",
  ]);
  expect(parsePipelineSpec({ name: 'x', model, dataset: spam, training, lora }).lora).toMatchObject({ lora: { r: 4 }, train: { steps: 2 } });
  expect(issuesOf({ name: 'x', model, dataset: spam, training, quantization: [{ method: 'int4' }] })).toEqual(['spec.quantization.0.method: a classifier quantizes int8-dynamic so far, not int4']);
  expect(issuesOf({ name: 'x', model: { family: 'bert', task: 'mlm', preset: 'tiny-bert' }, dataset: brown, training, quantization: [{ method: 'int8-dynamic' }] })).toEqual([
    'spec.quantization.0: post-training quantization of a bert mlm model is not wired yet; leave quantization out',
  ]);
  expect(issuesOf({ name: 'x', model: { preset: 'tiny-gpt' }, dataset: brown, training, quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 0.01 }] })).toEqual([
    'spec.quantization.0.maxAccuracyDrop: gates a classifier; a language model variant is gated on maxPplIncrease',
  ]);
  expect(issuesOf({ name: 'x', model, dataset: spam, training, quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 2 }] })).toEqual(['spec.quantization.0.maxAccuracyDrop: a fraction, at most 1 (0.01 is one point of accuracy)']);
  const p = parsePipelineSpec({ name: 'x', model, dataset: spam, training, quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 0.01 }] });
  expect(p.training.model.family).toBe('bert');
  expect(p.quantization[0]).toMatchObject({ name: 'int8', maxAccuracyDrop: 0.01 });
});

test('resolveTask: defaults and reasons for every family', () => {
  expect(resolveTask('gpt', null)).toEqual({ task: 'lm' });
  expect(resolveTask('bert', null)).toEqual({ task: 'classification' });
  expect(resolveTask('bert', 'mlm')).toEqual({ task: 'mlm' });
  expect(resolveTask('t5', null)).toEqual({ task: 'seq2seq' });
  expect(resolveTask('t5', 'lm')).toEqual({ field: 'task', message: 'a t5 model does not train for lm; it trains seq2seq, span-corruption' });
  expect(FAMILY_TASKS.t5.trains).toEqual(['seq2seq', 'span-corruption']);
});

const pairs = { name: 'pairs', corpus: { kind: 'jsonl', path: 'pairs.jsonl', textField: 'input', targetField: 'target' } };

test('T5: seq2seq (the default) on a paired jsonl corpus, span corruption on text; the dataset asks for pairs', () => {
  const s = parseTrainingSpec({ model: { family: 't5', preset: 'tiny-t5' }, dataset: pairs, ...training, targetLength: 8 });
  expect(s.model.task).toBe('seq2seq');
  expect(s.model.family === 't5' && s.model.config).toMatchObject({ d_model: 64, num_layers: 2, num_decoder_layers: null, feed_forward_proj: 'relu' });
  expect(datasetSpecOf(s)).toMatchObject({ shards: 1, pairs: true });
  expect(datasetSpecOf(s)).not.toHaveProperty('labels');
  const span = parseTrainingSpec({ model: { family: 't5', task: 'span-corruption', preset: 'tiny-t5', config: { d_ff: 256 } }, dataset: brown, ...training, workers: 2 });
  expect(span.model.family === 't5' && span.model.config.d_ff).toBe(256);
  expect(datasetSpecOf(span)).toEqual({ ...span.dataset, shards: 2 });
});

test('T5 refusals name the field: an unpaired corpus, targetLength off seq2seq, an unknown config key, LoRA, quantization and its gate', () => {
  const t5 = { family: 't5', preset: 'tiny-t5' };
  expect(issuesOf({ name: 'x', model: t5, dataset: brown, training })).toEqual([
    'spec.dataset.corpus: a seq2seq run needs source/target pairs: a jsonl corpus with textField (the source) and targetField (the target), not brown',
  ]);
  expect(issuesOf({ name: 'x', model: t5, dataset: { name: 'j', corpus: { kind: 'jsonl', path: 'a.jsonl', labelField: 'y' } }, training })).toEqual([
    'spec.dataset.corpus.targetField: a seq2seq run needs source/target pairs: a jsonl corpus with textField (the source) and targetField (the target), not jsonl without targetField',
  ]);
  expect(issuesOf({ name: 'x', model: { ...t5, task: 'span-corruption' }, dataset: brown, training: { ...training, targetLength: 8 } })).toEqual([
    "spec.training.targetLength: sets a seq2seq run's decoder length; this run trains a t5 model for span-corruption",
  ]);
  expect(issuesOf({ name: 'x', model: { ...t5, config: { d_modle: 32 } }, dataset: pairs, training })).toEqual(['spec.model.config.d_modle: unknown key (did you mean d_model?)']);
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, quantization: [{ method: 'int4' }] })).toEqual(['spec.quantization.0.method: a seq2seq model quantizes int8-dynamic so far, not int4']);
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 0.01 }] })).toEqual([
    'spec.quantization.0.maxAccuracyDrop: gates a classifier; a seq2seq model is gated on maxExactMatchDrop',
  ]);
  expect(issuesOf({ name: 'x', model: { family: 'bert', preset: 'tiny-bert', config: { head: { kind: 'classification', num_labels: 2 } } }, dataset: spam, training, quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 0.01 }] })).toEqual([
    'spec.quantization.0.maxExactMatchDrop: gates a T5 seq2seq model; a classifier is gated on maxAccuracyDrop',
  ]);
  expect(issuesOf({ name: 'x', model: { preset: 'tiny-gpt' }, dataset: brown, training, quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 0.01 }] })).toEqual([
    'spec.quantization.0.maxExactMatchDrop: gates a T5 seq2seq model; a language model variant is gated on maxPplIncrease',
  ]);
  expect(issuesOf({ name: 'x', model: { ...t5, task: 'span-corruption' }, dataset: brown, training, quantization: [{ method: 'int8-dynamic' }] })).toEqual([
    'spec.quantization.0: post-training quantization of a t5 span-corruption model is not wired yet; leave quantization out',
  ]);
  const p = parsePipelineSpec({ name: 'x', model: t5, dataset: pairs, training, quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 0.05 }] });
  expect(p.quantization[0]).toMatchObject({ name: 'int8', method: 'int8-dynamic', maxExactMatchDrop: 0.05 });
});

test('a T5 seq2seq pipeline takes a LoRA stage on its pairs; bad rank, targets that are not T5 Linear layers, another dataset and span corruption are refused, naming the field', () => {
  const t5 = { family: 't5', preset: 'tiny-t5' };
  const lora = { lora: { r: 4, lora_alpha: 8 }, train: { steps: 2, batchSize: 2, contextLength: 16 } };
  const parsed = parsePipelineSpec({ name: 'x', model: t5, dataset: pairs, training, lora });
  expect(parsed.lora).toMatchObject({ name: 'x', dataset: null, lora: { r: 4, lora_alpha: 8 }, train: { steps: 2, stepsPerActivity: 100 } });
  // HF T5 names: leaves (q, k, v, o, wi, wo), longer suffixes, all-linear, a regular expression over full names.
  for (const target_modules of [['q', 'k', 'v', 'o', 'wi', 'wo'], ['EncDecAttention.k', 'SelfAttention.q'], 'all-linear', 'encoder\\.block\\.\\d+\\.layer\\.0\\.SelfAttention\\.q']) {
    expect(parsePipelineSpec({ name: 'x', model: t5, dataset: pairs, training, lora: { ...lora, lora: { r: 4, target_modules } } }).lora!.lora.target_modules).toEqual(target_modules);
  }
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, lora: { ...lora, lora: { r: 0 } } })).toEqual(['spec.lora.lora.r: Too small: expected number to be >0']);
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, lora: { ...lora, lora: { r: 2.5 } } })).toEqual(['spec.lora.lora.r: Invalid input: expected int, received number']);
  // GPT-2 and Llama names, and the gated FF's wi_0 on a ReLU T5 (its FF is wi, wo): each entry named.
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, lora: { ...lora, lora: { target_modules: ['q', 'c_attn', 'v', 'q_proj', 'wi_0'] } } })).toEqual([
    'spec.lora.lora.target_modules.1: "c_attn" is not a Linear layer of this T5; HF T5ForConditionalGeneration names them q, k, v, o, wi, wo',
    'spec.lora.lora.target_modules.3: "q_proj" is not a Linear layer of this T5; HF T5ForConditionalGeneration names them q, k, v, o, wi, wo',
    'spec.lora.lora.target_modules.4: "wi_0" is not a Linear layer of this T5; HF T5ForConditionalGeneration names them q, k, v, o, wi, wo',
  ]);
  expect(parsePipelineSpec({ name: 'x', model: { ...t5, config: { feed_forward_proj: 'gated-gelu' } }, dataset: pairs, training, lora: { ...lora, lora: { target_modules: ['wi_0', 'wi_1'] } } }).lora!.lora.target_modules).toEqual(['wi_0', 'wi_1']);
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, lora: { ...lora, lora: { target_modules: 'decoder\\.lm_head' } } })).toEqual([
    'spec.lora.lora.target_modules: the regular expression /decoder\\.lm_head/ matches no Linear layer of this T5 (e.g. encoder.block.0.layer.0.SelfAttention.q); its layers are q, k, v, o, wi, wo',
  ]);
  expect(issuesOf({ name: 'x', model: t5, dataset: pairs, training, lora: { ...lora, dataset: pairs } })).toEqual([
    "spec.lora.dataset: a T5 seq2seq model's LoRA stage trains on the training dataset (its source/target pairs); leave lora.dataset out",
  ]);
  expect(issuesOf({ name: 'x', model: { ...t5, task: 'span-corruption' }, dataset: brown, training, lora })).toEqual([
    "spec.lora: the pipeline's LoRA stage tunes GPT models, BERT classifiers and T5 seq2seq models so far, and this is a t5 span-corruption model; leave lora out",
  ]);
});
