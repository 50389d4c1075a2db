// Inference export of every model family (engine/models/export.ts, export-bert-t5.ts): each model
// is saved with saveModel, loaded by onnxruntime-node from the file, and run at two batch sizes ×
// two sequence lengths through ONE session. Logits are checked against the Hugging Face fixtures
// wherever the input allows it (full inputs, a row alone, causal prefixes, a padded row cut to its
// real tokens), and against the training builders at fixed sizes elsewhere.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import '../../engine/graph';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { Decoder } from '../../engine/eval';
import { Graph, type Value } from '../../engine/graph/ir';
import { saveModel, serializeModel } from '../../engine/graph/onnx';
import { bertClassifierLogits, bertClassifierParams, bertEncoder, bertMlmHeadParams, bertMlmLogits, bertParams, bertPooler, BertConfigSchema, type BertConfig } from '../../engine/models/bert';
import { initParams, type ParamLookup, type ParamSpec } from '../../engine/models/blocks';
import { decoderInfo, exportGpt, presentKeyName } from '../../engine/models/export';
import { exportBert, exportT5 } from '../../engine/models/export-bert-t5';
import { GptConfigSchema, gptLogits, gptParams, type GptConfig } from '../../engine/models/gpt';
import { relativePositionBias } from '../../engine/models/layers';
import { llamaToGpt, type NamedTensor } from '../../engine/models/llama-to-gpt';
import { memoryConfigOf, memoryGptLogits, memoryGptParams } from '../../engine/models/memory-slots';
import { configFromHf, importHfWeights, presetParams, type Preset } from '../../engine/models/presets';
import { t5Logits, t5Params, type T5Config } from '../../engine/models/t5';

const FIX = path.join(__dirname, '..', 'fixtures');
const threads = { intraOpNumThreads: 1 };
let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-export-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

type Rows = number[][];
const int64 = (rows: Rows) => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), (x) => BigInt(x)), [rows.length, rows[0].length]);
const cut = (rows: Rows, pick: number[], len: number) => pick.map((r) => rows[r].slice(0, len));

/** Saves `g` with saveModel and opens the file in a fresh ORT session, as a user of the .onnx would. */
async function saveAndLoad(g: Graph, name: string): Promise<ort.InferenceSession> {
  const { modelPath } = saveModel(g, path.join(dir, `${name}.onnx`));
  return ort.InferenceSession.create(modelPath, threads);
}

/** Largest |a - b|; fails naming the worst element when over `atol`. */
function expectClose(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, what: string): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  let at = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= worst)) [worst, at] = [d, i];
  }
  if (!(worst <= atol)) throw new Error(`${what}: element ${at} differs by ${worst} (${a[at]} vs ${b[at]})`);
  return worst;
}

/** Rows `pick` of a (B, T, V) golden logits array, each cut to its first `len` positions. */
function goldenRows(logits: number[], shape: number[], pick: number[], len: number): number[] {
  const [, T, V] = shape;
  return pick.flatMap((r) => logits.slice(r * T * V, (r * T + len) * V));
}

/** The training builder's output at fixed sizes: inputs (name → rows) as int64 (B, T), weights as initializers. */
async function builderOutput(specs: ParamSpec[], weights: Map<string, Float32Array>, feeds: Record<string, Rows>, build: (p: ParamLookup, inputs: Record<string, Value>) => Value): Promise<Float32Array> {
  const g = new Graph('reference');
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  const p: ParamLookup = (name) => (g.values.has(name) ? g.value(name) : g.initializer(name, { dtype: 'float32', dims: shapes.get(name)!, data: weights.get(name)! }));
  const inputs = Object.fromEntries(Object.entries(feeds).map(([k, rows]) => [k, g.input(k, 'int64', [rows.length, rows[0].length])]));
  g.output(build(p, inputs), 'out');
  const s = await ort.InferenceSession.create(serializeModel(g).model, threads);
  const out = (await s.run(Object.fromEntries(Object.entries(feeds).map(([k, rows]) => [k, int64(rows)])))).out.data as Float32Array;
  await s.release();
  return out;
}

interface Golden {
  input_ids: Rows;
  attention_mask: Rows;
  token_type_ids: Rows;
  decoder_input_ids: Rows;
  logits_shape: number[];
  logits: number[];
}

function hfFixture(name: string, family: Preset['family'], specs?: (p: Preset) => ParamSpec[]) {
  const d = path.join(FIX, 'hf', name);
  const preset = configFromHf(family, JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8')));
  const file = path.join(d, 'model.safetensors');
  const { weights } = importHfWeights(preset, readSafetensors(fs.readFileSync(file), file).tensors, file, specs ? specs(preset) : presetParams(preset));
  return { preset, weights, golden: JSON.parse(fs.readFileSync(path.join(d, 'golden.json'), 'utf8')) as Golden };
}

describe('BERT export', () => {
  it('BertForMaskedLM: HF logits at batch 1 and 2, length 12 and 8 (padded row cut to its tokens); training builder at (2, 8)', async () => {
    const specs = (p: Preset) => (p.family === 'bert' ? [...bertParams({ ...p.config, add_pooling_layer: false }), ...bertMlmHeadParams(p.config)] : []);
    const { preset, weights, golden } = hfFixture('bert', 'bert', specs);
    const cfg = { ...(preset.config as BertConfig), add_pooling_layer: false };
    const g = exportBert(cfg, weights, { head: 'mlm' });
    expect(g.inputs.map((v) => [v.name, v.shape])).toEqual([
      ['input_ids', ['batch', 'seq']],
      ['attention_mask', ['batch', 'seq']],
      ['token_type_ids', ['batch', 'seq']],
    ]);
    const s = await saveAndLoad(g, 'bert-mlm');
    const run = async (pick: number[], len: number) => {
      const out = await s.run({ input_ids: int64(cut(golden.input_ids, pick, len)), attention_mask: int64(cut(golden.attention_mask, pick, len)), token_type_ids: int64(cut(golden.token_type_ids, pick, len)) });
      expect(out.logits.dims).toEqual([pick.length, len, 128]);
      expect(out.last_hidden_state.dims).toEqual([pick.length, len, 32]);
      return out.logits.data as Float32Array;
    };
    // Row 1 is padded from position 8: cut to its 8 tokens it must give HF's logits there.
    const worst = [
      expectClose(await run([0, 1], 12), golden.logits, 1e-4, 'batch 2, length 12'),
      expectClose(await run([1], 12), goldenRows(golden.logits, golden.logits_shape, [1], 12), 1e-4, 'batch 1, length 12'),
      expectClose(await run([1], 8), goldenRows(golden.logits, golden.logits_shape, [1], 8), 1e-4, 'batch 1, length 8'),
    ];
    const feeds = { input_ids: cut(golden.input_ids, [0, 1], 8), attention_mask: cut(golden.attention_mask, [0, 1], 8), token_type_ids: cut(golden.token_type_ids, [0, 1], 8) };
    const ref = await builderOutput(specs(preset), weights, feeds, (p, i) => bertMlmLogits(cfg, bertEncoder(cfg, { inputIds: i.input_ids, attentionMask: i.attention_mask, tokenTypeIds: i.token_type_ids }, p), p));
    worst.push(expectClose(await run([0, 1], 8), ref, 1e-5, 'batch 2, length 8 vs builder'));
    console.log(`BERT MLM export: worst |Δlogit| ${worst.map((w) => w.toExponential(1)).join(', ')}`);
    await s.release();
  });

  it('classifier head and pooler equal the training builder at batch 1 and 3, length 5 and 9, with padding', async () => {
    const cfg = BertConfigSchema.parse({ vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 16 });
    const specs = [...bertParams(cfg), ...bertClassifierParams(cfg, 3)];
    const weights = initParams(specs, 11);
    const s = await saveAndLoad(exportBert(cfg, weights, { head: 'classifier' }), 'bert-cls');
    for (const [B, T] of [[1, 5], [3, 5], [1, 9], [3, 9]]) {
      const feeds = {
        input_ids: Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 13 + t * 7 + 1) % 50)),
        attention_mask: Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (t < T - b ? 1 : 0))),
        token_type_ids: Array.from({ length: B }, () => Array.from({ length: T }, (_, t) => (t < T / 2 ? 0 : 1))),
      };
      const out = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, r]) => [k, int64(r)])));
      expect(out.logits.dims).toEqual([B, 3]);
      expect(out.pooler_output.dims).toEqual([B, 16]);
      const inputs = (i: Record<string, Value>) => ({ inputIds: i.input_ids, attentionMask: i.attention_mask, tokenTypeIds: i.token_type_ids });
      expectClose(out.logits.data as Float32Array, await builderOutput(specs, weights, feeds, (p, i) => bertClassifierLogits(cfg, inputs(i), p)), 1e-5, `logits (${B}, ${T})`);
      const pooled = await builderOutput(specs, weights, feeds, (p, i) => bertPooler(cfg, bertEncoder(cfg, inputs(i), p), T, p));
      expectClose(out.pooler_output.data as Float32Array, pooled, 1e-5, `pooler (${B}, ${T})`);
    }
    await s.release();
    expect(() => exportBert(cfg, initParams(bertParams(cfg), 1), { head: 'classifier' })).toThrow('exportBert: head "classifier" needs weight "classifier.bias", which is missing');
  });
});

describe('T5 export', () => {
  for (const name of ['t5', 't5_gated']) {
    it(`${name}: HF logits at batch 1 and 2, target length 10 and 6, source 12 and 9 (padded row cut); training builder at (2, 9, 10)`, async () => {
      const { preset, weights, golden } = hfFixture(name, 't5');
      const cfg = preset.config as T5Config;
      const g = exportT5(cfg, weights);
      expect(g.inputs.map((v) => [v.name, v.shape])).toEqual([
        ['input_ids', ['batch', 'src_seq']],
        ['attention_mask', ['batch', 'src_seq']],
        ['decoder_input_ids', ['batch', 'tgt_seq']],
      ]);
      const s = await saveAndLoad(g, name);
      const run = async (pick: number[], src: number, tgt: number) => {
        const out = await s.run({ input_ids: int64(cut(golden.input_ids, pick, src)), attention_mask: int64(cut(golden.attention_mask, pick, src)), decoder_input_ids: int64(cut(golden.decoder_input_ids, pick, tgt)) });
        expect(out.logits.dims).toEqual([pick.length, tgt, 128]);
        return out.logits.data as Float32Array;
      };
      const gold = (pick: number[], len: number) => goldenRows(golden.logits, golden.logits_shape, pick, len);
      // The decoder is causal, so a target prefix gives HF's logits at those positions; source row 1 is padded from 9.
      const worst = [
        expectClose(await run([0, 1], 12, 10), golden.logits, 1e-4, 'batch 2, 12 → 10'),
        expectClose(await run([0], 12, 10), gold([0], 10), 1e-4, 'batch 1, 12 → 10'),
        expectClose(await run([0, 1], 12, 6), gold([0, 1], 6), 1e-4, 'batch 2, 12 → 6'),
        expectClose(await run([1], 9, 6), gold([1], 6), 1e-4, 'batch 1, 9 → 6'),
      ];
      const feeds = { input_ids: cut(golden.input_ids, [0, 1], 9), attention_mask: cut(golden.attention_mask, [0, 1], 9), decoder_input_ids: golden.decoder_input_ids };
      const ref = await builderOutput(t5Params(cfg), weights, feeds, (p, i) => t5Logits(cfg, { inputIds: i.input_ids, attentionMask: i.attention_mask, decoderInputIds: i.decoder_input_ids }, p));
      worst.push(expectClose(await run([0, 1], 9, 10), ref, 1e-5, 'batch 2, 9 → 10 vs builder'));
      console.log(`${name} export: worst |Δlogit| ${worst.map((w) => w.toExponential(1)).join(', ')}`);
      await s.release();
    });
  }

  it('run-time relative-position buckets equal the constant ones at (Tq, Tk) = (40, 40), (3, 37), (1, 1), past max_distance 16', async () => {
    const g = new Graph('buckets');
    const table = g.initializer('table', { dtype: 'float32', dims: [8, 1], data: Float32Array.from({ length: 8 }, (_, i) => i) });
    const q = g.input('q', 'int64', ['tq']);
    const k = g.input('k', 'int64', ['tk']);
    const len = (v: Value) => g.op('Shape', [v])[0];
    for (const bidirectional of [true, false]) {
      g.output(relativePositionBias(g, () => table, 'table', len(q), len(k), bidirectional, 8, 16), bidirectional ? 'enc' : 'dec');
    }
    const s = await ort.InferenceSession.create(serializeModel(g).model, threads);
    for (const [tq, tk] of [[40, 40], [3, 37], [1, 1]]) {
      const out = await s.run({ q: new ort.Tensor('int64', new BigInt64Array(tq), [tq]), k: new ort.Tensor('int64', new BigInt64Array(tk), [tk]) });
      for (const bidirectional of [true, false]) {
        const c = new Graph('const');
        const t = c.initializer('table', { dtype: 'float32', dims: [8, 1], data: Float32Array.from({ length: 8 }, (_, i) => i) });
        c.output(relativePositionBias(c, () => t, 'table', tq, tk, bidirectional, 8, 16), 'b');
        const cs = await ort.InferenceSession.create(serializeModel(c).model, threads);
        const want = (await cs.run({})).b.data as Float32Array;
        expect(Array.from(out[bidirectional ? 'enc' : 'dec'].data as Float32Array)).toEqual(Array.from(want));
        await cs.release();
      }
    }
    await s.release();
  });
});

describe('GPT variant export', () => {
  const variants: [string, Partial<GptConfig>][] = [
    ['rope', { pos: 'rope' }],
    ['rmsnorm', { norm: 'rmsnorm', norm_eps: 1e-6 }],
    ['swiglu', { mlp: 'swiglu' }],
    ['gqa', { n_kv_head: 1 }],
    ['untied', { tie_embeddings: false }],
    ['all, with biases', { pos: 'rope', norm: 'rmsnorm', mlp: 'swiglu', n_kv_head: 2, tie_embeddings: false, dropout: 0.1 }],
  ];
  it.each(variants)('%s: logits equal gptLogits at batch 1 and 3, length 4 and 11', async (name, opts) => {
    const cfg = GptConfigSchema.parse({ vocab_size: 40, block_size: 12, n_layer: 2, n_head: 4, n_embd: 16, ...opts });
    const weights = initParams(gptParams(cfg), 3);
    const s = await saveAndLoad(exportGpt(cfg, weights), `gpt-${name.replace(/\W+/g, '-')}`);
    for (const [B, T] of [[1, 4], [3, 4], [1, 11], [3, 11]]) {
      const rows = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 11 + t * 5 + 2) % 40));
      const out = await s.run({ input_ids: int64(rows) });
      expect(out.logits.dims).toEqual([B, T, 40]);
      const ref = await builderOutput(gptParams(cfg), weights, { tokens: rows }, (p, i) => gptLogits(cfg, i.tokens, p));
      expectClose(out.logits.data as Float32Array, ref, 1e-5, `${name} (${B}, ${T})`);
    }
    await s.release();
  });

  it('memory-augmented GPT (model.variant memory): logits equal memoryGptLogits at batch 1 and 3, length 4 and 11; cached greedy decoding past block_size equals uncached', async () => {
    const variant = { kind: 'memory' as const, n_memory: 5, memory_layers: [0, 2] };
    const cfg = GptConfigSchema.parse({ vocab_size: 40, block_size: 12, n_layer: 3, n_head: 4, n_embd: 16, dropout: 0.1 });
    const mcfg = memoryConfigOf(cfg, variant);
    const weights = initParams(memoryGptParams(mcfg), 3);
    // Slots far from their init, so the read moves the logits (checked below against zeroed slots).
    weights.set('memory.slots', weights.get('memory.slots')!.map((x) => 50 * x));
    const s = await saveAndLoad(exportGpt(cfg, weights, { memory: variant }), 'gpt-memory');
    const worst: number[] = [];
    for (const [B, T] of [[1, 4], [3, 4], [1, 11], [3, 11]]) {
      const rows = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (b * 11 + t * 5 + 2) % 40));
      const out = await s.run({ input_ids: int64(rows) });
      expect(out.logits.dims).toEqual([B, T, 40]);
      const ref = await builderOutput(memoryGptParams(mcfg), weights, { tokens: rows }, (p, i) => memoryGptLogits(mcfg, i.tokens, p));
      // Observed: 0 (bit-identical at all four shapes).
      worst.push(expectClose(out.logits.data as Float32Array, ref, 1e-5, `memory (${B}, ${T})`));
      if (B === 3 && T === 11) {
        const blank = await builderOutput(memoryGptParams(mcfg), new Map(weights).set('memory.slots', new Float32Array(5 * 16)), { tokens: rows }, (p, i) => memoryGptLogits(mcfg, i.tokens, p));
        expect(Math.max(...ref.map((x, j) => Math.abs(x - blank[j])))).toBeGreaterThan(1e-2);
      }
    }
    await s.release();
    console.log(`memory GPT export: worst |Δlogit| vs the training forward ${worst.map((w) => w.toExponential(1)).join(', ')}`);
    // Without the variant the export reads only the GPT's own weights: the slots' read is missing and
    // the logits differ (why every caller passes the checkpoint's variant, artifacts/checkpoints.ts).
    const plainExport = await saveAndLoad(exportGpt(cfg, weights), 'gpt-memory-dropped');
    const rows = [[1, 2, 3, 4]];
    const dropped = (await plainExport.run({ input_ids: int64(rows) })).logits.data as Float32Array;
    await plainExport.release();
    const ref = await builderOutput(memoryGptParams(mcfg), weights, { tokens: rows }, (p, i) => memoryGptLogits(mcfg, i.tokens, p));
    expect(Math.max(...ref.map((x, j) => Math.abs(x - dropped[j])))).toBeGreaterThan(1e-2);

    const plain = await Decoder.create(exportGpt(cfg, weights, { memory: variant }), decoderInfo(cfg, false), { intraOpThreads: 1 });
    const cached = await Decoder.create(exportGpt(cfg, weights, { memory: variant, kvCache: true }), decoderInfo(cfg, true), { intraOpThreads: 1 });
    const a = await plain.generate([3, 1, 4], { maxNewTokens: 20 }); // 3 + 20 > block_size 12: the window slides
    const b = await cached.generate([3, 1, 4], { maxNewTokens: 20 });
    expect(b).toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(1);
    await plain.release();
    await cached.release();
  });

  it('Llama fixture: llamaToGpt weights export and reproduce HF LlamaForCausalLM (batch 1 and 2, length 12 and 5); the GQA cache holds n_kv_head heads and cached greedy decoding equals uncached', async () => {
    const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'llama/golden.json'), 'utf8')) as { config: unknown; seq: number; tokens: Rows; logits: number[] };
    const cfg = GptConfigSchema.parse(golden.config);
    const hf = readSafetensors(fs.readFileSync(path.join(FIX, 'llama/model.safetensors')), 'model.safetensors').tensors as unknown as Map<string, NamedTensor>;
    const weights = llamaToGpt(cfg, hf);
    const s = await saveAndLoad(exportGpt(cfg, weights), 'llama');
    const shape = [2, golden.seq, cfg.vocab_size];
    const worst: number[] = [];
    for (const [pick, len] of [[[0, 1], 12], [[1], 12], [[0, 1], 5], [[0], 5]] as [number[], number][]) {
      const out = await s.run({ input_ids: int64(cut(golden.tokens, pick, len)) });
      worst.push(expectClose(out.logits.data as Float32Array, goldenRows(golden.logits, shape, pick, len), 1e-4, `llama (${pick.length}, ${len})`));
    }
    await s.release();
    console.log(`Llama export: worst |Δlogit| vs HF ${worst.map((w) => w.toExponential(1)).join(', ')}`);

    const kvGraph = exportGpt(cfg, weights, { kvCache: true });
    const info = decoderInfo(cfg, true);
    expect(info.nHead).toBe(2); // n_kv_head, not n_head (4)
    const { modelPath } = saveModel(kvGraph, path.join(dir, 'llama-kv.onnx'));
    // Prompt of 5 with an empty past, then 3 more tokens on that cache = the same 8 tokens in one uncached call.
    const kv = await ort.InferenceSession.create(modelPath, threads);
    const empty = () => new ort.Tensor('float32', new Float32Array(0), [2, 2, 0, 4 * 2]);
    const feeds: Record<string, ort.Tensor> = { input_ids: int64(cut(golden.tokens, [0, 1], 5)) };
    for (let l = 0; l < cfg.n_layer; l++) [feeds[`past_key_values.${l}.key`], feeds[`past_key_values.${l}.value`]] = [empty(), empty()];
    const first = await kv.run(feeds);
    expect(first[presentKeyName(0)].dims).toEqual([2, 2, 5, 8]);
    const next: Record<string, ort.Tensor> = { input_ids: int64(golden.tokens.map((r) => r.slice(5, 8))) };
    for (let l = 0; l < cfg.n_layer; l++) [next[`past_key_values.${l}.key`], next[`past_key_values.${l}.value`]] = [first[`present.${l}.key`], first[`present.${l}.value`]];
    const second = await kv.run(next);
    expect(second[presentKeyName(1)].dims).toEqual([2, 2, 8, 8]);
    const cachedTail = second.logits.data as Float32Array; // (2, 3, V) for positions 5..7
    const full = goldenRows(golden.logits, shape, [0, 1], 8);
    const V = cfg.vocab_size;
    const fullTail = [0, 1].flatMap((b) => full.slice((b * 8 + 5) * V, (b * 8 + 8) * V));
    expectClose(cachedTail, fullTail, 1e-4, 'cached positions 5..7 vs HF');
    await kv.release();

    const plain = await Decoder.create(exportGpt(cfg, weights), decoderInfo(cfg, false), { intraOpThreads: 1 });
    const cached = await Decoder.create(modelPath, info, { intraOpThreads: 1 });
    const prompt = golden.tokens[0].slice(0, 4);
    const a = await plain.generate(prompt, { maxNewTokens: 12 });
    const b = await cached.generate(prompt, { maxNewTokens: 12 });
    expect(b).toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(1);
    await plain.release();
    await cached.release();
  });
});
