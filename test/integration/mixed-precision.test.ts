// `precision` through the durable paths, on a real Temporal dev server and S3 server. This machine
// has no GPU, so: a CPU worker refuses fp16 with one non-retryable line naming the field; a CPU
// worker started with TRUTHGPT_HALF_EMULATION=1 runs the emulation (engine/train/precision.ts:
// the half graph's rounding at every op output, fp32 kernels) through trainingWorkflow (DiLoCo,
// W = 2, 2 rounds: each shard resumes its optimizer state, loss scale included, from round 1's
// result) and through fineTuneWorkflow (GPT LoRA, 2 chunks resumed from the stored snapshot).

import { ftKeys, keys } from '../../artifacts/keys';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { AMP_STATE } from '../../engine/train/precision';
import { startTraining, waitTraining, type WaitOutcome } from '../../sdk/cli/run-commands';
import { parseFineTuneSpec } from '../../spec/lora';
import { TASK_QUEUES } from '../../spec/temporal-names';
import type { TrainingSpecInput } from '../../spec/training';
import type { FineTuneResult } from '../../workflows/fine-tune';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

const spec = (over: Partial<TrainingSpecInput> = {}): TrainingSpecInput => ({
  name: 'amp-tiny',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32, n_layer: 2 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  workers: 2,
  rounds: 2,
  innerSteps: 6,
  batchSize: 8,
  contextLength: 32,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 },
  evalBatches: 2,
  checkpoint: { everySteps: 3, everySeconds: 0 },
  ...over,
});

// Observed through trainingWorkflow: train |Δ| 5.1e-4, val 6.2e-4; LoRA steps other than 24-26 7e-4.
const TRAIN_TOL = 2e-3;
const VAL_TOL = 2e-3;

function completed(r: WaitOutcome) {
  if (r.status !== 'completed') throw new Error(`${r.workflowId} failed: ${JSON.stringify(r.error)}`);
  return r;
}

describe('a CPU worker without emulation', () => {
  let stack: InProcessStack;
  beforeAll(async () => {
    stack = await withInProcessStack({ bucket: 'truthgpt-amp-refuse', logLevel: 'WARN' });
  }, 180_000);
  afterAll(async () => {
    await stack?.close();
  });

  test('refuses precision fp16 at once, non-retryable, in one line naming the field and the CUDA worker it needs', async () => {
    const r = await waitTraining(stack.temporal.client, await startTraining(stack.temporal.client, spec({ precision: 'fp16', rounds: 1 }), { workflowId: 'amp-refused' }));
    expect(r.status).toBe('failed');
    if (r.status !== 'failed') return;
    expect(r.error.message).toMatch(/precision: fp16 training needs a CUDA worker \(TRUTHGPT_EP=cuda\); this worker runs the CPU execution provider/);
    // Not retried: one trainShard attempt per shard failed, the run failed on the first.
    const history = await stack.temporal.client.workflow.getHandle('amp-refused').fetchHistory();
    const failed = (history.events ?? []).filter((e) => e.activityTaskFailedEventAttributes);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.every((e) => e.activityTaskFailedEventAttributes?.failure?.applicationFailureInfo?.nonRetryable)).toBe(true);
  }, 300_000);
});

describe('a CPU worker with TRUTHGPT_HALF_EMULATION=1', () => {
  let stack: InProcessStack;
  beforeAll(async () => {
    stack = await withInProcessStack({ bucket: 'truthgpt-amp', logLevel: 'WARN', env: { TRUTHGPT_HALF_EMULATION: 'true' } });
  }, 180_000);
  afterAll(async () => {
    await stack?.close();
  });

  let fp32: Extract<WaitOutcome, { status: 'completed' }>;

  test('trainingWorkflow: an emulated fp16 run trains like fp32 within half-precision rounding; each shard carries its loss scale state across rounds', async () => {
    fp32 = completed(await waitTraining(stack.temporal.client, await startTraining(stack.temporal.client, spec(), { workflowId: 'amp-fp32' })));
    const half = completed(await waitTraining(stack.temporal.client, await startTraining(stack.temporal.client, spec({ precision: 'fp16' }), { workflowId: 'amp-fp16' })));
    const losses = (r: typeof fp32) => r.trainHistory.map((h) => h.loss);
    const dTrain = Math.max(...losses(half).map((l, i) => Math.abs(l - losses(fp32)[i])));
    const dVal = Math.max(...half.valHistory.map((v, i) => Math.abs(v.loss - fp32.valHistory[i].loss)));
    console.log(`fp16 emulated vs fp32 through trainingWorkflow: train ${losses(fp32).map((l) => l.toFixed(5)).join(' ')} vs ${losses(half).map((l) => l.toFixed(5)).join(' ')}; max |Δ| train ${dTrain.toExponential(2)}, val ${dVal.toExponential(2)}`);
    expect(half.steps).toBe(fp32.steps);
    expect(half.valHistory.at(-1)!.loss).toBeLessThan(half.valHistory[0].loss);
    // Observed: see the console line; the tolerance is a few times it.
    expect(dTrain).toBeLessThan(TRAIN_TOL);
    expect(dVal).toBeLessThan(VAL_TOL);
    expect(half.checkpoint.files['model.safetensors'].sha256).not.toBe(fp32.checkpoint.files['model.safetensors'].sha256);
    // Each shard's round-1 result holds the scale state, counted over both rounds' 12 steps: round 1
    // resumed it from round 0's result (a fresh state would count 6).
    for (const shard of [0, 1]) {
      const opt = readSafetensors(await stack.s3.store.getVerified(keys.shardFinal('amp-fp16', shard, 1), 'optimizer.safetensors')).tensors;
      const at = (k: string) => (opt.get(k)!.data as Float32Array)[0];
      expect([at(AMP_STATE.scaleExp), at(AMP_STATE.goodSteps) + at(AMP_STATE.skipped)]).toEqual([0, 12]);
    }
    // The fp32 run's state has no loss-scale entries.
    const plain = readSafetensors(await stack.s3.store.getVerified(keys.shardFinal('amp-fp32', 0, 1), 'optimizer.safetensors')).tensors;
    expect([...plain.keys()].some((k) => k.startsWith('@amp.'))).toBe(false);
  }, 600_000);

  test('fineTuneWorkflow: an emulated fp16 GPT LoRA run over 2 chunks trains like the fp32 one within half-precision rounding', async () => {
    const ft = (precision?: 'fp16') =>
      stack.temporal.client.workflow.execute('fineTuneWorkflow', {
        taskQueue: TASK_QUEUES.cpu,
        workflowId: `amp-lora-${precision ?? 'fp32'}`,
        args: [
          {
            spec: parseFineTuneSpec({
              name: 'amp-lora',
              base: { kind: 'checkpoint', prefix: fp32.checkpoint.prefix },
              dataset: { kind: 'spec', spec: { name: 'brown-fiction', corpus: { kind: 'brown', categories: ['mystery', 'science_fiction'] }, valFraction: 0.1 } },
              lora: { r: 4, lora_alpha: 8 },
              train: { steps: 40, stepsPerActivity: 20, batchSize: 8, contextLength: 32, optimizer: { optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } }, evalBatches: 4, checkpoint: { everySteps: 10, everySeconds: 0 }, ...(precision ? { precision } : {}) },
            }),
          },
        ],
      }) as Promise<FineTuneResult>;
    const [a, b] = [await ft(), await ft('fp16')];
    if (a.status !== 'completed' || b.status !== 'completed') throw new Error(`fine-tune failed: ${JSON.stringify([a, b])}`);
    const dTrain = Math.max(...b.trainHistory.map((h, i) => Math.abs(h.loss - a.trainHistory[i].loss)));
    console.log(`LoRA fp16 emulated: val ${b.valLossBefore.toFixed(5)} → ${b.valLossAfter.toFixed(5)} (fp32 ${a.valLossBefore.toFixed(5)} → ${a.valLossAfter.toFixed(5)}), train max |Δ| ${dTrain.toExponential(2)}`);
    const ampOf = async (prefix: string) => {
      const t = readSafetensors(await stack.s3.store.getVerified(prefix, 'optimizer.safetensors')).tensors;
      return Object.values(AMP_STATE).map((k) => (t.get(k)!.data as Float32Array)[0]);
    };
    const [c0, c1] = [await ampOf(ftKeys.chunkFinal('amp-lora-fp16', 0)), await ampOf(ftKeys.chunkFinal('amp-lora-fp16', 1))];
    const deltas = b.trainHistory.map((h, i) => h.loss - a.trainHistory[i].loss);
    console.log(`LoRA loss-scale state [scale_exp, good_steps, skipped] after chunk 0 ${c0}, chunk 1 ${c1}; train loss fp16 − fp32 per step: ${deltas.map((d) => d.toFixed(4)).join(' ')}`);
    expect(b.steps).toBe(40);
    // Chunk 1 resumed chunk 0's scale state from the stored snapshot: 20 good steps, then each skip
    // in chunk 1 halved the scale once (no growth below 2000 good steps).
    expect(c0).toEqual([0, 20, 0]);
    expect(c1[0]).toBe(-c1[2]);
    expect(c1[1] + c1[2]).toBeLessThanOrEqual(20);
    // Observed (see the console line): train losses at steps 24-26 +0.43, +0.44, +0.04 above fp32's
    // and one skipped step (overflow at step 24); every other step within 7e-4, the final val loss
    // within 8e-5. Not a wrong gradient: at the fp16 run's step-23 weights fp16 and fp32 gradients
    // agree (5.41e-2 vs 5.37e-2), but the adapters had drifted from the fp32 run's (Adam makes
    // lr-sized steps of rounding-sized differences in near-zero gradients; docs/mixed-precision.md).
    expect(deltas.filter((d) => Math.abs(d) > TRAIN_TOL).length).toBeLessThanOrEqual(3);
    expect(b.valLossAfter).toBeLessThan(b.valLossBefore);
    expect(Math.abs(b.valLossAfter - a.valLossAfter)).toBeLessThan(5e-4);
    expect(b.adapter.files['adapter_model.safetensors'].sha256).not.toBe(a.adapter.files['adapter_model.safetensors'].sha256);
  }, 600_000);
});
