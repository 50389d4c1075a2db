// `ortMemory` (ORT's memory pattern and arena for the step session, spec/ort-memory.ts) in the
// training spec (and a pipeline's `training`) and in a fine-tune's `train`: absent unless asked
// for, so parsed specs and compiled-step cache keys of existing specs stay as they were; unknown
// keys and non-booleans are refused in one line naming the path.

import { parseFineTuneSpec } from '../../spec/lora';
import { ortMemoryKey, ortMemorySession } from '../../spec/ort-memory';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';
import { parseTrainingSpec } from '../../spec/training';
import { fineTuneInput as fineTune, tinyPipeline as tiny, trainingInput as training } from '../helpers/spec-inputs';

function pipelineIssues(ortMemory: unknown): string[] {
  const s = tiny();
  s.training.ortMemory = ortMemory;
  try {
    parsePipelineSpec(s);
  } catch (err) {
    return (err as InvalidSpecError).issues;
  }
  return [];
}

describe('ortMemory in specs', () => {
  it('is absent unless asked for: existing specs parse to what they parsed to before', () => {
    expect('ortMemory' in parseTrainingSpec(training({}))).toBe(false);
    expect('ortMemory' in parsePipelineSpec(tiny()).training).toBe(false);
    expect('ortMemory' in parseFineTuneSpec(fineTune({})).train).toBe(false);
  });

  it('reaches the parsed training, pipeline and fine-tune specs; a missing field is on (ORT default)', () => {
    expect(parseTrainingSpec(training({ ortMemory: { pattern: false, arena: false } })).ortMemory).toEqual({ pattern: false, arena: false });
    expect(parseFineTuneSpec(fineTune({ ortMemory: { arena: false } })).train.ortMemory).toEqual({ pattern: true, arena: false });
    const s = tiny();
    s.training.ortMemory = { pattern: false };
    expect(parsePipelineSpec(s).training.ortMemory).toEqual({ pattern: false, arena: true });
  });

  it('refuses unknown keys with their path and the nearest key', () => {
    expect(pipelineIssues({ pattern: false, arenna: false })).toEqual(['spec.training.ortMemory.arenna: unknown key (did you mean arena?)']);
    expect(() => parseTrainingSpec(training({ ortMemory: { memPattern: false } }))).toThrow(/ortMemory\.memPattern: unknown key/);
    expect(() => parseFineTuneSpec(fineTune({ ortMemory: { enableCpuMemArena: false } }))).toThrow(/spec\.train\.ortMemory\.enableCpuMemArena: unknown key/);
  });

  it.each([['off'], [0], [null]])('refuses pattern %p with one line naming the field', (bad) => {
    const issues = pipelineIssues({ pattern: bad });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^spec\.training\.ortMemory\.pattern: /);
  });

  it('names the options in session options and cache keys only when they differ from the defaults', () => {
    const key = JSON.stringify(['gpt', 1]);
    expect(ortMemoryKey(key, undefined)).toBe(key);
    expect(ortMemoryKey(key, { pattern: true, arena: true })).toBe(key);
    expect(ortMemorySession(undefined)).toEqual({});
    expect(ortMemorySession({ pattern: true, arena: true })).toEqual({});
    const off = ortMemoryKey(key, { pattern: false, arena: false });
    const noArena = ortMemoryKey(key, { pattern: true, arena: false });
    expect(new Set([key, off, noArena, ortMemoryKey(key, { pattern: false, arena: true })]).size).toBe(4);
    expect(ortMemorySession({ pattern: true, arena: false })).toEqual({ memPattern: true, cpuArena: false });
    expect(ortMemorySession({ pattern: false, arena: false })).toEqual({ memPattern: false, cpuArena: false });
  });
});
