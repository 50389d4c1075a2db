// `truthgpt import` → the store → `truthgpt export --format hf`, as a user runs them, against a real
// S3 server (s3rver): the stored model is a checkpoint our readers take unchanged and that
// reproduces transformers' logits; the export re-imports to the same weights and carries the
// tokenizer; trained checkpoints (also ones written before `family` existed) and merged
// fine-tunes of an imported model export too; mistakes get one line naming what to fix.

import '../../engine/runtime/host-realm';
import '../../engine/autodiff/rules';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { checkpointWeights, commitCheckpoint, readCheckpoint, toTensors } from '../../artifacts/checkpoints';
import { peftBaseName } from '../../artifacts/hf-models';
import { loadBase } from '../../artifacts/models';
import { serializeModel } from '../../engine/graph/onnx';
import { HfTokenizer } from '../../engine/data/tokenizer';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { saveAdapter } from '../../engine/lora';
import { seededAdapter } from '../fixtures/hf-io/lora-adapter';
import { readHfFolder } from '../../engine/hf';
import { exportGpt } from '../../engine/models/export';
import { initParams } from '../../engine/models/blocks';
import { gptParams, type GptConfig } from '../../engine/models/gpt';
import { LOCAL_S3_CREDENTIALS } from '../../infra/s3server';
import { withS3, type S3Fixture } from '../helpers/s3';

const BIN = path.join(__dirname, '..', '..', 'bin', 'truthgpt.js');
const FIX = path.join(__dirname, '..', 'fixtures', 'hf-io');

let s3: S3Fixture;
let tmp: string;
beforeAll(async () => {
  s3 = await withS3();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hf-cli-'));
});
afterAll(async () => {
  await s3.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = {
    ...process.env,
    TRUTHGPT_S3_ENDPOINT: s3.settings.endpoint,
    TRUTHGPT_S3_BUCKET: s3.settings.bucket,
    TRUTHGPT_S3_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
    TRUTHGPT_S3_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
  };
  return promisify(execFile)(process.execPath, [BIN, ...args], { env, timeout: 60_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code?: number; stdout: string; stderr: string }) => ({ code: e.code ?? 1, stdout: e.stdout, stderr: e.stderr }),
  );
}

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

async function logits(config: GptConfig, weights: Map<string, Float32Array>, ids: number[][]): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(serializeModel(exportGpt(config, weights)).model);
  const out = await session.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.flat(), BigInt), [ids.length, ids[0]!.length]) });
  await session.release();
  return out.logits!.data as Float32Array;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

test('import GPT-2 → a checkpoint with the tokenizer beside it → export as HF → the same model', async () => {
  const src = path.join(FIX, 'gpt2');
  const imp = await cli('import', src, '--name', 'tiny-gpt2', '--json');
  expect(imp.stderr).toBe('');
  expect(imp.code).toBe(0);
  const r = JSON.parse(imp.stdout) as { ref: string; family: string; architecture: string; params: number; files: { name: string; sha256: string }[]; tokenizer: { key: string; sha256: string } };
  expect(r).toMatchObject({ ref: 'models/tiny-gpt2', family: 'gpt', architecture: 'GPT2LMHeadModel', params: 11648 });
  for (const f of r.files) expect(f.sha256).toBe(sha256(path.join(src, f.name)));
  expect(r.tokenizer).toEqual({ key: 'models/tiny-gpt2/tokenizer.json', sha256: sha256(path.join(src, 'tokenizer.json')) });

  // The stored model is an ordinary checkpoint: family, explicit config, no optimizer state.
  const ck = await readCheckpoint(s3.store, r.ref);
  expect(ck.state.family).toBe('gpt');
  expect(ck.optimizer.size).toBe(0);
  const { config, weights } = await checkpointWeights(s3.store, r.ref);
  const golden = JSON.parse(fs.readFileSync(path.join(src, 'golden.json'), 'utf8')) as { input_ids: number[][]; logits: number[]; eot: number };
  // Observed 3.5e-7 against transformers' float64 logits (test/engine/hf-io.test.ts).
  expect(maxAbsDiff(await logits(config, weights, golden.input_ids), golden.logits)).toBeLessThan(1e-5);

  // A LoRA fine-tune takes it as its base unchanged.
  const base = await loadBase(s3.store, { kind: 'checkpoint', prefix: r.ref });
  if (base.kind !== 'checkpoint') throw new Error('expected a checkpoint base');
  expect(base.config).toEqual(config);
  expect(base.weights.get('wte')).toEqual(weights.get('wte'));

  // `generate` decodes with the tokenizer.json stored beside the model (vocab 300 matches no built-in tokenizer).
  const gen = await cli('generate', '--model', r.ref, '--max-new-tokens', '3', '--json', 'The lazy fox');
  expect(gen.code).toBe(0);
  const text = (JSON.parse(gen.stdout) as { text: string; tokens: number }).text;
  const tok = HfTokenizer.fromJson(fs.readFileSync(path.join(src, 'tokenizer.json'), 'utf8'), r.tokenizer);
  expect((await tok.encode(text)).length).toBeGreaterThan(0);

  // The same folder again under the same name is a no-op; another folder under it is refused.
  const again = await cli('import', src, '--name', 'tiny-gpt2');
  expect([again.code, again.stdout.trim()]).toEqual([0, 'models/tiny-gpt2']);
  expect(again.stderr).toMatch(/already stored/);
  const clash = await cli('import', path.join(FIX, 'llama'), '--name', 'tiny-gpt2');
  expect(clash.code).toBe(1);
  expect(clash.stderr.trim()).toBe('truthgpt: model name "tiny-gpt2": models/tiny-gpt2 already holds a model imported from gpt2; choose another --name');

  const out = path.join(tmp, 'gpt2-out');
  const exp = await cli('export', r.ref, '--format', 'hf', '--out', out);
  expect(exp.code).toBe(0);
  expect(exp.stdout.trim()).toBe(`${out} (GPT2LMHeadModel: config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json)`);
  expect(sha256(path.join(out, 'tokenizer.json'))).toBe(sha256(path.join(src, 'tokenizer.json')));
  const back = readHfFolder(out);
  for (const s of gptParams(config)) expect(back.weights.get(s.name)).toEqual(weights.get(s.name));
  expect(back.specialTokens).toMatchObject({ bos: golden.eot, eos: golden.eot });
});

test('a bfloat16 sharded Llama imports and exports; trained and merged checkpoints export too', async () => {
  const imp = await cli('import', path.join(FIX, 'llama'));
  expect([imp.code, imp.stdout.trim()]).toEqual([0, 'models/llama']);
  const out = path.join(tmp, 'llama-out');
  expect((await cli('export', 'models/llama', '--format', 'hf', '--out', out)).code).toBe(0);
  const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'llama', 'golden.json'), 'utf8')) as { input_ids: number[][]; logits: number[] };
  const back = readHfFolder(out);
  expect(back.architecture).toBe('LlamaForCausalLM');
  if (back.family !== 'gpt') throw new Error('expected a GPT');
  // Observed 1.1e-6 (test/engine/hf-io.test.ts).
  expect(maxAbsDiff(await logits(back.config, back.weights, golden.input_ids), golden.logits)).toBeLessThan(1e-5);

  // A training checkpoint as createModel wrote them before `family` and explicit options existed.
  const cfg: GptConfig = { vocab_size: 64, block_size: 16, n_layer: 1, n_head: 2, n_embd: 16, bias: true };
  const specs = gptParams(cfg);
  const w = initParams(specs, 1);
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  await commitCheckpoint(s3.store, 'runs/old-run/global/r000000', { weights: toTensors(w, shapes), optimizer: new Map(), state: { modelConfig: cfg, runConfig: {}, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] } });
  const trainedOut = path.join(tmp, 'trained-out');
  expect((await cli('export', 'runs/old-run/global/r000000', '--format', 'hf', '--out', trainedOut)).code).toBe(0);
  const trained = readHfFolder(trainedOut);
  expect(trained.architecture).toBe('GPT2LMHeadModel');
  for (const s of specs) expect(trained.weights.get(s.name)).toEqual(w.get(s.name));

  // A merged fine-tune of an imported model: the export carries the import's tokenizer.
  const base = await checkpointWeights(s3.store, 'models/tiny-gpt2');
  await commitCheckpoint(s3.store, 'finetunes/ft-1/merged', {
    weights: toTensors(base.weights, new Map(gptParams(base.config).map((s) => [s.name, s.shape]))),
    optimizer: new Map(),
    state: { family: 'gpt', modelConfig: base.config, runConfig: { mergedFrom: { base: 'models/tiny-gpt2', adapter: 'finetunes/ft-1/adapter' } }, step: 0, round: 0, bestValLoss: null, dataCursor: null, rng: [] },
  });
  const mergedOut = path.join(tmp, 'merged-out');
  const merged = await cli('export', 'finetunes/ft-1/merged', '--format', 'hf', '--out', mergedOut, '--json');
  expect(merged.code).toBe(0);
  expect(JSON.parse(merged.stdout)).toMatchObject({ prefix: 'finetunes/ft-1/merged', architecture: 'GPT2LMHeadModel', importedFrom: 'models/tiny-gpt2' });
  expect(fs.existsSync(path.join(mergedOut, 'tokenizer.json'))).toBe(true);

  // A Llama fine-tune's adapter exports as PEFT files for LlamaForCausalLM, beside the exported base
  // (make_hf_io_fixtures.py checks PeftModel on such files against our merge).
  const llama = readHfFolder(path.join(FIX, 'llama'));
  if (llama.family !== 'gpt') throw new Error('expected a GPT');
  const { plan, adapters } = seededAdapter(llama.config, llama.weights);
  await s3.store.commit('finetunes/ft-2/adapter', Object.fromEntries(saveAdapter(plan, adapters, { baseModelNameOrPath: 'models/llama' })), { base: { kind: 'checkpoint', location: 'models/llama', files: {} } });
  const adapterOut = path.join(tmp, 'llama-adapter');
  const ad = await cli('export', 'finetunes/ft-2/adapter', '--format', 'hf', '--out', adapterOut, '--base', out);
  expect([ad.code, ad.stdout.trim()]).toEqual([0, `${adapterOut} (PEFT LoRA for LlamaForCausalLM: adapter_model.safetensors, adapter_config.json)`]);
  const adCfg = JSON.parse(fs.readFileSync(path.join(adapterOut, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  expect(adCfg).toMatchObject({ base_model_name_or_path: out, fan_in_fan_out: false, target_modules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'] });
  expect([...readSafetensors(fs.readFileSync(path.join(adapterOut, 'adapter_model.safetensors'))).tensors.keys()]).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');

  // PEFT adapters name a base PEFT can resolve: the imported GPT-2's source (no _name_or_path in
  // this folder's config, so its folder name); other bases keep their store location.
  expect(await peftBaseName(s3.store, 'models/tiny-gpt2')).toBe('gpt2');
  expect(await peftBaseName(s3.store, 'models/llama')).toBe('models/llama');
  expect(await peftBaseName(s3.store, 'runs/old-run/global/r000000')).toBe('runs/old-run/global/r000000');
});

test('a BERT classifier and a T5 v1.1 import as bert/t5 checkpoints and export back; GPT-only commands say so', async () => {
  const imp = await cli('import', path.join(FIX, 'bert_cls'), '--json');
  expect(imp.code).toBe(0);
  expect(JSON.parse(imp.stdout)).toMatchObject({ ref: 'models/bert_cls', family: 'bert', architecture: 'BertForSequenceClassification', params: 18851, sourceDtypes: ['float16'] });
  expect((await readCheckpoint(s3.store, 'models/bert_cls')).state.family).toBe('bert');
  const out = path.join(tmp, 'bert-out');
  expect((await cli('export', 'models/bert_cls', '--format', 'hf', '--out', out)).code).toBe(0);
  const src = readHfFolder(path.join(FIX, 'bert_cls'));
  const back = readHfFolder(out);
  expect([back.family, back.architecture, back.config]).toEqual(['bert', 'BertForSequenceClassification', src.config]);
  for (const s of src.specs) expect(back.weights.get(s.name)).toEqual(src.weights.get(s.name));
  await expect(loadBase(s3.store, { kind: 'checkpoint', prefix: 'models/bert_cls' })).rejects.toThrow('spec.base.prefix: checkpoint models/bert_cls holds a bert model; LoRA fine-tunes of checkpoints take GPT models');
  const gen = await cli('generate', '--model', 'models/bert_cls', 'hello');
  expect(gen.stderr.trim()).toBe('truthgpt: checkpoint models/bert_cls: a bert model, not a GPT (only GPT has an inference exporter and a LoRA base here)');

  // T5 v1.1 (gated-GELU, untied head) the same way.
  expect((await cli('import', path.join(FIX, 't5_gated'))).code).toBe(0);
  const t5Out = path.join(tmp, 't5-out');
  expect((await cli('export', 'models/t5_gated', '--format', 'hf', '--out', t5Out)).code).toBe(0);
  const t5 = readHfFolder(path.join(FIX, 't5_gated'));
  const t5Back = readHfFolder(t5Out);
  expect([t5Back.family, t5Back.config]).toEqual(['t5', t5.config]);
  for (const s of t5.specs) expect(t5Back.weights.get(s.name)).toEqual(t5.weights.get(s.name));
});

test('mistakes get one line naming what to fix', async () => {
  const missing = await cli('export', 'models/nope', '--format', 'hf', '--out', path.join(tmp, 'x'));
  expect(missing.code).toBe(1);
  expect(missing.stderr.trim()).toMatch(/^truthgpt: export models\/nope: nothing is committed under s3:\/\/truthgpt-test\/models\/nope \(expected a checkpoint prefix/);
  const format = await cli('export', 'models/llama', '--format', 'onnx', '--out', path.join(tmp, 'y'));
  expect(format.stderr.trim()).toBe('truthgpt: export --format: "onnx" is not a format; known formats: hf');
  const bad = fs.mkdtempSync(path.join(tmp, 'bad-'));
  for (const f of fs.readdirSync(path.join(FIX, 'llama'))) fs.copyFileSync(path.join(FIX, 'llama', f), path.join(bad, f));
  const c = JSON.parse(fs.readFileSync(path.join(bad, 'config.json'), 'utf8')) as Record<string, unknown>;
  c.rope_scaling = { rope_type: 'yarn', factor: 4 };
  fs.writeFileSync(path.join(bad, 'config.json'), JSON.stringify(c));
  const refused = await cli('import', bad);
  expect(refused.code).toBe(1);
  expect(refused.stderr.trim()).toBe(`truthgpt: import ${bad}: ${path.join(bad, 'config.json')}: rope_scaling = {"rope_type":"yarn","factor":4}: scaled rotary embeddings (linear, dynamic, yarn, llama3, ...) are not supported; our RoPE is unscaled`);
  const name = await cli('import', path.join(FIX, 'gpt2'), '--name', 'my model');
  expect(name.stderr.trim()).toMatch(/^truthgpt: model name "my model": it contains U\+0020; a model name is one name of A-Z a-z 0-9/);
});

test('a T5 model generates through `truthgpt generate`: the source encoded once, greedy ids equal Hugging Face generate', async () => {
  // The tiny T5 of the HF parity fixtures (its greedy ids from transformers are in
  // generate_golden.json), with a word-level tokenizer.json whose token "wN" is id N.
  const folder = path.join(tmp, 't5gen');
  fs.mkdirSync(folder);
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(__dirname, '..', 'fixtures', 'hf', 't5', f), path.join(folder, f));
  const vocab: Record<string, number> = { '<pad>': 0, '</s>': 1, '<unk>': 2 };
  for (let i = 3; i < 128; i++) vocab[`w${i}`] = i;
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const tokenizer = { version: '1.0', truncation: null, padding: null, added_tokens: [special(0, '<pad>'), special(1, '</s>'), special(2, '<unk>')], normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null, decoder: null, model: { type: 'WordLevel', vocab, unk_token: '<unk>' } };
  fs.writeFileSync(path.join(folder, 'tokenizer.json'), JSON.stringify(tokenizer));
  expect((await cli('import', folder)).code).toBe(0);

  const golden = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'hf', 't5', 'generate_golden.json'), 'utf8')) as { greedy: { input_ids: number[]; max_new_tokens: number; ids: number[] }[] };
  const g = golden.greedy[0];
  // The prompt's words are the golden source without its </s>, which generate appends as HF's tokenizer does.
  const prompt = g.input_ids.slice(0, -1).map((i) => `w${i}`).join(' ');
  const r = await cli('generate', '--model', 'models/t5gen', prompt, '--max-new-tokens', String(g.max_new_tokens), '--json');
  expect(r.code).toBe(0);
  const out = JSON.parse(r.stdout) as { ids: number[]; promptTokens: number; blockSize: number | null; method: string };
  expect(out.ids).toEqual(g.ids.slice(1)); // HF's sequence starts with the decoder start token
  expect([out.promptTokens, out.blockSize, out.method]).toEqual([g.input_ids.length, null, 't5']);

  // A seeded sample is the same text on a rerun.
  const sample = () =>
    cli('generate', '--model', 'models/t5gen', prompt, '--temperature', '1', '--seed', '7', '--max-new-tokens', '12', '--json').then((x) => {
      const { ids, text } = JSON.parse(x.stdout) as { ids: number[]; text: string };
      return { ids, text };
    });
  const [a, b] = [await sample(), await sample()];
  expect(a).toEqual(b);
  expect(a.text.split(' ').length).toBe(a.ids.filter((i) => i > 2).length); // words decoded by the imported tokenizer
});

