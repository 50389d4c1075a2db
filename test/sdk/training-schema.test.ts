import { parseTrainingSpec } from '../../spec/training';

const base = {
  name: 'variant-run',
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] } },
  rounds: 1,
  innerSteps: 2,
  batchSize: 2,
  contextLength: 16,
};

describe('TrainingSpec model config', () => {
  test('GPT variant options reach the parsed config (Llama-style block)', () => {
    const spec = parseTrainingSpec({
      ...base,
      model: { preset: 'tiny-gpt', config: { pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false } },
    });
    expect(spec.model.config).toMatchObject({ n_layer: 2, n_head: 4, pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false });
  });

  test('a plain preset parses to the GPT-2 config with no variant fields added', () => {
    const spec = parseTrainingSpec({ ...base, model: { preset: 'tiny-gpt' } });
    expect(Object.keys(spec.model.config).sort()).toEqual(['bias', 'block_size', 'n_embd', 'n_head', 'n_layer', 'vocab_size']);
  });

  test('a bad variant field is named by its path', () => {
    expect(() => parseTrainingSpec({ ...base, model: { preset: 'tiny-gpt', config: { n_kv_head: 3 } } })).toThrow(/model\.config\.n_kv_head: must divide n_head \(4 % 3 != 0\)/);
  });
});
