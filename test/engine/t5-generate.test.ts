// T5 generation (engine/eval/generate-t5.ts, engine/models/export-t5-cached.ts) against Hugging
// Face on the committed tiny fixtures (test/fixtures/hf/t5 v1.0 ReLU, t5_gated v1.1 gated GELU),
// with the goldens of test/fixtures/hf/make_t5_generate_golden.py:
// - greedy ids equal HF's model.generate(do_sample=False, num_beams=1), with and without our cache;
// - a varied decoder input fed to the cached decoder (a prefill, then one token per step) gives
//   HF's cache-free logits at every position (the random fixtures greedily repeat token 0, so the
//   greedy ids alone would check little of the cache);
// - seeded sampling gives the same tokens with and without the cache, and a rerun repeats them.

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import '../../engine/graph';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { T5Generator } from '../../engine/eval';
import { serializeModel } from '../../engine/graph/onnx';
import { exportT5DecoderStep, exportT5Encoder, t5CrossKey, t5CrossValue, t5EncoderCrossKey, t5EncoderCrossValue, t5PastSelfKey, t5PastSelfValue, t5PresentSelfKey, t5PresentSelfValue } from '../../engine/models/export-t5-cached';
import { configFromHf, importHfWeights } from '../../engine/models/presets';
import type { T5Config } from '../../engine/models/t5';
import { createSession } from '../../engine/runtime';

const FIX = path.join(__dirname, '..', 'fixtures', 'hf');
const threads = { intraOpThreads: 1 };

interface GenerateGolden {
  greedy: { input_ids: number[]; max_new_tokens: number; eos_token_id: number; ids: number[]; min_margin: number }[];
  forced: { input_ids: number[]; decoder_input_ids: number[]; logits: number[] }[];
}

/**
 * Largest |ours - HF| over the forced logits (HF's are float32, rounded to 1e-6). Observed on an
 * AMD EPYC (AVX2), ORT CPU 1 thread: t5 1.29e-6, t5_gated 1.45e-6.
 */
const LOGIT_ATOL = 1e-5;

function load(name: string) {
  const dir = path.join(FIX, name);
  const hf = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const preset = configFromHf('t5', hf);
  const file = path.join(dir, 'model.safetensors');
  const { weights } = importHfWeights(preset, readSafetensors(fs.readFileSync(file), file).tensors, file);
  const golden = JSON.parse(fs.readFileSync(path.join(dir, 'generate_golden.json'), 'utf8')) as GenerateGolden;
  return { cfg: preset.config as T5Config, weights, golden, eos: hf.eos_token_id as number };
}

const int64 = (ids: number[]) => new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);

describe.each(['t5', 't5_gated'])('T5 generation, %s fixture', (name) => {
  const { cfg, weights, golden, eos } = load(name);
  let cached: T5Generator;
  let plain: T5Generator;
  beforeAll(async () => {
    cached = await T5Generator.create(cfg, weights, { session: threads });
    plain = await T5Generator.create(cfg, weights, { kvCache: false, session: threads });
  });
  afterAll(async () => {
    await cached.release();
    await plain.release();
  });

  test('greedy ids equal HF generate(do_sample=False, num_beams=1), with and without the cache', async () => {
    expect(cached.kvCache).toBe(true);
    expect(plain.kvCache).toBe(false);
    for (const c of golden.greedy) {
      const want = c.ids.slice(1); // HF returns the decoder start token first
      const opts = { maxNewTokens: c.max_new_tokens, stopToken: c.eos_token_id };
      expect(await cached.generate(c.input_ids, opts)).toEqual(want);
      expect(await plain.generate(c.input_ids, opts)).toEqual(want);
    }
    expect(golden.greedy[0].eos_token_id).toBe(eos);
  });

  test('the cached decoder gives HF’s logits for a varied decoder input: a 5-token prefill, then one token per step', async () => {
    const enc = await createSession(serializeModel(exportT5Encoder(cfg, weights)).model, threads);
    const dec = await createSession(serializeModel(exportT5DecoderStep(cfg, weights)).model, threads);
    const V = cfg.vocab_size;
    const layers = cfg.num_decoder_layers ?? cfg.num_layers;
    let worst = 0;
    for (const f of golden.forced) {
      const mask = int64(f.input_ids.map(() => 1));
      const e = await enc.run({ input_ids: int64(f.input_ids), attention_mask: mask });
      expect(e.last_hidden_state.dims).toEqual([1, f.input_ids.length, cfg.d_model]);
      const feeds: Record<string, ort.Tensor> = { encoder_attention_mask: mask };
      for (let l = 0; l < layers; l++) {
        feeds[t5CrossKey(l)] = e[t5EncoderCrossKey(l)];
        feeds[t5CrossValue(l)] = e[t5EncoderCrossValue(l)];
        feeds[t5PastSelfKey(l)] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.num_heads, 0, cfg.d_kv]);
        feeds[t5PastSelfValue(l)] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.num_heads, 0, cfg.d_kv]);
      }
      const T = f.decoder_input_ids.length;
      for (const [from, to] of [[0, 5], ...Array.from({ length: T - 5 }, (_, i) => [5 + i, 6 + i])]) {
        feeds.decoder_input_ids = int64(f.decoder_input_ids.slice(from, to));
        const r = await dec.run(feeds);
        expect(r[t5PresentSelfKey(0)].dims).toEqual([1, cfg.num_heads, to, cfg.d_kv]);
        const got = r.logits.data as Float32Array;
        for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - f.logits[from * V + i]));
        for (let l = 0; l < layers; l++) [feeds[t5PastSelfKey(l)], feeds[t5PastSelfValue(l)]] = [r[t5PresentSelfKey(l)], r[t5PresentSelfValue(l)]];
      }
    }
    await enc.release();
    await dec.release();
    expect(worst).toBeLessThanOrEqual(LOGIT_ATOL);
    expect(worst).toBeGreaterThan(0); // a real comparison, not a copy
  });

  test('seeded sampling: the same tokens with and without the cache, the same again on a rerun, others with another seed', async () => {
    const src = golden.greedy[1].input_ids;
    const opts = { maxNewTokens: 24, temperature: 1.5, topK: 40, topP: 0.95, seed: 3 };
    const a = await cached.generate(src, opts);
    expect(await plain.generate(src, opts)).toEqual(a);
    expect(await cached.generate(src, opts)).toEqual(a);
    expect(await cached.generate(src, { ...opts, seed: 4 })).not.toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(5);
    const stop = a.find((t) => t !== 0)!;
    expect(await cached.generate(src, { ...opts, stopToken: stop })).toEqual(a.slice(0, a.indexOf(stop) + 1));
  });
});

test('a graph without the inputs of its role is refused, naming them', async () => {
  const { cfg, weights } = load('t5');
  const enc = exportT5Encoder(cfg, weights);
  await expect(T5Generator.load({ encoder: enc, decoder: enc }, { nLayer: 2, nHead: 4, dKv: 8, vocabSize: 128, decoderStartTokenId: 0 }, threads)).rejects.toThrow(
    /^T5Generator: the decoder-step model has no input decoder_input_ids, encoder_attention_mask, past_key_values\.0\.decoder\.key, past_key_values\.0\.encoder\.key \(has input_ids, attention_mask\)$/,
  );
});
