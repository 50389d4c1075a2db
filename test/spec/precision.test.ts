// `precision` / `lossScale` (mixed precision, spec/precision.ts) in the training spec (and a
// pipeline's `training`) and in a fine-tune's `train`: absent unless asked for, so parsed specs
// and compiled-step cache keys of existing specs stay as they were; bad values, lossScale without
// fp16, and half precision on a model it is not wired for are refused in one line naming the path.

import { parseFineTuneSpec } from '../../spec/lora';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';
import { precisionKey } from '../../spec/precision';
import { parseTrainingSpec } from '../../spec/training';
import { fineTuneInput as fineTune, tinyPipeline as tiny, trainingInput as training } from '../helpers/spec-inputs';

function pipelineIssues(edit: (s: ReturnType<typeof tiny>) => void): string[] {
  const s = tiny();
  edit(s);
  try {
    parsePipelineSpec(s);
  } catch (err) {
    return (err as InvalidSpecError).issues;
  }
  return [];
}

describe('precision in specs', () => {
  it('is absent unless asked for: existing specs parse to what they parsed to before', () => {
    const t = parseTrainingSpec(training({}));
    expect('precision' in t || 'lossScale' in t).toBe(false);
    expect('precision' in parsePipelineSpec(tiny()).training).toBe(false);
    expect('precision' in parseFineTuneSpec(fineTune({})).train).toBe(false);
  });

  it('reaches the parsed training, pipeline and fine-tune specs; lossScale defaults to growthInterval 2000', () => {
    expect(parseTrainingSpec(training({ precision: 'bf16' })).precision).toBe('bf16');
    expect(parseTrainingSpec(training({ precision: 'fp16', lossScale: {} })).lossScale).toEqual({ growthInterval: 2000 });
    expect(parseFineTuneSpec(fineTune({ precision: 'fp16', lossScale: { growthInterval: 100 } })).train).toMatchObject({ precision: 'fp16', lossScale: { growthInterval: 100 } });
    const s = tiny();
    s.training.precision = 'fp16';
    s.lora = { train: { steps: 2, batchSize: 2, contextLength: 8, precision: 'bf16' } };
    const p = parsePipelineSpec(s);
    expect(p.training.precision).toBe('fp16');
    expect(p.lora?.train.precision).toBe('bf16');
  });

  it('refuses a bad value, an unknown key and lossScale without fp16, one line each naming the field', () => {
    expect(pipelineIssues((s) => (s.training.precision = 'fp8'))).toEqual([expect.stringMatching(/^spec\.training\.precision: .*fp32.*fp16.*bf16/)]);
    expect(pipelineIssues((s) => Object.assign(s.training, { precision: 'fp16', lossScale: { growth: 10 } }))).toEqual(['spec.training.lossScale.growth: unknown key (known keys: growthInterval)']);
    expect(pipelineIssues((s) => Object.assign(s.training, { precision: 'fp16', lossScale: { growthInterval: 0 } }))).toEqual([expect.stringMatching(/^spec\.training\.lossScale\.growthInterval: /)]);
    expect(pipelineIssues((s) => Object.assign(s.training, { precision: 'bf16', lossScale: { growthInterval: 10 } }))).toEqual(['spec.training.lossScale: scales fp16 losses; this run\'s precision is bf16 (bf16 trains without loss scaling)']);
    expect(() => parseFineTuneSpec(fineTune({ lossScale: { growthInterval: 10 } }))).toThrow(/spec\.train\.lossScale: scales fp16 losses; this run's precision is fp32/);
  });

  it('refuses half precision where it is not wired: BERT/T5 training, a memory GPT, a BERT LoRA stage', () => {
    const spam = { name: 'spam', corpus: { kind: 'spam-assassin' } };
    const bert = { model: { family: 'bert', preset: 'tiny-bert', config: { head: { kind: 'classification', num_labels: 2 } } }, dataset: spam, rounds: 1, innerSteps: 2, batchSize: 4, contextLength: 32 };
    expect(() => parseTrainingSpec({ ...bert, precision: 'fp16' })).toThrow(/spec\.precision: fp16 training is wired for plain GPT models so far, and this is a bert model; use fp32/);
    expect(() => parseTrainingSpec(training({ model: { preset: 'tiny-gpt', variant: { kind: 'memory', n_memory: 4, memory_layers: [0] } }, precision: 'bf16' }))).toThrow(/spec\.precision: bf16 training is wired for plain GPT models so far, and this is a memory-augmented GPT/);
    expect(parseTrainingSpec({ ...bert, precision: 'fp32' }).precision).toBe('fp32');
  });

  it('names the precision in cache keys only for fp16/bf16', () => {
    const key = JSON.stringify(['gpt', 1]);
    expect(precisionKey(key, {})).toBe(key);
    expect(precisionKey(key, { precision: 'fp32' })).toBe(key);
    const keys = [key, precisionKey(key, { precision: 'bf16' }), precisionKey(key, { precision: 'fp16' }), precisionKey(key, { precision: 'fp16', lossScale: { growthInterval: 10 } })];
    expect(new Set(keys).size).toBe(4);
    expect(precisionKey(key, { precision: 'fp16', lossScale: { growthInterval: 2000 } })).toBe(precisionKey(key, { precision: 'fp16' }));
  });
});
