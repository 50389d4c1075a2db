// Small spec inputs the tests of one spec field each start from (test/spec/precision.test.ts,
// test/spec/ort-memory.test.ts): the tiny example pipeline, a tiny training spec and a fine-tune.

import fs from 'node:fs';
import path from 'node:path';

/** examples/tiny.json, parsed afresh (callers edit it). */
export const tinyPipeline = () => JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../examples/tiny.json'), 'utf8'));

/** A tiny-gpt training spec on Brown humor, with `extra` on top. */
export const trainingInput = (extra: Record<string, unknown>) => ({
  model: { preset: 'tiny-gpt' },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] } },
  rounds: 1,
  innerSteps: 2,
  batchSize: 2,
  contextLength: 16,
  ...extra,
});

/** A fine-tune of a stored checkpoint on the newest fiction dataset, with `train` on top of its train section. */
export const fineTuneInput = (train: Record<string, unknown>) => ({
  base: { kind: 'checkpoint', prefix: 'runs/pre/global/r000002' },
  dataset: { kind: 'newest', prefix: 'datasets/fiction-' },
  lineage: 'fiction',
  train: { steps: 20, batchSize: 8, contextLength: 32, ...train },
});
