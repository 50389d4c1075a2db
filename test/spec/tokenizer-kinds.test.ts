// The wordpiece and unigram tokenizer kinds in pipeline specs (issue 12): accepted where `bpe` is,
// strict like every spec object, and refused for a separate LoRA dataset like `bpe` (a tokenizer
// learned from another corpus would give other ids), each in one line naming the field.

import fs from 'node:fs';
import path from 'node:path';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';

type Spec = Record<string, any>;
const tiny = (): Spec => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../examples/tiny.json'), 'utf8'));

function issues(s: Spec): string[] {
  try {
    parsePipelineSpec(s);
    return [];
  } catch (err) {
    if (err instanceof InvalidSpecError) return err.issues;
    throw err;
  }
}

test.each([
  [{ kind: 'wordpiece', vocabSize: 1000 }],
  [{ kind: 'unigram', vocabSize: 1000 }],
])('a pipeline spec takes tokenizer %j', (tokenizer) => {
  const s = tiny();
  s.dataset.tokenizer = tokenizer;
  expect(issues(s)).toEqual([]);
});

test.each([
  [{ kind: 'wordpiece', vocabSize: 1000, lowercase: false }, 'spec.dataset.tokenizer.lowercase: unknown key'],
  [{ kind: 'unigram' }, 'spec.dataset.tokenizer.vocabSize:'],
  [{ kind: 'unigram', vocabSize: 50 }, 'spec.dataset.tokenizer.vocabSize: unigram vocabSize must hold the 3 specials, 100 sentinels and the characters of the corpus'],
])('tokenizer %j is refused, naming the field', (tokenizer, line) => {
  const s = tiny();
  s.dataset.tokenizer = tokenizer;
  expect(issues(s).join('\n')).toContain(line);
});

test('a LoRA dataset of its own with a trained wordpiece is refused, as with bpe', () => {
  const s = tiny();
  s.dataset.tokenizer = { kind: 'wordpiece', vocabSize: 1000 };
  s.lora = { dataset: { name: 'other', corpus: { kind: 'brown', categories: ['news'] }, tokenizer: { kind: 'wordpiece', vocabSize: 1000 } }, train: { steps: 2, batchSize: 2, contextLength: 8 } };
  expect(issues(s)).toEqual(['spec.lora.dataset.tokenizer: a wordpiece tokenizer is learned from its own corpus, so a second dataset would get different token ids; use byte or gpt2, or leave lora.dataset out to fine-tune on the training dataset']);
});
