// `activationCheckpointing` through the durable path: trainingWorkflow on a real Temporal dev
// server and S3 server, its trainShard activities compiling the step with the spec's setting
// (activities/training.ts → compileLmTrainStep). Recomputing the blocks changes no arithmetic, so
// the run must commit byte-for-byte the checkpoint of the same run without it.

import { startTraining, waitTraining } from '../../sdk/cli/run-commands';
import type { TrainingSpecInput } from '../../spec/training';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-ckpt', logLevel: 'WARN' });
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

const spec = (activationCheckpointing: TrainingSpecInput['activationCheckpointing']): TrainingSpecInput => ({
  name: 'ckpt-tiny',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32, n_layer: 3 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  workers: 2,
  rounds: 1,
  innerSteps: 8,
  batchSize: 8,
  contextLength: 32,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 },
  evalBatches: 2,
  checkpoint: { everySteps: 4, everySeconds: 0 },
  activationCheckpointing,
});

test('a run with activationCheckpointing commits the checkpoint of the run without it, byte for byte', async () => {
  const results = [];
  for (const [id, setting] of [
    ['ckpt-off', 'off'],
    ['ckpt-block', 'block'],
    ['ckpt-two', 2],
  ] as const) {
    const r = await waitTraining(stack.temporal.client, await startTraining(stack.temporal.client, spec(setting), { workflowId: id }));
    if (r.status !== 'completed') throw new Error(`${id} failed: ${JSON.stringify(r.error)}`);
    results.push(r);
  }
  const [off, ...on] = results;
  for (const r of on) {
    expect(r.steps).toBe(off.steps);
    expect(r.trainHistory.map((h) => [h.round, h.loss])).toEqual(off.trainHistory.map((h) => [h.round, h.loss]));
    expect(r.valHistory).toEqual(off.valHistory);
    expect(r.checkpoint.files['model.safetensors'].sha256).toBe(off.checkpoint.files['model.safetensors'].sha256);
    expect(r.checkpoint.files['optimizer.safetensors'].sha256).toBe(off.checkpoint.files['optimizer.safetensors'].sha256);
  }
}, 300_000);
