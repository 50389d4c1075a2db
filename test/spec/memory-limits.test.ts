// Issue 15, part 2: a spec that passes validation must not be able to freeze the stack. Sizes have
// ranges, and a training spec is refused at parse time when its memory estimate is above the worker
// memory limit (TRUTHGPT_WORKER_MEMORY_GB, default 16 GiB), naming the estimate and the limit.

import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../infra/config';
import { DEFAULT_WORKER_MEMORY_GB, LOOP_LIMITS, specLimits } from '../../spec/limits';
import { parseFineTuneSpec } from '../../spec/lora';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';
import { parseTrainingSpec } from '../../spec/training';

type Spec = Record<string, any>;
const tiny = (): Spec => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../examples/tiny.json'), 'utf8'));

function issues(spec: Spec, limits?: ReturnType<typeof specLimits>): string[] {
  try {
    parsePipelineSpec(spec, limits);
  } catch (err) {
    if (err instanceof InvalidSpecError) return err.issues;
    throw err;
  }
  return [];
}

test('examples/tiny.json with n_layer 10000 is refused at parse time, naming the estimate and the limit', () => {
  const s = tiny();
  s.model.config.n_layer = 10_000;
  expect(issues(s)).toEqual([
    'spec.model.config.n_layer: Too big: expected number to be <=1024',
    'spec.model: this model needs about 43.9 GiB per training step (n_layer 10000 × n_embd 32, batch 8 × context 32), above the worker memory limit of 16 GiB (TRUTHGPT_WORKER_MEMORY_GB)',
  ]);
});

test('a model within the size ranges is held to the configured worker memory', () => {
  const s = tiny();
  s.model.config.n_layer = 1000; // about 4.5 GiB
  expect(issues(s)).toEqual([]);
  expect(issues(s, specLimits(2))).toEqual([
    'spec.model: this model needs about 4.5 GiB per training step (n_layer 1000 × n_embd 32, batch 8 × context 32), above the worker memory limit of 2 GiB (TRUTHGPT_WORKER_MEMORY_GB)',
  ]);
  expect(issues(s, specLimits(0.5))[0]).toMatch(/above the worker memory limit of 0\.5 GiB/);
  // A bare TrainingSpec too.
  const { name, model, dataset, training } = s;
  expect(() => parseTrainingSpec({ name, model, dataset, ...training }, specLimits(2))).toThrow(/spec\.model: this model needs about 4\.5 GiB per training step/);
});

test('the limit comes from TRUTHGPT_WORKER_MEMORY_GB through the config, 16 GiB by default', () => {
  expect(loadConfig({}).runtime.workerMemoryGb).toBe(DEFAULT_WORKER_MEMORY_GB);
  expect(loadConfig({ TRUTHGPT_WORKER_MEMORY_GB: '64' }).runtime.workerMemoryGb).toBe(64);
  expect(() => loadConfig({ TRUTHGPT_WORKER_MEMORY_GB: 'lots' })).toThrow(/TRUTHGPT_WORKER_MEMORY_GB="lots": expected a size in GiB/);
});

test('model and loop sizes have integer ranges', () => {
  const s = tiny();
  Object.assign(s.model.config, { n_embd: 2 ** 17, n_head: 2048, vocab_size: 2 ** 22, block_size: 2 ** 21 });
  Object.assign(s.training, { rounds: LOOP_LIMITS.rounds + 1, innerSteps: LOOP_LIMITS.innerSteps + 1, batchSize: LOOP_LIMITS.batchSize + 1 });
  const lines = issues(s);
  for (const [field, max] of [
    ['model.config.vocab_size', 2097152],
    ['model.config.block_size', 1048576],
    ['model.config.n_head', 1024],
    ['model.config.n_embd', 65536],
    ['training.rounds', 100000],
    ['training.innerSteps', 1000000],
    ['training.batchSize', 65536],
  ] as const) {
    expect(lines).toContain(`spec.${field}: Too big: expected number to be <=${max}`);
  }
  expect(issues({ ...tiny(), training: { ...tiny().training, rounds: 1.5 } })).toEqual(['spec.training.rounds: Invalid input: expected int, received number']);
});

test('batchSize × contextLength is bounded, for training and fine-tunes', () => {
  const s = tiny();
  Object.assign(s.model.config, { block_size: 2048 });
  Object.assign(s.training, { batchSize: 1024, contextLength: 2048 });
  expect(issues(s)).toContain('spec.training.batchSize: batchSize × contextLength must be at most 1048576 tokens per step (1024 × 2048 = 2097152)');
  expect(() =>
    parseFineTuneSpec({ base: { kind: 'checkpoint', prefix: 'p' }, dataset: { kind: 'ref', prefix: 'd' }, train: { steps: 1, batchSize: 4096, contextLength: 512 } }),
  ).toThrow('spec.train.batchSize: batchSize × contextLength must be at most 1048576 tokens per step (4096 × 512 = 2097152)');
});
