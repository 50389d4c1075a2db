// LoRA on T5 with Hugging Face module names (q, k, v, o, wi / wi_0, wi_1, wo; all-linear as PEFT
// takes it), the merge (the merged model computes what base + adapters compute), and the PEFT files
// for T5ForConditionalGeneration (hfT5AdapterFiles). That Python `peft` loads those files on our
// exported base and gives our merged logits is checked by test/fixtures/t5-tiny/make_t5_tiny.py
// (max |Δlogits| 1.07e-6 for the v1.0 fixture, 1.13e-6 for the gated v1.1 one).

import '../../engine/runtime/host-realm';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { Graph } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import { readHfFolder } from '../../engine/hf';
import { hfT5AdapterFiles } from '../../engine/hf/peft';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, buildWithLora, saveAdapter } from '../../engine/lora';
import { exportT5 } from '../../engine/models/export-bert-t5';
import { initializerParams } from '../../engine/models/export';
import { t5Logits, t5Params, type T5Config } from '../../engine/models/t5';
import { planT5Lora } from '../../engine/train/seq2seq';
import { seededT5Adapter } from '../fixtures/t5-tiny/lora-adapter';

const FIX = path.join(__dirname, '..', 'fixtures');
const relu = readHfFolder(path.join(FIX, 't5-tiny', 'model'));
const gated = readHfFolder(path.join(FIX, 'hf-io', 't5_gated'));
const reluCfg = relu.config as T5Config;
const gatedCfg = gated.config as T5Config;
const leaves = (modules: { module: string }[]) => [...new Set(modules.map((m) => m.module.split('.').pop()))].sort();

describe('T5 LoRA targets', () => {
  test('HF module names select the layers PEFT would; all-linear leaves the head out', () => {
    expect(leaves(planT5Lora(reluCfg, {}).modules)).toEqual(['q', 'v']); // PEFT's T5 default
    expect(leaves(planT5Lora(reluCfg, { target_modules: 'all-linear' }).modules)).toEqual(['k', 'o', 'q', 'v', 'wi', 'wo']);
    expect(leaves(planT5Lora(gatedCfg, { target_modules: 'all-linear' }).modules)).toEqual(['k', 'o', 'q', 'v', 'wi_0', 'wi_1', 'wo']);
    expect(gatedCfg.tie_word_embeddings).toBe(false); // an untied lm_head exists and is still left out
    const wi = planT5Lora(gatedCfg, { target_modules: ['wi_0', 'wi_1'] }).modules;
    expect(wi.map((m) => m.module)).toContain('decoder.block.1.layer.2.DenseReluDense.wi_1');
    expect(wi).toHaveLength(2 * 2 * 2);
    expect(planT5Lora(reluCfg, { target_modules: ['EncDecAttention.k'] }).modules.map((m) => m.module)).toEqual(['decoder.block.0.layer.1.EncDecAttention.k', 'decoder.block.1.layer.1.EncDecAttention.k']);
    expect(() => planT5Lora(reluCfg, { target_modules: ['wi_0'] })).toThrow(/lora.target_modules: \["wi_0"\] matches no linear layer; linear layers are: encoder.block.0.layer.0.SelfAttention.q/);
  });
});

describe('T5 LoRA merge and PEFT files', () => {
  test.each([
    ['v1.0', relu],
    ['v1.1 gated', gated],
  ])('%s: the merged weights compute what base + adapters compute', async (_, m) => {
    const cfg = m.config as T5Config;
    const { plan, adapters, merged } = seededT5Adapter(cfg, m.weights);
    const g = new Graph('t5_lora_fwd');
    const p = initializerParams(g, [...t5Params(cfg), ...plan.adapterParams], new Map([...m.weights, ...adapters]), 't5 lora');
    const inputs = { inputIds: g.input('input_ids', 'int64', [2, 6]), attentionMask: g.input('attention_mask', 'int64', [2, 6]), decoderInputIds: g.input('decoder_input_ids', 'int64', [2, 4]) };
    g.output(buildWithLora(g, p, plan, (pp) => t5Logits(cfg, inputs, pp)), 'logits');
    const i64 = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0].length]);
    const feeds = { input_ids: i64([[5, 9, 13, 17, 21, 1], [6, 10, 14, 1, 0, 0]]), attention_mask: i64([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]), decoder_input_ids: i64([[0, 7, 11, 3], [0, 8, 12, 4]]) };
    const run = async (graph: Graph) => {
      const s = await ort.InferenceSession.create(serializeModel(graph).model, { intraOpNumThreads: 1 });
      const r = await s.run(feeds);
      await s.release();
      return r.logits.data as Float32Array;
    };
    const withAdapters = await run(g);
    const mergedLogits = await run(exportT5(cfg, merged));
    const baseLogits = await run(exportT5(cfg, m.weights));
    let diff = 0;
    let effect = 0;
    for (let i = 0; i < withAdapters.length; i++) {
      diff = Math.max(diff, Math.abs(withAdapters[i] - mergedLogits[i]));
      effect = Math.max(effect, Math.abs(withAdapters[i] - baseLogits[i]));
    }
    expect(diff).toBeLessThan(1e-5); // observed 1.0e-6 (v1.0), 7.2e-7 (v1.1)
    expect(effect).toBeGreaterThan(0.1); // the adapter does move the logits
  });

  test('PEFT files: SEQ_2_SEQ_LM, HF tensor names, leaf target_modules when they pick exactly the adapted layers', () => {
    const { plan, adapters } = seededT5Adapter(gatedCfg, gated.weights);
    const files = hfT5AdapterFiles(gatedCfg, saveAdapter(plan, adapters), '../base');
    const config = JSON.parse(files.get(ADAPTER_CONFIG_FILE)!.toString('utf8')) as Record<string, unknown>;
    expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'SEQ_2_SEQ_LM', base_model_name_or_path: '../base', r: 4, lora_alpha: 8, fan_in_fan_out: false });
    expect(config.target_modules).toEqual(['k', 'o', 'q', 'v', 'wi_0', 'wi_1', 'wo']);
    const tensors = readSafetensors(files.get(ADAPTER_WEIGHTS_FILE)!, 'adapter').tensors;
    expect(tensors.get('base_model.model.decoder.block.1.layer.2.DenseReluDense.wi_1.lora_A.weight')!.dims).toEqual([4, gatedCfg.d_model]);
    expect(tensors.get('base_model.model.encoder.block.0.layer.0.SelfAttention.o.lora_B.weight')!.dims).toEqual([gatedCfg.d_model, 4]);
    expect(tensors.size).toBe(plan.adapterParams.length);

    // Adapting only the encoder's q: "q" would also pick the decoder's, so the full names are written.
    const encQ = planT5Lora(gatedCfg, { target_modules: 'encoder\\.block\\.\\d+\\.layer\\.0\\.SelfAttention\\.q', r: 2 });
    const encFiles = hfT5AdapterFiles(gatedCfg, saveAdapter(encQ, new Map(encQ.adapterParams.map((s) => [s.name, new Float32Array(s.shape[0]! * s.shape[1]!)]))), null);
    expect(JSON.parse(encFiles.get(ADAPTER_CONFIG_FILE)!.toString('utf8')).target_modules).toEqual(['encoder.block.0.layer.0.SelfAttention.q', 'encoder.block.1.layer.0.SelfAttention.q']);
  });

  test('an adapter that does not fit the base is an error naming the module or tensor', () => {
    const { plan, adapters } = seededT5Adapter(reluCfg, relu.weights);
    const files = saveAdapter(plan, adapters);
    // v1.0 adapters (wi) on the gated base (wi_0, wi_1).
    expect(() => hfT5AdapterFiles(gatedCfg, files, null)).toThrow(/adapter: module decoder.block.0.layer.2.DenseReluDense.wi is not a linear layer of this T5ForConditionalGeneration/);
    const wider = { ...reluCfg, d_ff: reluCfg.d_ff * 2 };
    expect(() => hfT5AdapterFiles(wider, files, null)).toThrow(/adapter: decoder.block.0.layer.2.DenseReluDense.wi.lora_B.weight is \[64, 4\]; the base's decoder.block.0.layer.2.DenseReluDense.wi needs \[128, 4\]/);
  });
});
