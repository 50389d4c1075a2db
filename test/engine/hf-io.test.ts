// Hugging Face folders in and out (engine/hf): the save_pretrained fixtures of
// test/fixtures/hf-io (GPT-2 float32 with a tokenizer, Llama GQA untied bfloat16 sharded, Mistral
// float16 tied) import into our GPT and reproduce transformers' logits; an export re-imports to
// the same weights; configs whose math we cannot reproduce are refused naming the key.

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { serializeModel } from '../../engine/graph/onnx';
import { readHfFolder as readAny, toFloat32, writeHfFolder, HfFolder } from '../../engine/hf';
import { exportGpt } from '../../engine/models/export';
import { Graph } from '../../engine/graph/ir';
import { bertClassifierLogits, bertEncoder, bertMlmLogits, BertConfigSchema } from '../../engine/models/bert';
import type { BertModelConfig } from '../../engine/hf';
import { t5Logits, type T5Config } from '../../engine/models/t5';
import { hfAdapterFiles } from '../../engine/hf/peft';
import { loraScale, saveAdapter } from '../../engine/lora';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { exportArchitecture } from '../../engine/hf';
import { seededAdapter } from '../fixtures/hf-io/lora-adapter';
import { gptParams, type GptConfig } from '../../engine/models/gpt';
import { SafetensorsError } from '../../engine/checkpoint/safetensors';
import { sha256 } from '../../engine/checkpoint/checkpoint';
import { prepareDataset, shardTokens } from '../../engine/data/dataset';
import { HfTokenizer, loadTokenizer } from '../../engine/data/tokenizer';

const FIX = path.join(__dirname, '..', 'fixtures', 'hf-io');
const FIXTURES = ['gpt2', 'llama', 'mistral'] as const;

interface Golden {
  input_ids: number[][];
  logits_shape: number[];
  logits: number[];
}
const golden = (name: string) => JSON.parse(fs.readFileSync(path.join(FIX, name, 'golden.json'), 'utf8')) as Golden;

async function logits(config: GptConfig, weights: Map<string, Float32Array>, ids: number[][]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(serializeModel(exportGpt(config, weights)).model);
  const feeds = { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.flat(), BigInt), [ids.length, ids[0]!.length]) };
  const out = await session.run(feeds);
  await session.release();
  return out.logits!.data as Float32Array;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

/** A GPT folder's import (the GPT fixtures). */
function readHfFolder(dir: string) {
  const m = readAny(dir);
  if (m.family !== 'gpt') throw new Error(`${dir}: expected a GPT folder, got ${m.family}`);
  return m;
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hf-io-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of a fixture folder with config.json edited. */
function withConfig(name: string, edit: (c: Record<string, unknown>) => void): string {
  const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
  for (const f of fs.readdirSync(path.join(FIX, name))) fs.copyFileSync(path.join(FIX, name, f), path.join(dir, f));
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c));
  return dir;
}

/**
 * Largest |ours - HF float64| over the logits; observed on AMD EPYC (AVX2): gpt2 3.5e-7,
 * llama 1.1e-6, mistral 1.4e-6. Tolerance ~10x for kernel and sum-order differences.
 */
const LOGIT_ATOL = 1e-5;

describe('HF folder import', () => {
  test.each(FIXTURES)('%s: our logits equal transformers\' (float64 reference)', async (name) => {
    const m = readHfFolder(path.join(FIX, name));
    const g = golden(name);
    const ours = await logits(m.config, m.weights, g.input_ids);
    expect(maxAbsDiff(ours, g.logits)).toBeLessThan(LOGIT_ATOL);
  });

  test('records the architecture, the source dtype, every file\'s sha256 and an explicit config', () => {
    const gpt2 = readHfFolder(path.join(FIX, 'gpt2'));
    expect(gpt2.architecture).toBe('GPT2LMHeadModel');
    expect(gpt2.sourceDtypes).toEqual(['float32']);
    expect(gpt2.files.map((f) => f.name)).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(gpt2.tokenizerFiles.has('tokenizer.json')).toBe(true);
    // GPT2Config's dropouts (0.1) and the tanh GELU are honoured; nothing is left to a default.
    expect(gpt2.config).toMatchObject({ pos: 'learned', norm: 'layernorm', norm_eps: 1e-5, mlp: 'gelu', n_inner: 64, dropout: 0.1, tie_embeddings: true });

    const llama = readHfFolder(path.join(FIX, 'llama'));
    expect(llama.sourceDtypes).toEqual(['bfloat16']);
    expect(llama.files.map((f) => f.name)).toEqual(['config.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(llama.config).toMatchObject({ pos: 'rope', rope_theta: 5000, norm: 'rmsnorm', norm_eps: 1e-6, mlp: 'swiglu', n_inner: 48, n_kv_head: 2, tie_embeddings: false, bias: false });
    expect(llama.params).toBe(19616); // LlamaForCausalLM.num_parameters() of the fixture

    const mistral = readHfFolder(path.join(FIX, 'mistral'));
    expect(mistral.sourceDtypes).toEqual(['float16']);
    expect(mistral.config).toMatchObject({ n_kv_head: 1, tie_embeddings: true });
  });

  test('float16 and bfloat16 widen exactly', () => {
    // 1.5 = 0x3e00 (f16) = 0x3fc0 (bf16); -2^-24 is the smallest f16 subnormal; f16 0x7c00 is +inf.
    expect(Array.from(toFloat32('float16', new Uint8Array(new Uint16Array([0x3e00, 0x8001, 0x7c00]).buffer)))).toEqual([1.5, -(2 ** -24), Infinity]);
    expect(Array.from(toFloat32('bfloat16', new Uint8Array(new Uint16Array([0x3fc0, 0xc000]).buffer)))).toEqual([1.5, -2]);
  });
});

describe('HF folder export', () => {
  test.each(FIXTURES)('%s: export → re-import gives the same weights and logits', async (name) => {
    const m = readHfFolder(path.join(FIX, name));
    const out = path.join(tmp, `export-${name}`);
    const w = writeHfFolder(out, { family: 'gpt', config: m.config, weights: m.weights, specialTokens: m.specialTokens, tokenizerFiles: m.tokenizerFiles });
    expect(w.architecture).toBe(name === 'gpt2' ? 'GPT2LMHeadModel' : 'LlamaForCausalLM');
    const back = readHfFolder(out);
    expect(back.config).toEqual(m.config);
    for (const s of gptParams(m.config)) expect(back.weights.get(s.name)).toEqual(m.weights.get(s.name));
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg.architectures).toEqual([w.architecture]);
    expect(fs.existsSync(path.join(out, 'generation_config.json'))).toBe(true);
    expect(fs.existsSync(path.join(out, 'tokenizer.json'))).toBe(name === 'gpt2');
    // An untied head is written only when untied (HF strict loading: no unexpected key).
    expect(HfFolder.open(out).has('lm_head.weight')).toBe(!m.config.tie_embeddings);
    const g = golden(name);
    expect(maxAbsDiff(await logits(back.config, back.weights, g.input_ids), await logits(m.config, m.weights, g.input_ids))).toBe(0);
  });

  test('a GPT trained without biases exports as GPT-2 with zero biases, and an options mix HF has no class for is refused', async () => {
    const m = readHfFolder(path.join(FIX, 'gpt2'));
    const config = { ...m.config, bias: false };
    const weights = new Map([...m.weights].filter(([k]) => !k.endsWith('.bias')));
    const out = path.join(tmp, 'export-nobias');
    writeHfFolder(out, { family: 'gpt', config, weights });
    const back = readHfFolder(out);
    const g = golden('gpt2');
    expect(maxAbsDiff(await logits(back.config, back.weights, g.input_ids), await logits(config, weights, g.input_ids))).toBe(0);
    expect(() => writeHfFolder(path.join(tmp, 'export-mix'), { family: 'gpt', config: { ...m.config, norm: 'rmsnorm' }, weights })).toThrow(/GPT2LMHeadModel needs pos 'learned', norm 'layernorm', mlp 'gelu'; this model has pos 'learned', norm 'rmsnorm'/);
    expect(() => writeHfFolder(out, { family: 'gpt', config, weights })).toThrow(/export folder is not empty/);
  });
});

describe('HF configs we cannot reproduce are refused, naming the key', () => {
  const cases: [string, string, (c: Record<string, unknown>) => void, RegExp][] = [
    ['gpt2', 'erf GELU', (c) => (c.activation_function = 'gelu'), /activation_function = "gelu": our GPT-2 MLP is GELU with the tanh approximation/],
    ['gpt2', 'inverse layer scaling', (c) => (c.scale_attn_by_inverse_layer_idx = true), /scale_attn_by_inverse_layer_idx = true/],
    ['gpt2', 'unequal dropouts', (c) => (c.attn_pdrop = 0.2), /attn_pdrop = 0.2: our GPT has one dropout ratio/],
    ['gpt2', 'cross-attention', (c) => (c.add_cross_attention = true), /add_cross_attention = true/],
    ['llama', 'rope scaling (v4 key)', (c) => (c.rope_scaling = { rope_type: 'linear', factor: 2 }), /rope_scaling = \{"rope_type":"linear","factor":2\}: scaled rotary/],
    ['llama', 'rope scaling (v5 key)', (c) => (c.rope_parameters = { rope_type: 'llama3', rope_theta: 5e5, factor: 8 }), /rope_parameters = .*rope_type "llama3"/],
    ['llama', 'gelu MLP', (c) => (c.hidden_act = 'gelu'), /hidden_act = "gelu": our SwiGLU MLP gates with silu/],
    ['llama', 'attention bias only', (c) => (c.attention_bias = true), /attention_bias = true: our GPT has biases on every linear layer or on none/],
    ['llama', 'head_dim', (c) => (c.head_dim = 16), /head_dim = 16: our attention's head size is hidden_size \/ num_attention_heads = 8/],
    ['mistral', 'short sliding window', (c) => (c.sliding_window = 8), /sliding_window = 8: a sliding window shorter than max_position_embeddings \(16\)/],
    ['llama', 'Qwen2', (c) => (c.architectures = ['Qwen2ForCausalLM']), /architectures \["Qwen2ForCausalLM"\] is not supported: Qwen2 has biases on the q\/k\/v projections only/],
    ['llama', 'unknown architecture', (c) => (c.architectures = ['FalconForCausalLM']), /architectures \["FalconForCausalLM"\] is not supported; supported: GPT2LMHeadModel/],
  ];
  test.each(cases)('%s: %s', (fixture, _what, edit, message) => {
    const dir = withConfig(fixture, edit);
    expect(() => readHfFolder(dir)).toThrow(message);
    expect(() => readHfFolder(dir)).toThrow(path.join(dir, 'config.json'));
  });

  test('a config the weights do not fit names the file and the tensor', () => {
    const dir = withConfig('gpt2', (c) => (c.n_inner = 32));
    expect(() => readHfFolder(dir)).toThrow(SafetensorsError);
    expect(() => readHfFolder(dir)).toThrow(`${path.join(dir, 'model.safetensors')}: tensor "transformer.h.0.mlp.c_fc.weight": shape [16, 64], the config needs [16, 32]`);
  });

  test('tensors the architecture does not have are refused, not dropped', () => {
    const dir = withConfig('llama', (c) => (c.num_hidden_layers = 1));
    expect(() => readHfFolder(dir)).toThrow(/tensors that LlamaForCausalLM with this config.json does not have: "model.layers.1.input_layernorm.weight"/);
  });

  test('a folder without weights or config says what it expected', () => {
    const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
    expect(() => readHfFolder(empty)).toThrow(`${empty}: has no config.json`);
    fs.copyFileSync(path.join(FIX, 'gpt2', 'config.json'), path.join(empty, 'config.json'));
    fs.writeFileSync(path.join(empty, 'pytorch_model.bin'), '');
    expect(() => readHfFolder(empty)).toThrow(/has neither model.safetensors nor model.safetensors.index.json \(it has pytorch_model.bin: re-save with save_pretrained\(dir, safe_serialization=True\)\)/);
  });
});

describe('an imported tokenizer.json (hf tokenizer kind)', () => {
  const json = fs.readFileSync(path.join(FIX, 'gpt2', 'tokenizer.json'), 'utf8');
  const ref = { key: 'models/tiny-gpt2/tokenizer.json', sha256: sha256(Buffer.from(json)) };
  const g = JSON.parse(fs.readFileSync(path.join(FIX, 'gpt2', 'golden.json'), 'utf8')) as { sample_text: string; sample_ids: number[]; vocab_size: number; eot: number };

  test('encodes exactly as Python tokenizers did, decodes back, and saves only a reference', async () => {
    const tok = HfTokenizer.fromJson(json, ref);
    expect(await tok.encode(g.sample_text)).toEqual(g.sample_ids);
    expect(await tok.decode(g.sample_ids)).toBe(g.sample_text);
    expect([tok.vocabSize, tok.eot]).toEqual([g.vocab_size, g.eot]);
    expect(tok.toJSON()).toEqual({ kind: 'hf', ...ref, eot: g.eot });
    expect(() => loadTokenizer(tok.toJSON())).toThrow(/an hf tokenizer is loaded with the text of its tokenizer.json/);
    expect(await loadTokenizer(tok.toJSON(), json).encode(g.sample_text)).toEqual(g.sample_ids);
  });

  test('tokenizes a dataset, with the reference saved beside the shards', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'ds-'));
    const corpus = path.join(dir, 'corpus.txt');
    fs.writeFileSync(corpus, g.sample_text);
    const out = path.join(dir, 'out');
    const m = await prepareDataset({ name: 'hf-tok', corpus: { kind: 'text', path: corpus }, tokenizer: { kind: 'hf', ...ref }, valFraction: 0 }, out, undefined, json);
    expect(m.tokenizer).toMatchObject({ vocabSize: g.vocab_size, eot: g.eot });
    const ids = Array.from(shardTokens(fs.readFileSync(path.join(out, m.splits.train[0]!.file)), m.dtype));
    expect(ids).toEqual([...g.sample_ids, g.eot]); // the document, then end-of-text
    expect(JSON.parse(fs.readFileSync(path.join(out, 'tokenizer.json'), 'utf8'))).toEqual({ kind: 'hf', ...ref, eot: g.eot });
  });

  test('a spec without the tokenizer text, or a file that is not a tokenizer, is named', async () => {
    await expect(prepareDataset({ name: 'x', corpus: { kind: 'text', path: 'unused' }, tokenizer: { kind: 'hf', ...ref } }, path.join(tmp, 'x'))).rejects.toThrow(`tokenizer ${ref.key}: prepareDataset needs the text`);
    expect(() => HfTokenizer.fromJson('{"version": 1}', ref)).toThrow(`${ref.key}: not a tokenizer.json the tokenizers library loads`);
  });
});

/** BERT logits with the imported weights as initializers: MLM (B·T, V) or classification (B, L). */
async function bertLogits(cfg: BertModelConfig, weights: Map<string, Float32Array>, specs: { name: string; shape: number[] }[], ids: number[][]): Promise<Float32Array> {
  const g = new Graph('bert');
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  const p = (name: string) => (g.values.has(name) ? g.value(name) : g.initializer(name, { dtype: 'float32', dims: shapes.get(name)!, data: weights.get(name)! }));
  const enc = BertConfigSchema.parse(Object.fromEntries(Object.entries(cfg).filter(([k]) => k !== 'head')));
  const inputIds = g.input('input_ids', 'int64', [ids.length, ids[0]!.length]);
  const out = cfg.head.kind === 'mlm' ? bertMlmLogits(enc, bertEncoder(enc, { inputIds }, p), p) : bertClassifierLogits(enc, { inputIds }, p);
  g.output(out, 'logits');
  const session = await ort.InferenceSession.create(serializeModel(g).model);
  const r = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.flat(), BigInt), [ids.length, ids[0]!.length]) });
  await session.release();
  return r.logits!.data as Float32Array;
}

describe('BERT folders', () => {
  /** Observed on AMD EPYC: bert_mlm 7.2e-8, bert_cls 1.5e-8; tolerance ~10x. */
  const BERT_ATOL = 1e-6;

  test.each(['bert_mlm', 'bert_cls'])('%s: our logits equal transformers\' (float64 reference), and export → re-import is identical', async (name) => {
    const m = readAny(path.join(FIX, name));
    if (m.family !== 'bert') throw new Error('expected BERT');
    const g = golden(name);
    const ours = await bertLogits(m.config, m.weights, m.specs, g.input_ids);
    expect(maxAbsDiff(ours, g.logits)).toBeLessThan(BERT_ATOL);
    const out = path.join(tmp, `export-${name}`);
    const w = writeHfFolder(out, { family: 'bert', config: m.config, weights: m.weights });
    expect(w.architecture).toBe(name === 'bert_mlm' ? 'BertForMaskedLM' : 'BertForSequenceClassification');
    const back = readAny(out);
    expect(back.config).toEqual(m.config);
    for (const s of m.specs) expect(back.weights.get(s.name)).toEqual(m.weights.get(s.name));
  });

  test('records the head: masked LM without a pooler; a classifier with its labels', () => {
    const mlm = readAny(path.join(FIX, 'bert_mlm'));
    expect(mlm).toMatchObject({ family: 'bert', architecture: 'BertForMaskedLM', config: { add_pooling_layer: false, layer_norm_eps: 1e-12, head: { kind: 'mlm' } } });
    const cls = readAny(path.join(FIX, 'bert_cls'));
    expect(cls).toMatchObject({ family: 'bert', sourceDtypes: ['float16'], config: { add_pooling_layer: true, head: { kind: 'classification', num_labels: 3, id2label: { 0: 'ham', 1: 'spam', 2: 'unsure' } } } });
  });

  test.each([
    ['hidden_act', 'gelu_new', /hidden_act = "gelu_new": our BERT uses the exact \(erf\) GELU/],
    ['position_embedding_type', 'relative_key', /position_embedding_type = "relative_key": our BERT has learned absolute positions only/],
    ['is_decoder', true, /is_decoder = true/],
    ['problem_type', 'multi_label_classification', /problem_type = "multi_label_classification": our classifier is trained with softmax cross-entropy/],
  ])('refuses %s = %p naming it', (key, value, message) => {
    const dir = withConfig('bert_cls', (c) => (c[key] = value));
    expect(() => readAny(dir)).toThrow(message);
  });
});

/** T5 LM logits (B·Tt, V) with the imported weights as initializers. */
async function t5LogitsOf(cfg: T5Config, weights: Map<string, Float32Array>, specs: { name: string; shape: number[] }[], ids: number[][], dec: number[][]): Promise<Float32Array> {
  const g = new Graph('t5');
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  const p = (name: string) => (g.values.has(name) ? g.value(name) : g.initializer(name, { dtype: 'float32', dims: shapes.get(name)!, data: weights.get(name)! }));
  const inputIds = g.input('input_ids', 'int64', [ids.length, ids[0]!.length]);
  const decoderInputIds = g.input('decoder_input_ids', 'int64', [dec.length, dec[0]!.length]);
  g.output(t5Logits(cfg, { inputIds, decoderInputIds }, p), 'logits');
  const session = await ort.InferenceSession.create(serializeModel(g).model);
  const feed = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0]!.length]);
  const r = await session.run({ input_ids: feed(ids), decoder_input_ids: feed(dec) });
  await session.release();
  return r.logits!.data as Float32Array;
}

describe('T5 folders', () => {
  /** Observed on AMD EPYC: t5 (v1.0, ReLU, tied) 8.5e-8, t5_gated (v1.1, gated-GELU) 1.1e-6; tolerance ~10x. */
  const T5_ATOL = 1e-5;

  test.each(['t5', 't5_gated'])('%s: our logits equal transformers\' (float64 reference), and export → re-import is identical', async (name) => {
    const m = readAny(path.join(FIX, name));
    if (m.family !== 't5') throw new Error('expected T5');
    const g = JSON.parse(fs.readFileSync(path.join(FIX, name, 'golden.json'), 'utf8')) as Golden & { decoder_input_ids: number[][] };
    const ours = await t5LogitsOf(m.config, m.weights, m.specs, g.input_ids, g.decoder_input_ids);
    expect(maxAbsDiff(ours, g.logits)).toBeLessThan(T5_ATOL);
    const out = path.join(tmp, `export-${name}`);
    expect(writeHfFolder(out, { family: 't5', config: m.config, weights: m.weights }).architecture).toBe('T5ForConditionalGeneration');
    const back = readAny(out);
    expect(back.config).toEqual(m.config);
    for (const s of m.specs) expect(back.weights.get(s.name)).toEqual(m.weights.get(s.name));
  });

  test('v1.0 is ReLU with a tied, scaled head; a transformers-5 v1.1 folder (tied, unscaled) becomes our untied head', () => {
    expect(readAny(path.join(FIX, 't5')).config).toMatchObject({ feed_forward_proj: 'relu', tie_word_embeddings: true });
    const gated = readAny(path.join(FIX, 't5_gated'));
    expect(gated).toMatchObject({ sourceDtypes: ['bfloat16'], config: { feed_forward_proj: 'gated-gelu', tie_word_embeddings: false } });
    expect(gated.weights.get('lm_head.weight')).toEqual(gated.weights.get('shared.weight'));
  });

  test.each([
    ['feed_forward_proj', 'gated-relu', /feed_forward_proj = "gated-relu": our T5 feed-forward is 'relu' \(v1.0\) or 'gated-gelu' \(v1.1\)/],
    ['dense_act_fn', 'gelu', /dense_act_fn = "gelu": feed_forward_proj "relu" computes with relu/],
    ['scale_decoder_outputs', true, /scale_decoder_outputs = true: scaling the decoder output with an untied head/],
  ])('refuses %s = %p naming it', (key, value, message) => {
    const dir = withConfig('t5', (c) => {
      c[key] = value;
      if (key === 'scale_decoder_outputs') c.tie_word_embeddings = false;
    });
    expect(() => readAny(dir)).toThrow(message);
  });
});

describe('LoRA adapters as PEFT files for the exported class', () => {
  test.each(['llama', 'gpt2'])('%s: base + s·B·A of every PEFT module equals our merged export', (name) => {
    const m = readHfFolder(path.join(FIX, name));
    const { plan, adapters, merged } = seededAdapter(m.config, m.weights);
    const files = hfAdapterFiles(m.config, saveAdapter(plan, adapters), 'exported-base');
    const cfg = JSON.parse(files.get('adapter_config.json')!.toString()) as Record<string, unknown>;
    const peft = readSafetensors(files.get('adapter_model.safetensors')!).tensors;
    const arch = exportArchitecture(m.config);
    const base = arch.weightsToHf(m.config, m.weights);
    const want = arch.weightsToHf(m.config, merged);
    const s = loraScale(plan.config);
    const modules = [...peft.keys()].filter((k) => k.endsWith('.lora_A.weight')).map((k) => k.slice('base_model.model.'.length, -'.lora_A.weight'.length));
    expect(cfg.base_model_name_or_path).toBe('exported-base');
    if (name === 'llama') {
      expect(cfg.target_modules).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
      expect(cfg.fan_in_fan_out).toBe(false);
      expect(modules).toHaveLength(14); // 7 projections × 2 layers
    } else expect(modules).toHaveLength(8); // c_attn, attn.c_proj, c_fc, mlp.c_proj × 2 layers
    let worst = 0;
    for (const mod of modules) {
      const A = peft.get(`base_model.model.${mod}.lora_A.weight`)!;
      const B = peft.get(`base_model.model.${mod}.lora_B.weight`)!;
      const W = base.get(`${mod}.weight`)!;
      const [r, nIn] = A.dims as [number, number];
      const nOut = B.dims[0]!;
      const inOut = name === 'gpt2'; // Conv1D (in, out) vs torch Linear (out, in)
      for (let o = 0; o < nOut; o++) {
        for (let i = 0; i < nIn; i++) {
          let acc = 0;
          for (let k = 0; k < r; k++) acc += (B.data[o * r + k] as number) * (A.data[k * nIn + i] as number);
          const at = inOut ? i * nOut + o : o * nIn + i;
          worst = Math.max(worst, Math.abs((W.data[at] as number) + s * acc - (want.get(`${mod}.weight`)!.data[at] as number)));
        }
      }
    }
    // Our merge rounds W + s·ΔW to float32 once, this check compares in float64: observed llama
    // 2.9e-8, gpt2 4.6e-8 (half a float32 ulp of the weights).
    expect(worst).toBeLessThan(5e-7);
  });

  test('a module the class has no counterpart for is named', () => {
    const m = readHfFolder(path.join(FIX, 'llama'));
    const { plan, adapters } = seededAdapter(m.config, m.weights);
    const files = saveAdapter({ ...plan, adapterParams: plan.adapterParams.map((p) => ({ ...p, name: p.name.replace('h.0.attn.c_proj', 'h.0.attn.c_out') })) }, new Map([...adapters].map(([k, v]) => [k.replace('h.0.attn.c_proj', 'h.0.attn.c_out'), v])));
    expect(() => hfAdapterFiles(m.config, files, null)).toThrow('adapter module h.0.attn.c_out has no LlamaForCausalLM counterpart');
  });
});
