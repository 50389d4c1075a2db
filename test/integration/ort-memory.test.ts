// `ortMemory` through the durable path: trainingWorkflow on a real Temporal dev server and S3
// server, its trainShard activities compiling the step session with the spec's ORT memory options
// (activities/training.ts). The options change allocation, not arithmetic, so the run must commit
// byte-for-byte the checkpoint of the same run without them; and since a spec without them keeps
// its old cache key, the run with them must build a session of its own with both options off.

import * as ort from 'onnxruntime-node';
import { startTraining, waitTraining } from '../../sdk/cli/run-commands';
import type { TrainingSpecInput } from '../../spec/training';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-ortmem', logLevel: 'WARN' });
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

const spec = (ortMemory?: TrainingSpecInput['ortMemory']): TrainingSpecInput => ({
  name: 'ortmem-tiny',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32, n_layer: 2 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  workers: 2,
  rounds: 1,
  innerSteps: 6,
  batchSize: 8,
  contextLength: 32,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 },
  evalBatches: 2,
  checkpoint: { everySteps: 3, everySeconds: 0 },
  activationCheckpointing: 'block',
  ...(ortMemory ? { ortMemory } : {}),
});

test('a run with ortMemory off commits the default run checkpoint byte for byte, from a session built with both options off', async () => {
  const create = jest.spyOn(ort.InferenceSession, 'create');
  const optionsOf = () => create.mock.calls.map((c) => c[1] as ort.InferenceSession.SessionOptions | undefined);
  try {
    const off = (o?: ort.InferenceSession.SessionOptions) => o?.enableMemPattern === false && o?.enableCpuMemArena === false;
    const results = [];
    const sessions: (ort.InferenceSession.SessionOptions | undefined)[][] = [];
    for (const [id, ortMemory] of [
      ['ortmem-default', undefined],
      ['ortmem-off', { pattern: false, arena: false }],
    ] as const) {
      create.mockClear();
      const r = await waitTraining(stack.temporal.client, await startTraining(stack.temporal.client, spec(ortMemory), { workflowId: id }));
      if (r.status !== 'completed') throw new Error(`${id} failed: ${JSON.stringify(r.error)}`);
      results.push(r);
      sessions.push(optionsOf());
    }
    // The default run set neither option; the other built its step session (one per worker
    // process: the workers share this one) with both off, and its evaluation sessions kept the defaults.
    expect(sessions[0].length).toBeGreaterThan(0);
    expect(sessions[0].some((o) => o && ('enableMemPattern' in o || 'enableCpuMemArena' in o))).toBe(false);
    expect(sessions[1].filter(off)).toHaveLength(1);
    const [base, r] = results;
    expect(r.steps).toBe(base.steps);
    expect(r.trainHistory.map((h) => [h.round, h.loss])).toEqual(base.trainHistory.map((h) => [h.round, h.loss]));
    expect(r.valHistory).toEqual(base.valHistory);
    expect(r.checkpoint.files['model.safetensors'].sha256).toBe(base.checkpoint.files['model.safetensors'].sha256);
    expect(r.checkpoint.files['optimizer.safetensors'].sha256).toBe(base.checkpoint.files['optimizer.safetensors'].sha256);
  } finally {
    create.mockRestore();
  }
}, 300_000);
