// The evaluation part of a post-training spec: perplexity over the whole validation split unless
// capped, and report samples that are greedy and seeded with the settings a user would pick.

import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';
import { parsePostTrainingSpec } from '../../spec/post-training';

describe('evaluation defaults', () => {
  test('perplexity covers the whole validation split; samples are greedy plus temperature 0.8, top-k 40, top-p 0.95, seed 0', () => {
    const { eval: e } = parsePostTrainingSpec({});
    expect(e.batches).toBeNull();
    expect(e.samples).toEqual({ prompts: ['The '], maxNewTokens: 48, greedy: true, temperature: 0.8, topK: 40, topP: 0.95, seed: 0 });
  });

  test('a cap and a greedy-only setting stay possible', () => {
    const { eval: e } = parsePostTrainingSpec({ eval: { batches: 8, samples: { temperature: 0 } } });
    expect(e.batches).toBe(8);
    expect(e.samples.temperature).toBe(0);
  });

  test('no sample at all is refused, naming the field in the pipeline spec', () => {
    const spec = {
      name: 't',
      model: { preset: 'tiny-gpt' },
      dataset: { name: 'b', corpus: { kind: 'brown', categories: ['humor'] } },
      training: { workers: 1, rounds: 1, innerSteps: 1, batchSize: 4, contextLength: 32 },
      evaluation: { samples: { greedy: false, temperature: 0 } },
    };
    let issues: string[] = [];
    try {
      parsePipelineSpec(spec);
    } catch (err) {
      if (!(err instanceof InvalidSpecError)) throw err;
      issues = err.issues;
    }
    expect(issues).toEqual(['spec.evaluation.samples.greedy: greedy: false with temperature: 0 leaves no sample to write; set a temperature above 0 or leave greedy on']);
    expect(() => parsePostTrainingSpec({ eval: { batches: 0 } })).toThrow(/postTraining\.eval\.batches/);
  });
});
