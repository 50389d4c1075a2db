// The training spec the crash tests kill workers in: a tiny GPT on Brown humor, rounds of H = 600
// steps with a snapshot every 100, so each trainShard runs for seconds (long enough to kill it in the
// middle, and to see it resume from a snapshot rather than from the round's start). Used by
// test/faults/training-faults.test.ts, test/integration/hosts.test.ts and bench/worker-lost.ts.

import type { TrainingSpecInput } from '../../spec/training';

export const LONG_SHARD_STEPS = 600;
export const LONG_SHARD_SNAPSHOT_EVERY = 100;

export function longShardSpec(o: { name: string; workers: number; heartbeatTimeoutSeconds: number }): TrainingSpecInput {
  return {
    name: o.name,
    model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
    dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
    workers: o.workers,
    rounds: 2,
    innerSteps: LONG_SHARD_STEPS,
    batchSize: 4,
    contextLength: 32,
    optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 }, grad_clip: 1 },
    outer: { kind: 'average' },
    evalBatches: 4,
    checkpoint: { everySteps: LONG_SHARD_SNAPSHOT_EVERY, everySeconds: 0 },
    heartbeatTimeoutSeconds: o.heartbeatTimeoutSeconds,
  };
}
