// `stepsPerRun` through the durable paths: trainingWorkflow and fineTuneWorkflow on a real Temporal
// dev server and S3 server, their activities compiling the K-step Loop graph (engine/train/ksteps.ts)
// and runShard running K steps per session.run with snapshots between runs. K steps per run are K
// single steps bit for bit, so each run must commit byte-for-byte the checkpoint of its K = 1 twin.

import { startTraining, waitTraining, type WaitOutcome } from '../../sdk/cli/run-commands';
import { parseFineTuneSpec, type FineTuneSpecInput } from '../../spec/lora';
import { TASK_QUEUES } from '../../spec/temporal-names';
import type { TrainingSpecInput } from '../../spec/training';
import type { FineTuneCompleted, FineTuneResult } from '../../workflows/fine-tune';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-ksteps', logLevel: 'WARN' });
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

// Two rounds of 10 inner steps on 2 workers: with K = 4 each round runs 4 + 4 + 2 steps, a snapshot
// after the first two runs, and the second round continues the carried optimizer state.
const spec = (stepsPerRun: number): TrainingSpecInput => ({
  name: 'ksteps-tiny',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32, n_layer: 2 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  workers: 2,
  rounds: 2,
  innerSteps: 10,
  batchSize: 8,
  contextLength: 32,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, schedule: { kind: 'warmup_cosine', warmup_steps: 5, decay_steps: 20, min_lr: 3e-4 }, grad_clip: 1 },
  evalBatches: 2,
  checkpoint: { everySteps: 8, everySeconds: 0 },
  stepsPerRun,
});

const sha = (ref: { files: Record<string, { sha256: string }> }, file: string) => ref.files[file].sha256;

let trained: Extract<WaitOutcome, { status: 'completed' }>;

test('training with stepsPerRun 4 commits the checkpoint of stepsPerRun 1, byte for byte', async () => {
  const results = [];
  for (const [id, K] of [
    ['ksteps-1', 1],
    ['ksteps-4', 4],
  ] as const) {
    const r = await waitTraining(stack.temporal.client, await startTraining(stack.temporal.client, spec(K), { workflowId: id }));
    if (r.status !== 'completed') throw new Error(`${id} failed: ${JSON.stringify(r.error)}`);
    results.push(r);
  }
  const [one, four] = results;
  trained = one;
  expect(four.steps).toBe(one.steps);
  expect(four.trainHistory.map((h) => [h.round, h.loss])).toEqual(one.trainHistory.map((h) => [h.round, h.loss]));
  expect(four.valHistory).toEqual(one.valHistory);
  expect(sha(four.checkpoint, 'model.safetensors')).toBe(sha(one.checkpoint, 'model.safetensors'));
  expect(sha(four.checkpoint, 'optimizer.safetensors')).toBe(sha(one.checkpoint, 'optimizer.safetensors'));
}, 300_000);

test('a LoRA fine-tune with train.stepsPerRun 4 commits the adapter of stepsPerRun 1, byte for byte', async () => {
  const ft = (stepsPerRun: number): FineTuneSpecInput => ({
    name: `ksteps-lora-${stepsPerRun}`,
    base: { kind: 'checkpoint', prefix: trained.checkpoint.prefix },
    dataset: { kind: 'spec', spec: { name: 'brown-mystery', corpus: { kind: 'brown', categories: ['mystery'] }, valFraction: 0.1 } },
    lora: { r: 4, lora_alpha: 8, target_modules: 'all-linear' },
    // Two activities of 10 steps: runs of 4 + 4 + 2 in each, a snapshot at step 8 of the first.
    train: { steps: 20, stepsPerActivity: 10, batchSize: 8, contextLength: 32, optimizer: { optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 }, grad_clip: 1 }, evalBatches: 4, checkpoint: { everySteps: 8, everySeconds: 0 }, stepsPerRun },
  });
  const run = async (K: number): Promise<FineTuneCompleted> => {
    const r = (await stack.temporal.client.workflow.execute('fineTuneWorkflow', { taskQueue: TASK_QUEUES.cpu, workflowId: `ksteps-lora-${K}`, args: [{ spec: parseFineTuneSpec(ft(K)) }] })) as FineTuneResult;
    if (r.status !== 'completed') throw new Error(`fine-tune K=${K}: ${JSON.stringify(r)}`);
    return r;
  };
  const one = await run(1);
  const four = await run(4);
  expect(four.trainHistory).toEqual(one.trainHistory);
  expect(four.trainHistory).toHaveLength(20);
  expect(four.valLossAfter).toBe(one.valLossAfter);
  expect(sha(four.adapter, 'adapter_model.safetensors')).toBe(sha(one.adapter, 'adapter_model.safetensors'));
  expect(sha(four.merged, 'model.safetensors')).toBe(sha(one.merged, 'model.safetensors'));
}, 300_000);
