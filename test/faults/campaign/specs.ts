// The campaign's spec variants: tiny pipelines (training + an fp32 evaluation, no quantization)
// that finish in seconds on one core. Each variant runs once without a fault; that run's training
// checkpoint is the reference every faulted run of the variant must equal, byte for byte.

import type { PipelineSpecInput } from '../../../sdk';

export interface Variant {
  id: string;
  spec: PipelineSpecInput;
  /** A variant whose every run must fail with this vocabulary type (its reference fails too). */
  expectFailure?: 'NonFiniteLoss';
}

const model = { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } } as const;
const evaluation = { batches: 2, speedRuns: 1, warmup: 0, calibrationBatches: 1, samples: { prompts: ['The '], maxNewTokens: 4 } };

function pipeline(name: string, training: Partial<PipelineSpecInput['training']> & { workers: number }, datasetName = 'faults-humor'): PipelineSpecInput {
  return {
    name,
    model,
    dataset: { name: datasetName, corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
    training: {
      rounds: 2,
      innerSteps: 30,
      batchSize: 4,
      contextLength: 32,
      optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 }, grad_clip: 1 },
      evalBatches: 2,
      // Snapshots every 10 steps: a killed shard resumes mid-round.
      checkpoint: { everySteps: 10, everySeconds: 0 },
      // How soon a dead worker's activity is retried elsewhere.
      heartbeatTimeoutSeconds: 4,
      ...training,
    },
    quantization: [],
    evaluation,
  };
}

export const VARIANTS: Variant[] = [
  { id: 'one-worker', spec: pipeline('faults-one', { workers: 1 }) },
  { id: 'diloco-2', spec: pipeline('faults-two', { workers: 2 }) },
  {
    // A learning rate no model survives: the loss leaves the finite numbers within a few steps.
    id: 'diverging',
    spec: pipeline('faults-diverge', { workers: 1, optimizer: { optimizer: { kind: 'sgd', lr: 1e6 } } }),
    expectFailure: 'NonFiniteLoss',
  },
];

/** The same pipeline on a dataset of another name: same tokens, so the same checkpoint bytes, but built afresh. */
export function withDatasetName(spec: PipelineSpecInput, name: string): PipelineSpecInput {
  return { ...spec, dataset: { ...spec.dataset!, name } };
}
