// A memory-augmented GPT (`model.variant: { kind: memory, ... }`, engine/models/memory-slots.ts)
// through pipelineWorkflow on a real Temporal dev server and S3 server: two DiLoCo workers train
// it on Brown humor, the val loss falls, the committed checkpoint holds the memory slots and the
// cross-attention weights (and the variant in checkpoint.json); GPT's post-training exports it with
// its slots (engine/models/export.ts), quantizes it int8 behind the perplexity gate, evaluates both
// and writes the report; `generate` decodes from the checkpoint; the plain-GPT readers (HF export,
// a LoRA base, model.from) refuse it. A cancelled run retried from its checkpoint ends with the
// same weights, bit for bit.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointWeights, readCheckpoint } from '../../artifacts/checkpoints';
import { Decoder } from '../../engine/eval';
import { loadModel } from '../../engine/graph/onnx';
import { decoderInfo } from '../../engine/models/export';
import { exportHfModel } from '../../artifacts/hf-models';
import { loadBase, resolveModel } from '../../artifacts/models';
import { resolveModelFrom } from '../../sdk/model-from';
import { TruthGPT, type PipelineResult, type PipelineSpecInput } from '../../sdk';
import type { StageOutcome } from '../../workflows/pipeline';
import { pauseCancelRetry } from '../helpers/pause-cancel-retry';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;
let tg: TruthGPT;
let first: PipelineResult;


beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-memory', logLevel: 'WARN' });
  tg = await TruthGPT.connect({ config: stack.config });
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
});

// Byte vocabulary, 2 layers × 32 wide, 8 memory slots read by layer 1.
const spec: PipelineSpecInput = {
  name: 'memory-pipe',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32, n_layer: 2 }, variant: { kind: 'memory', n_memory: 8, memory_layers: [1] } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  training: {
    workers: 2,
    rounds: 3,
    innerSteps: 15,
    batchSize: 8,
    contextLength: 32,
    optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 }, grad_clip: 1 },
    evalBatches: 2,
    checkpoint: { everySteps: 5, everySeconds: 0 },
  },
  quantization: [{ method: 'int8-dynamic', maxPplIncrease: 0.05 }],
  evaluation: { batches: 2, speedRuns: 2, warmup: 1, calibrationBatches: 2, samples: { prompts: ['The '], maxNewTokens: 8 } },
};

test('a memory-augmented GPT trains through the pipeline, its checkpoint holds the slots and cross-attention, and post-training exports, quantizes and evaluates it', async () => {
  const run = await tg.startPipeline(spec);
  first = await run.result();
  expect(first.training.rounds).toBe(3);
  expect(first.training.tokensSeen).toBe(3 * 2 * 15 * 8 * 32);
  const losses = first.training.valHistory.map((v) => v.loss);
  // Untrained: ln(259) ≈ 5.56. Seen: 5.5556 → 3.4578 → 3.1932 → 3.1033 (a fall of 2.45).
  expect(losses[0]).toBeGreaterThan(5.3);
  expect(losses[losses.length - 1]).toBeLessThan(losses[0] - 1.5);
  expect(first.stages.map((s: StageOutcome) => [s.stage, s.status])).toEqual([
    ['train', 'done'],
    ['lora', 'skipped'],
    ['postTraining', 'done'],
  ]);
  // The fp32 export's val perplexity is the training's last evaluation of the same weights on the
  // whole val split; the int8 variant is held to +5%.
  const fp32 = first.variants.find((v) => v.name === 'fp32')!;
  const int8 = first.variants.find((v) => v.name === 'int8')!;
  expect(first.variants.map((v) => v.name).sort()).toEqual(['fp32', 'int8']);
  console.log(`memory GPT post-training: fp32 ppl ${fp32.ppl.toFixed(4)} (val loss ${Math.log(fp32.ppl).toFixed(4)}, training's last ${losses[losses.length - 1].toFixed(4)}), int8 ppl ${int8.ppl.toFixed(4)} published ${int8.published}`);
  // Seen: ln 22.2720 = 3.1033, the training's last val loss to 4 digits; int8 22.2729.
  expect(Math.abs(Math.log(fp32.ppl) - losses[losses.length - 1])).toBeLessThan(1e-3);
  expect(int8.published).toBe(true);
  expect((await stack.s3.store.list(first.reportKey)).length).toBeGreaterThan(0);
  const page = (await stack.s3.store.get(first.reportKey)).toString('utf8');
  expect(page).toContain('memory');

  const prefix = first.training.checkpoint.prefix;
  expect(prefix).toBe(`runs/${run.workflowId}/global/r000003`);
  const ck = await readCheckpoint(stack.s3.store, prefix);
  expect(ck.state.modelConfig.variant).toEqual({ kind: 'memory', n_memory: 8, memory_layers: [1] });
  const names = [...ck.weights.keys()];
  expect(names).toEqual(expect.arrayContaining(['memory.slots', 'h.1.ln_cross_attn.weight', 'h.1.crossattention.q_attn.weight', 'h.1.crossattention.c_attn.weight', 'h.1.crossattention.c_proj.weight']));
  expect(names.some((n) => n.startsWith('h.0.crossattention'))).toBe(false);
  expect(ck.weights.get('memory.slots')!.dims).toEqual([8, 32]);
  // The slots and the cross-attention were trained: they moved from the seeded init of round 0.
  const init = await readCheckpoint(stack.s3.store, `runs/${run.workflowId}/global/r000000`);
  const moved = (name: string) => {
    const a = ck.weights.get(name)!.data as Float32Array;
    const b = init.weights.get(name)!.data as Float32Array;
    return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
  };
  // Seen: largest change 0.084 (slots), 0.037 (q_attn); their init std is 0.02.
  expect(moved('memory.slots')).toBeGreaterThan(0.01);
  expect(moved('h.1.crossattention.q_attn.weight')).toBeGreaterThan(0.01);

  // `truthgpt generate --model <checkpoint>` exports the checkpoint with its slots: greedy decoding
  // from it equals decoding with the published fp32 model, past block_size (32).
  const fromCheckpoint = await resolveModel(stack.s3.store, prefix);
  const published = await resolveModel(stack.s3.store, fp32.key);
  const decode = async (bytes: Uint8Array) => {
    const d = await Decoder.create(loadModel(bytes), decoderInfo(fromCheckpoint.config, true), { intraOpThreads: 1 });
    const out = await d.generate([84, 104, 101, 32], { maxNewTokens: 40 });
    await d.release();
    return out;
  };
  const tokens = await decode(fromCheckpoint.bytes);
  expect(tokens).toHaveLength(40);
  expect(await decode(published.bytes)).toEqual(tokens);
  // A reader of plain GPTs (a LoRA base, HF export) refuses it instead of dropping the slots.
  const refusal = `checkpoint ${prefix}: a memory variant of GPT (modelConfig.variant); its training, post-training (ONNX export, quantization, evaluation) and generation are wired, not HF export, LoRA or starting from it`;
  await expect(checkpointWeights(stack.s3.store, prefix)).rejects.toThrow(refusal);
  await expect(exportHfModel(stack.s3.store, prefix, fs.mkdtempSync(path.join(os.tmpdir(), 'memory-export-')))).rejects.toThrow(`export ${prefix}: ${prefix}: a memory variant of GPT`);
  await expect(loadBase(stack.s3.store, { kind: 'checkpoint', prefix })).rejects.toThrow(`spec.base.prefix: checkpoint ${prefix}: a memory variant of GPT`);
  await expect(resolveModelFrom(stack.s3.store, { model: { from: prefix } })).rejects.toThrow(`spec.model.from: ${prefix} holds a memory-augmented GPT (modelConfig.variant); starting a run from it is not wired yet`);
}, 300_000);

test('cancelled mid-training, a memory-augmented GPT is retried from its checkpoint and ends with the same weights', async () => {
  const { workflowId, pausedAt, retried: r } = await pauseCancelRetry(tg, spec);
  expect(r.training.resumedFrom).toEqual({ runId: workflowId, round: pausedAt });
  expect(r.training.rounds).toBe(3);
  expect(r.training.checkpoint.files['model.safetensors'].sha256).toBe(first.training.checkpoint.files['model.safetensors'].sha256);
}, 300_000);
