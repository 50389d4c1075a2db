// LoRA on a T5 seq2seq model through the product (issue 12), on a real Temporal dev server, a real
// S3 server and both pool workers: the tiny T5 of test/fixtures/t5-tiny is imported, and a pipeline
// starts from it (`model.from`, no pretraining rounds), trains adapters on HF's T5 Linear layers
// (all-linear: q, k, v, o, wi, wo) in two durable chunks on source/target pairs (a copy task over
// the tokenizer's whole words, as in t5-pipeline.test.ts), merges them, writes PEFT SEQ_2_SEQ_LM
// files, evaluates the merged model (target loss, exact match), quantizes it int8 gated on exact
// match, and writes the run report. With TRUTHGPT_KEEP_T5_LORA=<folder> it also leaves the exported
// base, the adapter and our merged logits there for test/fixtures/t5-tiny/check_t5_lora_peft.py
// (observed: PeftModel.from_pretrained on the exported base within 4.8e-6 of our merged logits over
// 16 val examples; peft 0.21.2, transformers 5.24.0, torch 2.15.0). A second test shuts the GPU
// worker down mid-chunk and checks that the retry resumes from the last snapshot, bit-identical.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { TrainT5LoraResult } from '../../activities/t5-lora';
import { checkpointWeightsAnyFamily } from '../../artifacts/checkpoints';
import { newestDataset, ShardCache } from '../../artifacts/datasets';
import { ftKeys } from '../../artifacts/keys';
import { REPORT_JSON } from '../../artifacts/models';
import { seq2seqBatch } from '../../engine/data/t5-span';
import { serializeModel } from '../../engine/graph/onnx';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE } from '../../engine/lora';
import { exportT5 } from '../../engine/models/export-bert-t5';
import type { T5Config } from '../../engine/models/t5';
import type { FamilyReport } from '../../engine/report';
import { createSession } from '../../engine/runtime';
import { exportModel, importModel, TruthGPT, type PipelineSpecInput } from '../../sdk';
import { createPoolWorker } from '../../workers/worker';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 't5-tiny');

let stack: InProcessStack;
let tg: TruthGPT;
let tmp: string;
let imported: Awaited<ReturnType<typeof importModel>>;
let corpus: { kind: 'jsonl'; path: string; textField: string; targetField: string };

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-t5-lora-pipeline' });
  tg = await TruthGPT.connect({ config: stack.config });
  // A fixed folder: documents are split into train and val by a hash of their source (file:line).
  tmp = path.join(os.tmpdir(), 'truthgpt-t5-lora-pipeline');
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  imported = await importModel(path.join(FIXTURE, 'model'), { name: 't5-tiny', config: stack.config });
  // A copy task over the tokenizer's 56 whole words ("say cold sky" → "cold sky"), which a model can
  // answer for pairs it never saw.
  const vocab = (JSON.parse(fs.readFileSync(path.join(FIXTURE, 'model', 'tokenizer.json'), 'utf8')) as { model: { vocab: [string, number][] } }).model.vocab;
  const words = vocab.map(([piece]) => piece).filter((p) => p.startsWith('\u2581') && p.length > 2).map((p) => p.slice(1));
  expect(words).toHaveLength(56);
  const file = path.join(tmp, 'copies.jsonl');
  const copies = Array.from({ length: 200 }, (_, i) => [words[(i * 7) % 56], words[(i * 13 + Math.floor(i / 56)) % 56]].join(' '));
  fs.writeFileSync(file, copies.map((w) => JSON.stringify({ input: `say ${w}`, target: w })).join('\n') + '\n');
  corpus = { kind: 'jsonl', path: file, textField: 'input', targetField: 'target' };
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('T5 seq2seq LoRA in a pipeline: adapters train (loss falls), PEFT files, merged model evaluated (exact match), int8 gated, report written', async () => {
  const spec: PipelineSpecInput = {
    name: 't5-lora',
    model: { from: imported.ref, task: 'seq2seq' },
    dataset: { name: 'copies', corpus, valFraction: 0.25 },
    // No pretraining: the imported model is evaluated once (round 0), then the LoRA stage tunes it.
    // Sources are 4 tokens with </s> ("say" and two words), targets 3.
    training: { workers: 1, rounds: 0, innerSteps: 1, batchSize: 8, contextLength: 8, targetLength: 4, evalBatches: 8 },
    lora: {
      lora: { r: 16, lora_alpha: 32, target_modules: 'all-linear' },
      train: { steps: 480, stepsPerActivity: 240, batchSize: 8, contextLength: 8, optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0 } }, checkpoint: { everySteps: 80, everySeconds: 60 } },
    },
    quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 0.1 }],
  };
  const r = await (await tg.startPipeline(spec)).result();
  const before = r.training.valHistory[0];
  const l = r.t5Lora!;
  console.log(
    `T5 LoRA (r=16, all-linear, 480 steps in 2 chunks): train loss by chunk ${l.chunkLoss.map((c) => `${c.first.toFixed(4)} → ${c.last.toFixed(4)}`).join(', ')}; ` +
      `val loss ${before.loss.toFixed(4)} → ${l.lossAfter.toFixed(4)} (ppl ${before.perplexity.toFixed(2)} → ${l.perplexityAfter.toFixed(2)}), exact match ${(100 * before.exactMatch!).toFixed(1)}% → ${(100 * l.exactMatchAfter).toFixed(1)}% over ${l.examples} val examples; ` +
      `${l.trainable} trainable of ${l.total}; stage: ${r.stages[1].summary}`,
  );
  expect(r.stages.map((s) => [s.stage, s.status])).toEqual([['train', 'done'], ['lora', 'done'], ['postTraining', 'done']]);
  expect(l.targetModules).toEqual(['k', 'o', 'q', 'v', 'wi', 'wo']);
  expect(l.chunkLoss).toHaveLength(2);
  expect(l.chunkLoss[1].last).toBeLessThan(0.5 * l.chunkLoss[0].first); // observed 5.3375 → 0.8688 (load 7-11)
  expect(l.lossAfter).toBeLessThan(before.loss);
  expect(l.examples).toBe(before.examples);
  expect(l.exactMatchAfter).toBeGreaterThan(before.exactMatch!); // observed 0/43 → 33/43 (val loss 5.329 → 1.274)
  expect(l.trainable).toBeLessThan(l.total);

  // The PEFT files: SEQ_2_SEQ_LM, HF's T5 module names, one A and one B per adapted Linear.
  const store = stack.s3.store;
  const adapter = (await store.readManifest(l.adapterPrefix))!;
  const adapterFiles = new Map(await Promise.all(adapter.files.map(async (f) => [f.name, await store.get(f.key)] as const)));
  const config = JSON.parse(Buffer.from(adapterFiles.get(ADAPTER_CONFIG_FILE)!).toString('utf8')) as Record<string, unknown>;
  expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'SEQ_2_SEQ_LM', r: 16, lora_alpha: 32, fan_in_fan_out: false, target_modules: ['k', 'o', 'q', 'v', 'wi', 'wo'] });
  expect(adapterFiles.has(ADAPTER_WEIGHTS_FILE)).toBe(true);

  // `truthgpt export <adapter> --format hf [--base DIR]`: the same PEFT files, naming a base PEFT can
  // open: the folder the base was exported to, or by default the HF source recorded at import.
  const exported = path.join(tmp, 'adapter-export');
  fs.rmSync(exported, { recursive: true, force: true });
  const e = await exportModel(l.adapterPrefix, exported, { config: stack.config, baseNameOrPath: 'exported-base' });
  expect(e.files.sort()).toEqual([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE].sort());
  expect(JSON.parse(fs.readFileSync(path.join(exported, ADAPTER_CONFIG_FILE), 'utf8'))).toEqual({ ...config, base_model_name_or_path: 'exported-base' });
  expect(Buffer.from(fs.readFileSync(path.join(exported, ADAPTER_WEIGHTS_FILE))).equals(Buffer.from(adapterFiles.get(ADAPTER_WEIGHTS_FILE)!))).toBe(true);
  fs.rmSync(exported, { recursive: true, force: true });
  await exportModel(l.adapterPrefix, exported, { config: stack.config });
  const byDefault = JSON.parse(fs.readFileSync(path.join(exported, ADAPTER_CONFIG_FILE), 'utf8')) as { base_model_name_or_path: string };
  expect(byDefault.base_model_name_or_path).toBe(imported.import.source.nameOrPath ?? imported.import.source.folder);
  expect(byDefault.base_model_name_or_path).not.toMatch(/^models\//);

  // Post-training ran on the merged model: int8's fp32 reference is the merged model's exact match.
  const [v] = r.t5Variants!;
  console.log(`T5 LoRA int8: exact match ${(100 * v.exactMatch).toFixed(2)}% vs fp32 ${(100 * v.fp32ExactMatch).toFixed(2)}% (${v.flips} answers differ), ${v.published ? 'published' : `refused: ${v.rejectedReason}`}`);
  expect(v.fp32ExactMatch).toBeCloseTo(l.exactMatchAfter, 12);

  // The report: where a GPT run's goes, with the curves and the figures of this run.
  expect(r.reportKey).toMatch(new RegExp(`^runs/${r.workflowId}/report/`));
  const html = Buffer.from(await store.get(r.reportKey)).toString('utf8');
  expect(html).toContain('<svg');
  expect(html).toContain('LoRA train loss per chunk');
  expect(html).toContain(`${(100 * l.exactMatchAfter).toFixed(2)}%`);
  expect(html).toContain(`${(100 * v.exactMatch).toFixed(2)}%`);
  expect(html).toContain('maxExactMatchDrop');
  const reportManifest = (await store.readManifest(`runs/${r.workflowId}/report`))!;
  const json = JSON.parse(Buffer.from(await store.get(reportManifest.files.find((f) => f.name === REPORT_JSON)!.key)).toString('utf8')) as FamilyReport;
  expect(json.task).toBe('seq2seq');
  expect(json.lora!.after.score).toBe(l.exactMatchAfter);
  expect(json.variants.map((x) => x.name)).toEqual(['fp32', v.name]);

  // For the Python side (test/fixtures/t5-tiny/check_t5_lora_peft.py): the base, the adapter, our merged logits.
  const keep = process.env.TRUTHGPT_KEEP_T5_LORA;
  if (keep) {
    const merged = await checkpointWeightsAnyFamily(store, l.merged.prefix);
    const cfg = merged.config as T5Config;
    const dataset = (await newestDataset(store, 'datasets/copies-'))!;
    const pairs = (await Promise.all(dataset.val.map((s) => new ShardCache().pairs(store, dataset, s)))).flat().slice(0, 16);
    const batch = seq2seqBatch(pairs, cfg, 8, 4);
    const session = await createSession(serializeModel(exportT5(cfg, merged.weights)).model, { intraOpThreads: 1 });
    const feeds = Object.fromEntries(['input_ids', 'attention_mask', 'decoder_input_ids'].map((k) => [k, new ort.Tensor('int64', batch[k].data as BigInt64Array, batch[k].dims)]));
    const logits = (await session.run(feeds)).logits.data as Float32Array;
    await session.release();
    await exportModel(r.training.checkpoint.prefix, path.join(keep, 'base'), { config: stack.config });
    fs.mkdirSync(path.join(keep, 'adapter'), { recursive: true });
    for (const [name, bytes] of adapterFiles) fs.writeFileSync(path.join(keep, 'adapter', name), bytes);
    const rows = (k: string, n: number) => Array.from({ length: pairs.length }, (_, i) => Array.from(batch[k].data as BigInt64Array).slice(i * n, (i + 1) * n).map(Number));
    fs.writeFileSync(path.join(keep, 'ours.json'), JSON.stringify({ input_ids: rows('input_ids', 8), attention_mask: rows('attention_mask', 8), decoder_input_ids: rows('decoder_input_ids', 4), logits: Array.from(logits) }));
  }
}, 600_000);

test('the GPU worker dies mid-chunk: a new one resumes the T5 LoRA chunk from its last snapshot, ending bit-identical', async () => {
  const spec = (name: string): PipelineSpecInput => ({
    name,
    model: { from: imported.ref, task: 'seq2seq' },
    dataset: { name: 'copies', corpus, valFraction: 0.25 },
    training: { workers: 1, rounds: 0, innerSteps: 1, batchSize: 8, contextLength: 8, targetLength: 4, evalBatches: 2 },
    lora: {
      lora: { r: 4, lora_alpha: 8 },
      train: { steps: 600, stepsPerActivity: 600, batchSize: 8, contextLength: 8, checkpoint: { everySteps: 40, everySeconds: 0 } },
      heartbeatTimeoutSeconds: 5,
    },
  });
  const reference = await (await tg.startPipeline(spec('t5-lora-ref'))).result();
  // A GPU worker that cancels its activities at once when it shuts down (the stack's waits for them).
  stack.workers[2].worker.shutdown();
  for (let i = 0; i < 400 && stack.workers[2].worker.getState() !== 'STOPPED'; i++) await new Promise((res) => setTimeout(res, 25));
  const gpu = await createPoolWorker(stack.config, 'gpu', { shutdownGraceTime: 0 });
  const gpuRunning = gpu.run();
  const run = await tg.startPipeline(spec('t5-lora-crash'));
  const loraId = `${run.workflowId}-lora`;
  const snapshot = `${ftKeys.chunkProgress(loraId, 0, 80)}/MANIFEST.json`;
  const store = stack.s3.store;
  for (let i = 0; i < 1200 && !(await store.exists(snapshot)); i++) await new Promise((res) => setTimeout(res, 25));
  expect(await store.exists(snapshot)).toBe(true);
  gpu.worker.shutdown(); // cancels the running trainT5Lora at once
  await gpuRunning;
  const replacement = await createPoolWorker(stack.config, 'gpu');
  const running = replacement.run();
  try {
    const r = await run.result();
    const chunk = (await store.readManifest(ftKeys.chunkFinal(loraId, 0)))!.meta.result as TrainT5LoraResult;
    console.log(`T5 LoRA chunk resumed from step ${chunk.resumedFrom} of 600 after the worker died; val loss after ${r.t5Lora!.lossAfter} (uninterrupted ${reference.t5Lora!.lossAfter})`);
    expect(chunk.resumedFrom).toBeGreaterThanOrEqual(80);
    expect(chunk.resumedFrom).toBeLessThan(600);
    // The same adapter bytes as the uninterrupted run (both PEFT files), and the same evaluation.
    const files = async (prefix: string) => (await store.readManifest(prefix))!.files.map((f) => `${f.name}:${f.sha256}`).sort();
    expect(await files(r.t5Lora!.adapterPrefix)).toEqual(await files(reference.t5Lora!.adapterPrefix));
    expect(r.t5Lora!.lossAfter).toBe(reference.t5Lora!.lossAfter);
    expect(r.t5Lora!.exactMatchAfter).toBe(reference.t5Lora!.exactMatchAfter);
  } finally {
    replacement.worker.shutdown();
    await running;
  }
}, 600_000);
