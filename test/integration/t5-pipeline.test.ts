// T5 through the product on a real Temporal dev server, a real S3 server and both pool workers
// (issue 12): `importModel` stores the tiny T5ForConditionalGeneration of test/fixtures/t5-tiny
// (random weights, a Unigram tokenizer with T5's </s> and <extra_id_N>; made by make_t5_tiny.py) as
// models/t5-tiny; a pipeline starts from it with `model.from` and fine-tunes it on source/target
// pairs (a jsonl corpus with textField input and targetField target): opposites.jsonl's 32 lines
// plus a copy task made here of 200 pairs of the tokenizer's 56 whole words ("say cold sky" → "cold
// sky"), which a model can answer for pairs it never saw, unlike an opposite it never saw;
// validation loss and exact match are recorded before and after; the int8 encoder/decoder pair is
// gated on exact match; the trained checkpoint exports as a
// T5ForConditionalGeneration folder whose re-import holds the same weights and gives the same
// logits. A second run pretrains a T5 from a seeded init with span corruption on two DiLoCo workers.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { checkpointWeightsAnyFamily } from '../../artifacts/checkpoints';
import { newestDataset, readTokenizer, ShardCache } from '../../artifacts/datasets';
import { loadStoredTokenizer } from '../../artifacts/tokenizers';
import { T5Generator } from '../../engine/eval/generate-t5';
import { fetchReport, generateText } from '../../sdk/cli/report-commands';
import { fmt, renderFamilyReportText, type FamilyReport } from '../../engine/report';
import { seq2seqBatch } from '../../engine/data/t5-span';
import { serializeModel } from '../../engine/graph/onnx';
import { exportT5 } from '../../engine/models/export-bert-t5';
import type { T5Config } from '../../engine/models/t5';
import { createSession } from '../../engine/runtime';
import { exportModel, importModel, InvalidSpecError, TruthGPT, type PipelineSpecInput } from '../../sdk';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 't5-tiny');

let stack: InProcessStack;
let tg: TruthGPT;
let tmp: string;
let imported: Awaited<ReturnType<typeof importModel>>;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-t5-pipeline' });
  tg = await TruthGPT.connect({ config: stack.config });
  // A fixed folder: documents are split into train and val by a hash of their source (file:line), so
  // the generated corpora keep one path and the runs their split.
  tmp = path.join(os.tmpdir(), 'truthgpt-t5-pipeline');
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  imported = await importModel(path.join(FIXTURE, 'model'), { name: 't5-tiny', config: stack.config });
}, 180_000);

/** The tokenizer's whole words (its `▁word` pieces): the fixture's 56. */
function fixtureWords(): string[] {
  const vocab = (JSON.parse(fs.readFileSync(path.join(FIXTURE, 'model', 'tokenizer.json'), 'utf8')) as { model: { vocab: [string, number][] } }).model.vocab;
  return vocab.map(([piece]) => piece).filter((p) => p.startsWith('\u2581') && p.length > 2).map((p) => p.slice(1));
}

afterAll(async () => {
  await tg?.close();
  await stack?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** logits (B, tgtLen, V) of a T5 on a batch, through its exported inference graph. */
async function logitsOf(cfg: T5Config, weights: Map<string, Float32Array>, batch: Record<string, { data: unknown; dims: readonly number[] }>): Promise<Float32Array> {
  const session = await createSession(serializeModel(exportT5(cfg, weights)).model, { intraOpThreads: 1 });
  try {
    const feeds = Object.fromEntries(['input_ids', 'attention_mask', 'decoder_input_ids'].map((k) => [k, new ort.Tensor('int64', batch[k].data as BigInt64Array, batch[k].dims)]));
    return (await session.run(feeds)).logits.data as Float32Array;
  } finally {
    await session.release();
  }
}

test('import t5-tiny → seq2seq fine-tune in a pipeline → loss and exact match before/after → export HF → re-import: same weights and logits', async () => {
  expect(imported.ref).toBe('models/t5-tiny');
  const words = fixtureWords();
  expect(words).toHaveLength(56);
  const file = path.join(tmp, 'pairs.jsonl');
  const copies = Array.from({ length: 200 }, (_, i) => [words[(i * 7) % 56], words[(i * 13 + Math.floor(i / 56)) % 56]].join(' '));
  fs.writeFileSync(file, fs.readFileSync(path.join(FIXTURE, 'opposites.jsonl'), 'utf8') + copies.map((w) => JSON.stringify({ input: `say ${w}`, target: w })).join('\n') + '\n');
  const corpus = { kind: 'jsonl' as const, path: file, textField: 'input', targetField: 'target' };
  const spec: PipelineSpecInput = {
    name: 't5-opposites',
    model: { from: imported.ref, task: 'seq2seq' },
    dataset: { name: 'opposites', corpus, valFraction: 0.25 },
    // Sources are at most 5 tokens with </s>, targets 3 (two words and </s>).
    training: { workers: 1, rounds: 4, innerSteps: 80, batchSize: 8, contextLength: 8, targetLength: 4, evalBatches: 8, optimizer: { optimizer: { kind: 'adamw', lr: 5e-3 }, grad_clip: 1 } },
    quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 0.05 }],
  };

  // A seq2seq run needs pairs: a jsonl corpus without targetField is refused, naming the field.
  const { targetField: _t, ...unpaired } = corpus;
  const wrong = await tg.startPipeline({ ...spec, dataset: { name: 'opposites', corpus: unpaired } }).catch((e: unknown) => e);
  expect(wrong).toBeInstanceOf(InvalidSpecError);
  expect((wrong as InvalidSpecError).issues).toEqual([
    'spec.dataset.corpus.targetField: a seq2seq run needs source/target pairs: a jsonl corpus with textField (the source) and targetField (the target), not jsonl without targetField',
  ]);

  const run = await tg.startPipeline(spec);
  const r = await run.result();
  const before = r.training.valHistory[0];
  const after = r.training.valHistory[r.training.valHistory.length - 1];
  console.log(
    `T5 opposites fine-tune: val loss ${before.loss.toFixed(4)} → ${after.loss.toFixed(4)} (ppl ${before.perplexity.toFixed(2)} → ${after.perplexity.toFixed(2)}), ` +
      `exact match ${(before.exactMatch! * 100).toFixed(1)}% → ${(after.exactMatch! * 100).toFixed(1)}% over ${after.examples} validation examples (at most evalBatches × batchSize = 64); ` +
      `by round: val loss ${r.training.valHistory.map((v) => v.loss.toFixed(3)).join(', ')}, exact match ${r.training.valHistory.map((v) => v.exactMatch!.toFixed(3)).join(', ')}`,
  );
  expect(r.training.valHistory).toHaveLength(5);
  expect(after.examples).toBe(before.examples);
  expect(after.examples).toBeGreaterThan(0);
  expect(after.loss).toBeLessThan(before.loss);
  // Observed (load 17.6 on 2 cores): loss 5.364 → 1.347, exact match 0/59 → 33/59 (best 37/59 at round 3).
  expect(after.exactMatch!).toBeGreaterThan(before.exactMatch!);
  expect(after.exactMatch!).toBeGreaterThanOrEqual(0.25);
  expect(r.stages.map((s) => [s.stage, s.status])).toEqual([['train', 'done'], ['lora', 'skipped'], ['postTraining', 'done']]);
  expect(r.stages[0].summary).toContain(`exact match ${(before.exactMatch! * 100).toFixed(1)}% → ${(after.exactMatch! * 100).toFixed(1)}%`);

  // int8: the encoder/decoder pair quantized, its greedy answers scored beside fp32's, gated on exact match.
  const [v] = r.t5Variants!;
  console.log(`T5 int8: exact match ${(v.exactMatch * 100).toFixed(2)}% vs fp32 ${(v.fp32ExactMatch * 100).toFixed(2)}% over ${v.examples} examples (${v.flips} answers differ), ppl ${v.perplexity?.toFixed(4)} vs ${v.fp32Perplexity?.toFixed(4)}, ${v.bytes} vs ${v.fp32Bytes} bytes, ${v.published ? 'published' : `refused: ${v.rejectedReason}`}`);
  expect(v.fp32ExactMatch).toBeCloseTo(after.exactMatch!, 12); // the same checkpoint, examples and decoding as the last evaluation
  expect(v.published).toBe(true);
  expect(v.drop).toBeLessThanOrEqual(0.05);
  expect(v.bytes).toBeLessThan(v.fp32Bytes);
  expect(v.prefix).toBe(`runs/${r.workflowId}/models/int8`);

  // The run list (Temporal visibility, search attributes) shows the family, the task and the exact match.
  let listed: Awaited<ReturnType<TruthGPT['listRuns']>> = [];
  for (let i = 0; i < 50 && !listed.some((x) => x.workflowId === r.workflowId && x.valAccuracy != null); i++) {
    listed = await tg.listRuns({ family: 't5' });
    await new Promise((res) => setTimeout(res, 200)); // visibility is eventually consistent
  }
  const row = listed.find((x) => x.workflowId === r.workflowId)!;
  expect(row).toMatchObject({ family: 't5', task: 'seq2seq', pipeline: 't5-opposites' });
  expect(row.valAccuracy).toBeCloseTo(Math.max(...r.training.valHistory.map((v) => v.exactMatch!)), 12);

  // The trained checkpoint records family t5 and its full config, and exports as the HF class.
  const trained = r.training.checkpoint.prefix;
  const out = path.join(tmp, 'exported');
  const exported = await exportModel(trained, out, { config: stack.config });
  expect(exported.architecture).toBe('T5ForConditionalGeneration');
  expect(exported.importedFrom).toBe('models/t5-tiny');
  expect(fs.readdirSync(out).sort()).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));

  const again = await importModel(out, { name: 't5-tiny-tuned', config: stack.config });
  const store = stack.s3.store;
  const [a, b] = await Promise.all([checkpointWeightsAnyFamily(store, trained), checkpointWeightsAnyFamily(store, again.ref)]);
  expect([a.family, b.family]).toEqual(['t5', 't5']);
  expect([...b.weights.keys()].sort()).toEqual([...a.weights.keys()].sort());
  for (const [name, w] of a.weights) expect(Buffer.from(b.weights.get(name)!.buffer).equals(Buffer.from(w.buffer))).toBe(true);

  // The same logits on the validation examples from the run's checkpoint and from the re-import.
  const cfg = a.config as T5Config;
  const dataset = (await newestDataset(store, 'datasets/opposites-'))!;
  expect(dataset.pairs).toBe(true);
  const pairs = (await Promise.all(dataset.val.map((s) => new ShardCache().pairs(store, dataset, s)))).flat();
  const batch = seq2seqBatch(pairs, cfg, 8, 4);
  const [la, lb] = [await logitsOf(cfg, a.weights, batch), await logitsOf(cfg, b.weights, batch)];
  expect(la.length).toBe(pairs.length * 4 * cfg.vocab_size);
  let maxDiff = 0;
  la.forEach((x, i) => (maxDiff = Math.max(maxDiff, Math.abs(x - lb[i]))));
  expect(maxDiff).toBe(0); // identical weights through the same graph: observed 0 exactly

  // `truthgpt generate --model <the run's checkpoint> "<source>"`: the tokenizer is the import's (the
  // run started from it), the answers are the greedy ones the exact match scored.
  const tok = await loadStoredTokenizer(store, await readTokenizer(store, dataset));
  const gen = await T5Generator.create(cfg, a.weights, { session: { intraOpThreads: 1 } });
  const answers: string[] = [];
  let right = 0;
  const prompts = await Promise.all(pairs.map((p) => tok.decode(p.inputs.slice(0, -1))));
  // Four opposites (never seen: the model cannot know them) and four copies (it can).
  const picked = [...pairs.keys()].filter((i) => !prompts[i].startsWith('say')).slice(0, 4).concat([...pairs.keys()].filter((i) => prompts[i].startsWith('say')).slice(0, 4));
  for (const i of picked) {
    const [p, prompt] = [pairs[i], prompts[i]];
    const g = await generateText(store, trained, prompt, { maxNewTokens: 4, temperature: 0, topK: 0, topP: 1, seed: 0, threads: 1 });
    expect(g.ids).toEqual(await gen.generate(p.inputs, { maxNewTokens: 4, stopToken: 1, temperature: 0 }));
    const want = await tok.decode(p.targets.slice(0, -1));
    if (g.text === want) right++;
    answers.push(`${prompt} → ${g.text}${g.text === want ? '' : ` (target ${want})`}`);
  }
  await gen.release();
  console.log(`truthgpt generate on ${trained}: ${answers.join('; ')}`);
  expect(right).toBeGreaterThan(0); // observed 3 of 8: "say black be → black be", none of the opposites

  // For the Python side (test/fixtures/t5-tiny/check_t5_export.py): the export with our logits.
  const keep = process.env.TRUTHGPT_KEEP_T5_EXPORT;
  if (keep) {
    const rows = (k: string, n: number) => Array.from({ length: pairs.length }, (_, i) => Array.from(batch[k].data as BigInt64Array).slice(i * n, (i + 1) * n).map(Number));
    fs.cpSync(out, path.join(keep, 'full'), { recursive: true });
    fs.writeFileSync(path.join(keep, 'full', 'ours.json'), JSON.stringify({ input_ids: rows('input_ids', 8), attention_mask: rows('attention_mask', 8), decoder_input_ids: rows('decoder_input_ids', 4), logits: Array.from(la) }));
  }
}, 600_000);

test('span-corruption pretraining of a T5 from a seeded init on two DiLoCo workers: loss falls; family, task and config recorded', async () => {
  // Documents of sentences made of the fixture's words, tokenized by the imported T5's tokenizer (its <extra_id_0> and </s>).
  const words = fixtureWords();
  const file = path.join(tmp, 'span-words.jsonl');
  const docs = Array.from({ length: 24 }, (_, d) => Array.from({ length: 10 }, (_, i) => `the ${words[(d * 11 + i * 5) % 56]} is ${words[(d * 3 + i * 17) % 56]}, say ${words[(d + i * 7) % 56]}.`).join('\n'));
  fs.writeFileSync(file, docs.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  const manifest = (await stack.s3.store.readManifest(imported.ref))!;
  const sha256 = manifest.files.find((f) => f.name === 'tokenizer.json')!.sha256;
  const spec: PipelineSpecInput = {
    name: 't5-span',
    model: { family: 't5', task: 'span-corruption', preset: 'tiny-t5' },
    dataset: { name: 'span-words', corpus: { kind: 'jsonl', path: file }, tokenizer: { kind: 'hf', key: `${imported.ref}/tokenizer.json`, sha256, eot: 1 }, valFraction: 0.15 },
    training: { workers: 2, rounds: 3, innerSteps: 25, batchSize: 8, contextLength: 16, evalBatches: 2, optimizer: { optimizer: { kind: 'adamw', lr: 3e-3 } } },
  };

  // Quantization is wired for seq2seq models only: a span-corruption spec asking for it is refused, naming the variant.
  const wrong = await tg.startPipeline({ ...spec, quantization: [{ method: 'int8-dynamic' }] }).catch((e: unknown) => e);
  expect(wrong).toBeInstanceOf(InvalidSpecError);
  expect((wrong as InvalidSpecError).issues).toEqual(['spec.quantization.0: post-training quantization of a t5 span-corruption model is not wired yet; leave quantization out']);

  const r = await (await tg.startPipeline(spec)).result();
  const losses = r.training.valHistory.map((v) => v.loss);
  console.log(`T5 span corruption (W=2, 3 rounds × 25 steps): val loss by round ${losses.map((l) => l.toFixed(4)).join(', ')} (ppl ${r.training.valHistory.map((v) => v.perplexity.toFixed(2)).join(', ')})`);
  expect(losses).toHaveLength(4);
  expect(losses[3]).toBeLessThan(0.8 * losses[0]); // observed 6.554 → 1.773
  expect(r.training.valHistory.every((v) => v.exactMatch === undefined)).toBe(true);
  expect(r.stages.map((s) => [s.stage, s.status])).toEqual([['train', 'done'], ['lora', 'skipped'], ['postTraining', 'skipped']]);
  expect(r.stages[2].summary).toContain('post-training quantization is offered for classifiers and seq2seq models, not for t5 span-corruption pretraining');

  // The run report: train and val loss per round (the curve's points are the run's figures) and the target perplexity per round; `truthgpt report` prints them.
  expect(r.reportKey).toMatch(new RegExp(`^runs/${r.workflowId}/report/.*report\\.html$`));
  const { report, html } = await fetchReport(stack.s3.store, r.workflowId);
  const svg = (await stack.s3.store.getVerified(`runs/${r.workflowId}/report`, 'loss-curves.svg')).toString('utf8');
  expect(report).toMatchObject({ task: 'span-corruption', variants: [], lora: null, checkpoint: r.training.checkpoint.prefix });
  const fam = report as FamilyReport;
  expect(fam.valHistory.map((v) => [v.round, v.loss, v.perplexity])).toEqual(r.training.valHistory.map((v) => [v.round, v.loss, v.perplexity]));
  const ys = (series: string) => [...new RegExp(`data-series="${series.replace(/[()]/g, '\\$&')}">([\\s\\S]*?)</g>`).exec(svg)![1].matchAll(/data-y="([^"]+)"/g)].map((m) => Number(m[1]));
  expect(ys('validation loss')).toEqual(losses);
  // The pipeline's result keeps no train history: the report's is one mean loss per round, each a figure.
  expect(fam.trainHistory.map((p) => p.round)).toEqual([1, 2, 3]);
  expect(fam.trainHistory.every((p) => Number.isFinite(p.loss) && p.loss > 0)).toBe(true);
  expect(ys('train loss (mean of round)')).toEqual(fam.trainHistory.map((p) => p.loss));
  const [first, last] = [r.training.valHistory[0], r.training.valHistory[3]];
  for (const part of ['Loss per round', 'Validation perplexity per round', 'validation span-corruption target perplexity', `Validation span-corruption target perplexity ${fmt(first.perplexity)} → ${fmt(last.perplexity)}`]) expect(html).toContain(part);
  for (const v of r.training.valHistory) expect(html).toContain(`<td>${fmt(v.loss)}</td><td>${fmt(v.perplexity)}</td></tr>`);
  const text = renderFamilyReportText(fam);
  expect(text).toContain(`(t5 span-corruption), checkpoint ${r.training.checkpoint.prefix}`);
  for (const v of r.training.valHistory) expect(text).toMatch(new RegExp(`^\\s+${v.round}\\s+\\S+\\s+${fmt(v.loss).replace('.', '\\.')}\\s+${fmt(v.perplexity).replace('.', '\\.')}$`, 'm'));

  const ck = await checkpointWeightsAnyFamily(stack.s3.store, r.training.checkpoint.prefix);
  expect(ck.family).toBe('t5');
  expect(ck.config).toMatchObject({ vocab_size: 256, d_model: 64, num_layers: 2, num_heads: 4, relative_attention_num_buckets: 16 });

  let listed: Awaited<ReturnType<TruthGPT['listRuns']>> = [];
  for (let i = 0; i < 50 && !listed.some((x) => x.workflowId === r.workflowId && x.bestValLoss != null); i++) {
    listed = await tg.listRuns({ family: 't5' });
    await new Promise((res) => setTimeout(res, 200));
  }
  expect(listed.find((x) => x.workflowId === r.workflowId)).toMatchObject({ family: 't5', task: 'span-corruption', pipeline: 't5-span', valAccuracy: null });
}, 600_000);

test('a seq2seq example longer than contextLength fails the run with one line naming the field, the shard file and the example', async () => {
  const spec: PipelineSpecInput = {
    name: 't5-too-long',
    model: { from: imported.ref, task: 'seq2seq' },
    dataset: { name: 'opposites-short', corpus: { kind: 'jsonl', path: path.join(FIXTURE, 'opposites.jsonl'), textField: 'input', targetField: 'target' }, valFraction: 0.25 },
    // "opposite of black:" is 5 tokens with </s>.
    training: { workers: 1, rounds: 1, innerSteps: 2, batchSize: 4, contextLength: 4, targetLength: 4 },
  };
  const err = await (await tg.startPipeline(spec)).result().catch((e: unknown) => e as Error);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toMatch(/spec\.contextLength: example \d+ of datasets\/opposites-short-[0-9a-f]+\/(train|val)-0\.bin has a source of 5 tokens \(EOS included\), more than contextLength 4/);
}, 300_000);
