// `attention` in a GPT model config: explicit unless asked for, 'fused' accepted, and one line
// naming the field for an unknown value or a combination the fused kernel cannot run.

import fs from 'node:fs';
import path from 'node:path';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';

const tiny = () => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../examples/tiny.json'), 'utf8'));
const issuesOf = (s: unknown): string[] => {
  try {
    parsePipelineSpec(s);
  } catch (err) {
    return (err as InvalidSpecError).issues;
  }
  return [];
};

describe('attention in a GPT model config', () => {
  it("is the explicit path unless asked for, and takes 'fused'", () => {
    expect(parsePipelineSpec(tiny()).training.model.config).not.toHaveProperty('attention');
    const s = tiny();
    s.model.config = { ...s.model.config, attention: 'fused' };
    expect(parsePipelineSpec(s).training.model.config).toMatchObject({ attention: 'fused' });
  });

  it.each([
    [{ attention: 'flash' }, /^spec\.model\.config\.attention: /],
    [{ attention: 'fused', dropout: 0.1 }, /^spec\.model\.config\.attention: 'fused' has no dropout on attention probabilities/],
    [{ attention: 'fused', n_kv_head: 1 }, /^spec\.model\.config\.attention: 'fused' needs n_kv_head = n_head/],
  ])('refuses %p with one line naming the field', (config, message) => {
    const s = tiny();
    s.model.config = { ...s.model.config, ...config };
    const issues = issuesOf(s);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(message);
  });
});
