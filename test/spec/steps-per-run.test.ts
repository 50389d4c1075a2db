// `stepsPerRun` (K optimizer steps per session.run) in the training spec (and a pipeline's
// `training`) and in a fine-tune's `train`: 1 by default; K must divide checkpoint.everySteps (a
// snapshot can only be taken between runs) and not exceed the steps of one activity, each refused
// with one line naming the field.

import fs from 'node:fs';
import path from 'node:path';
import { parseFineTuneSpec } from '../../spec/lora';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';

const tiny = () => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../examples/tiny.json'), 'utf8'));
const fineTune = (train: Record<string, unknown>) => ({
  base: { kind: 'checkpoint', prefix: 'runs/pre/global/r000002' },
  dataset: { kind: 'newest', prefix: 'datasets/fiction-' },
  lineage: 'fiction',
  train: { steps: 20, batchSize: 8, contextLength: 32, ...train },
});

function pipelineIssues(training: Record<string, unknown>): string[] {
  const s = tiny();
  Object.assign(s.training, training);
  try {
    parsePipelineSpec(s);
  } catch (err) {
    return (err as InvalidSpecError).issues;
  }
  return [];
}

describe('stepsPerRun in specs', () => {
  it('is 1 unless asked for, and reaches the parsed training and fine-tune specs', () => {
    expect(parsePipelineSpec(tiny()).training.stepsPerRun).toBe(1);
    expect(parseFineTuneSpec(fineTune({})).train.stepsPerRun).toBe(1);
    const s = tiny();
    s.training.stepsPerRun = 5;
    s.training.checkpoint = { everySteps: 10 };
    expect(parsePipelineSpec(s).training.stepsPerRun).toBe(5);
    expect(parseFineTuneSpec(fineTune({ stepsPerRun: 4, checkpoint: { everySteps: 8 } })).train.stepsPerRun).toBe(4);
    // everySteps 0 (snapshots by time only, which are taken between runs anyway) takes any K.
    expect(parseFineTuneSpec(fineTune({ stepsPerRun: 3, checkpoint: { everySteps: 0 } })).train.stepsPerRun).toBe(3);
  });

  it('must divide checkpoint.everySteps: the default 25 with K = 4 is refused in one line naming the field', () => {
    expect(pipelineIssues({ stepsPerRun: 4 })).toEqual(['spec.training.stepsPerRun: must divide checkpoint.everySteps (25 % 4 = 1): a snapshot can only be taken between runs of 4 steps']);
    expect(() => parseFineTuneSpec(fineTune({ stepsPerRun: 4, checkpoint: { everySteps: 10 } }))).toThrow('invalid fine-tune spec: spec.train.stepsPerRun: must divide checkpoint.everySteps (10 % 4 = 2): a snapshot can only be taken between runs of 4 steps');
  });

  it('must not exceed the steps one activity makes', () => {
    expect(pipelineIssues({ stepsPerRun: 20, checkpoint: { everySteps: 20 } })).toEqual(['spec.training.stepsPerRun: must not exceed innerSteps (20 > 10): one run never makes more steps than the activity']);
    expect(() => parseFineTuneSpec(fineTune({ stepsPerRun: 8, stepsPerActivity: 4, checkpoint: { everySteps: 8 } }))).toThrow('spec.train.stepsPerRun: must not exceed stepsPerActivity (8 > 4)');
  });

  it.each([0, 2.5, 2000, '4'])('refuses %p with one line naming the field', (bad) => {
    const issues = pipelineIssues({ stepsPerRun: bad });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^spec\.training\.stepsPerRun: /);
  });
});
