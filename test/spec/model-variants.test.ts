// GPT variants in specs (spec/training.ts `model.variant`, spec/pipeline.ts): the memory-augmented
// GPT parses with its slots and layers checked against the config and takes GPT's post-training,
// the domain-head GPT as a classifier (task classification) on a labelled corpus, the image-prefix
// GPT on an image-captions corpus of its dims; the stages they cannot run yet and bad fields are
// refused in one line naming the field.

import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';
import { parseTrainingSpec } from '../../spec/training';

const training = { rounds: 1, innerSteps: 2, batchSize: 4, contextLength: 32 };
const brown = { name: 'brown', corpus: { kind: 'brown', categories: ['humor'] } };
const memory = { kind: 'memory', n_memory: 8, memory_layers: [1] };
const gpt = (variant: unknown, config: object = {}) => ({ preset: 'tiny-gpt', config: { n_layer: 2, ...config }, variant });
const pipeline = (over: object = {}) => ({ name: 'mem', model: gpt(memory), dataset: brown, training, ...over });
const issuesOf = (input: unknown): string[] => {
  try {
    parsePipelineSpec(input);
  } catch (e) {
    if (e instanceof InvalidSpecError) return e.issues;
    throw e;
  }
  throw new Error('parsed');
};
const trainingIssues = (model: unknown, over: object = {}): string => {
  try {
    parseTrainingSpec({ model, dataset: brown, ...training, ...over });
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('parsed');
};

test('a memory-augmented GPT parses: the GPT config as before, the variant beside it; a plain GPT has none', () => {
  const s = parseTrainingSpec({ model: gpt(memory), dataset: brown, ...training });
  expect(s.model.family === 'gpt' && s.model.variant).toEqual({ kind: 'memory', n_memory: 8, memory_layers: [1] });
  expect(s.model.config).toMatchObject({ n_layer: 2, block_size: 64 });
  expect('variant' in s.model.config).toBe(false);
  const plain = parseTrainingSpec({ model: { preset: 'tiny-gpt' }, dataset: brown, ...training });
  expect(plain.model.family === 'gpt' && plain.model.variant).toBeUndefined();
  expect(parsePipelineSpec(pipeline()).training.model).toMatchObject({ variant: memory });
});

test('bad memory fields are refused naming the field: a layer past n_layer, a layer twice, an unknown key, no layers', () => {
  expect(trainingIssues(gpt({ ...memory, memory_layers: [2] }))).toContain('spec.model.variant.memory_layers.0: layer 2 does not exist (n_layer 2)');
  expect(trainingIssues(gpt({ ...memory, memory_layers: [1, 1] }))).toContain('spec.model.variant.memory_layers: lists a layer twice');
  expect(trainingIssues(gpt({ ...memory, n_slots: 4 }))).toMatch(/spec\.model\.variant.*n_slots/);
  expect(trainingIssues(gpt({ ...memory, memory_layers: [] }))).toMatch(/spec\.model\.variant\.memory_layers/);
  expect(trainingIssues(gpt({ ...memory, n_memory: 0 }))).toMatch(/spec\.model\.variant\.n_memory/);
  expect(trainingIssues(gpt({ kind: 'adapter' }))).toMatch(/spec\.model\.variant\.kind/);
});

test('the other variants, other families, from and activation checkpointing are refused with the reason', () => {
  expect(trainingIssues(gpt({ kind: 'image-prefix', image_dim: 8, n_image_tokens: 2 }))).toContain('spec.dataset.corpus.kind: an image-prefix GPT trains on image features with their captions: corpus kind image-captions, not brown');
  expect(trainingIssues({ family: 'bert', preset: 'tiny-bert', task: 'mlm', variant: memory })).toContain('spec.model.variant: variants are GPT models (memory, domain-head, image-prefix); this is a bert model');
  expect(trainingIssues({ from: 'models/x', fromFiles: {}, variant: memory })).toContain('spec.model.variant: cannot be combined with from');
  expect(trainingIssues(gpt(memory), { activationCheckpointing: 'block' })).toContain('spec.activationCheckpointing: recomputing blocks of a memory-augmented GPT (model.variant) is not wired yet; leave activationCheckpointing off');
});

test('a memory-augmented GPT pipeline refuses LoRA, and takes GPT post-training: quantization gated on perplexity, evaluation', () => {
  expect(issuesOf(pipeline({ lora: { lora: { r: 4 }, train: { steps: 2, batchSize: 2, contextLength: 16 } } }))).toEqual(['spec.lora: LoRA of a memory-augmented GPT (model.variant) is not wired yet; leave lora out']);
  const post = parsePipelineSpec(pipeline({ quantization: [{ method: 'int8-dynamic', maxPplIncrease: 0.05 }], evaluation: { batches: 2 } }));
  expect(post.quantization.map((q) => [q.method, q.maxPplIncrease])).toEqual([['int8-dynamic', 0.05]]);
  expect(post.evaluation?.batches).toBe(2);
  // A language model's gate, as for a plain GPT.
  expect(issuesOf(pipeline({ quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 1 }] }))).toEqual(['spec.quantization.0.maxAccuracyDrop: gates a classifier; a language model variant is gated on maxPplIncrease']);
});

const spam = { name: 'spam', corpus: { kind: 'spam-assassin' } };
const head = { kind: 'domain-head', n_classes: 2 };

test('a domain-head GPT parses as a GPT classifier: task classification by default, the head beside the config', () => {
  const s = parseTrainingSpec({ model: gpt(head), dataset: spam, ...training });
  expect(s.model).toMatchObject({ family: 'gpt', task: 'classification', variant: { kind: 'domain-head', n_classes: 2, lm_weight: 1, cls_weight: 1 } });
  expect(parseTrainingSpec({ model: { ...gpt({ ...head, lm_weight: 0.1 }), task: 'classification' }, dataset: spam, ...training }).model).toMatchObject({ variant: { lm_weight: 0.1, cls_weight: 1 } });
  // The pipeline's classifier report needs no evaluation section; nothing else is asked for.
  expect(parsePipelineSpec({ name: 'dom', model: gpt(head), dataset: spam, training }).training.model).toMatchObject({ task: 'classification' });
});

test('bad domain-head specs are refused naming the field', () => {
  const issues = (model: unknown, dataset: unknown = spam, over: object = {}) => {
    try {
      parseTrainingSpec({ model, dataset, ...training, ...over });
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('parsed');
  };
  expect(issues(gpt({ ...head, n_classes: 1 }))).toMatch(/spec\.model\.variant\.n_classes/);
  expect(issues(gpt({ ...head, classes: 2 }))).toMatch(/spec\.model\.variant.*classes/);
  expect(issues(gpt({ ...head, lm_weight: 0, cls_weight: 0 }))).toContain('spec.model.variant.cls_weight: lm_weight and cls_weight are both 0: nothing to train');
  expect(issues({ ...gpt(head), task: 'lm' })).toContain('spec.model.task: a domain-head GPT trains for classification, not lm');
  expect(issues({ preset: 'tiny-gpt', task: 'classification' })).toContain('spec.model.task: a GPT classifies with a domain head: add variant { kind: domain-head, n_classes: <labels> }');
  expect(issues(gpt(head), { name: 'x', corpus: { kind: 'jsonl', path: 'x.jsonl' } })).toContain('spec.dataset.corpus: a classification run needs a labelled corpus');
  expect(issues(gpt(head), spam, { activationCheckpointing: 'block' })).toContain('spec.activationCheckpointing: recomputing blocks of a domain-head GPT (model.variant) is not wired yet');
  expect(issues({ from: 'models/x', fromFiles: {}, variant: head })).toContain('spec.model.variant: cannot be combined with from');
});

test('a domain-head GPT pipeline quantizes int8-dynamic gated on accuracy; LoRA and the post-training evaluation are refused with the reason', () => {
  const p = (over: object) => issuesOf({ name: 'dom', model: gpt(head), dataset: spam, training, ...over });
  expect(parsePipelineSpec({ name: 'dom', model: gpt(head), dataset: spam, training, quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 0.02 }] }).quantization).toMatchObject([{ method: 'int8-dynamic', maxAccuracyDrop: 0.02 }]);
  expect(p({ lora: { lora: { r: 4 }, train: { steps: 2, batchSize: 2, contextLength: 16 } } })).toEqual(['spec.lora: LoRA of a GPT domain-head classifier (model.variant) is not wired yet; leave lora out']);
  expect(p({ quantization: [{ method: 'int4' }] })).toEqual(['spec.quantization.0.method: a classifier quantizes int8-dynamic so far, not int4']);
  expect(p({ quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 0.01 }] })).toEqual(['spec.quantization.0.maxExactMatchDrop: gates a T5 seq2seq model; a classifier is gated on maxAccuracyDrop']);
  expect(p({ evaluation: { batches: 2 } })).toEqual(['spec.evaluation: evaluation of a GPT domain-head classifier (model.variant) is not wired yet; leave evaluation out (the training workflow reports accuracy and macro F1 over every val document)']);
});

const image = { kind: 'image-prefix', image_dim: 8, n_image_tokens: 2 };
const captions = (over: object = {}) => ({ name: 'caps', corpus: { kind: 'image-captions', path: 'caps.jsonl', imageTokens: 2, imageDim: 8, ...over } });

test('an image-prefix GPT parses with an image-captions corpus of its dims; mismatches are refused naming the field', () => {
  const s = parseTrainingSpec({ model: gpt(image), dataset: captions(), ...training });
  expect(s.model).toMatchObject({ family: 'gpt', task: 'lm', variant: image });
  expect(s.dataset.corpus).toMatchObject({ kind: 'image-captions', featuresField: 'features', captionField: 'caption' });
  expect(trainingIssues(gpt(image), { dataset: captions({ imageDim: 4 }) })).toContain('spec.dataset.corpus.imageDim: must equal model.variant.image_dim (4 != 8)');
  expect(trainingIssues(gpt(image), { dataset: captions({ imageTokens: 3 }) })).toContain('spec.dataset.corpus.imageTokens: must equal model.variant.n_image_tokens (3 != 2)');
  // tiny-gpt's block_size is 64: 63 text tokens and 2 image tokens do not fit.
  expect(trainingIssues(gpt(image), { dataset: captions(), contextLength: 63 })).toContain('spec.contextLength: with the 2 image tokens must not exceed model block_size (63 + 2 > 64)');
  expect(trainingIssues(gpt({ ...image, n_image_tokens: 64 }), { dataset: captions({ imageTokens: 64 }) })).toContain('spec.model.variant.n_image_tokens: must leave room for text in block_size (64 >= 64)');
  expect(trainingIssues({ preset: 'tiny-gpt' }, { dataset: captions() })).toContain('spec.dataset.corpus.kind: image-captions carries image features, which a GPT reads with model.variant { kind: image-prefix, image_dim, n_image_tokens }; this is a gpt lm model without it');
  expect(trainingIssues(gpt({ ...image, image_dim: 0 }), { dataset: captions() })).toMatch(/spec\.model\.variant\.image_dim/);
  expect(issuesOf({ name: 'caps', model: gpt(image), dataset: captions(), training, quantization: [{ method: 'int8-dynamic' }] })).toEqual(['spec.quantization: quantization of an image-prefix GPT (model.variant) is not wired yet; leave quantization out']);
});
