// `activationCheckpointing` in the training spec (and a pipeline's `training`) and in a fine-tune's
// `train`: off by default, 'block' or a number of blocks per segment, and one line naming the
// field for anything else.

import fs from 'node:fs';
import path from 'node:path';
import { parseFineTuneSpec } from '../../spec/lora';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';

const MESSAGE = "must be 'off', 'block' or a number of blocks per recomputed segment (an integer from 1 to 1024)";
const tiny = () => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../examples/tiny.json'), 'utf8'));
const fineTune = (train: Record<string, unknown>) => ({
  base: { kind: 'checkpoint', prefix: 'runs/pre/global/r000002' },
  dataset: { kind: 'newest', prefix: 'datasets/fiction-' },
  lineage: 'fiction',
  train: { steps: 20, batchSize: 8, contextLength: 32, ...train },
});

describe('activationCheckpointing in specs', () => {
  it('is off unless asked for, and takes block or a number of blocks', () => {
    expect(parsePipelineSpec(tiny()).training.activationCheckpointing).toBe('off');
    for (const setting of ['block', 3]) {
      const s = tiny();
      s.training.activationCheckpointing = setting;
      expect(parsePipelineSpec(s).training.activationCheckpointing).toBe(setting);
      expect(parseFineTuneSpec(fineTune({ activationCheckpointing: setting })).train.activationCheckpointing).toBe(setting);
    }
    expect(parseFineTuneSpec(fineTune({})).train.activationCheckpointing).toBe('off');
  });

  it.each(['blocks', 0, 2.5, 2000, true])('refuses %p with one line naming the field', (bad) => {
    const s = tiny();
    s.training.activationCheckpointing = bad;
    let issues: string[] = [];
    try {
      parsePipelineSpec(s);
    } catch (err) {
      issues = (err as InvalidSpecError).issues;
    }
    expect(issues).toEqual([`spec.training.activationCheckpointing: ${MESSAGE}`]);
    expect(() => parseFineTuneSpec(fineTune({ activationCheckpointing: bad }))).toThrow(`invalid fine-tune spec: spec.train.activationCheckpointing: ${MESSAGE}`);
  });
});
