// Our LoRA adapters (PEFT files in our module names, engine/lora/peft.ts) rewritten for the
// Hugging Face class a GPT base exports as, so `PeftModel.from_pretrained(exported_base, dir)` loads
// them. GPT-2 keeps its modules (transformer.h.N.attn.c_attn, ... are GPT2LMHeadModel's own). For
// Llama our fused layers are split, exactly: ΔW = B·A, and a fused layer's output rows are its
// parts' rows, so each part keeps A and takes its rows of B:
//   h.N.attn.c_attn (B rows [q | k | v])  → model.layers.N.self_attn.{q,k,v}_proj
//   h.N.attn.c_proj                       → model.layers.N.self_attn.o_proj
//   h.N.mlp.c_fc (B rows [gate | up])     → model.layers.N.mlp.{gate,up}_proj
//   h.N.mlp.c_proj                        → model.layers.N.mlp.down_proj
// Llama's Linear weights are torch (out, in), so fan_in_fan_out is false there.
// T5 needs no renaming: our T5 parameters are T5ForConditionalGeneration's own names
// (encoder.block.N.layer.0.SelfAttention.q, ...DenseReluDense.wi_0, ...), so hfT5AdapterFiles
// checks each module is one of the config's linear layers and writes task_type SEQ_2_SEQ_LM.

import type { TensorData } from '../graph/ir';
import { writeSafetensors } from '../checkpoint/safetensors';
import { EngineError } from '../errors';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadAdapter } from '../lora/peft';
import { gptOptions, type GptConfig } from '../models/gpt';
import type { T5Config } from '../models/t5';
import { exportArchitecture } from './index';

const PEFT_PREFIX = 'base_model.model.';

/** Our module → [HF module, first row of B, rows] for a Llama base. */
function llamaParts(module: string, cfg: GptConfig): [string, number, number][] {
  const o = gptOptions(cfg);
  const C = cfg.n_embd;
  const kvC = o.nKvHead * (C / cfg.n_head);
  const m = /^h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$/.exec(module);
  if (!m) throw new EngineError('input', `adapter module ${module} has no LlamaForCausalLM counterpart (adapt attention and MLP layers only)`);
  const l = `model.layers.${m[1]}`;
  switch (m[2]) {
    case 'attn.c_attn':
      return [[`${l}.self_attn.q_proj`, 0, C], [`${l}.self_attn.k_proj`, C, kvC], [`${l}.self_attn.v_proj`, C + kvC, kvC]];
    case 'attn.c_proj':
      return [[`${l}.self_attn.o_proj`, 0, C]];
    case 'mlp.c_fc':
      return [[`${l}.mlp.gate_proj`, 0, o.nInner], [`${l}.mlp.up_proj`, o.nInner, o.nInner]];
    default:
      return [[`${l}.mlp.down_proj`, 0, C]];
  }
}

/**
 * PEFT adapter files for the HF export of `base` from our adapter files; `baseNameOrPath` goes into
 * adapter_config.json's base_model_name_or_path. Errors name the file, tensor or module.
 * @example const files = hfAdapterFiles(cfg, storedFiles, './exported-base')
 */
export function hfAdapterFiles(base: GptConfig, files: Map<string, Uint8Array>, baseNameOrPath: string | null, where = 'adapter'): Map<string, Buffer> {
  const adapter = loadAdapter(files, { family: 'gpt', where });
  const raw: Record<string, unknown> = { ...adapter.raw, base_model_name_or_path: baseNameOrPath };
  const arch = exportArchitecture(base);
  const r = adapter.config.r;
  const tensors = new Map<string, TensorData>();
  if (arch.architecture === 'GPT2LMHeadModel') {
    for (const [name, data] of adapter.tensors) tensors.set(`${PEFT_PREFIX}transformer.${name}`, { dtype: 'float32', dims: adapter.shapes.get(name)!, data });
  } else {
    const leaves = new Set<string>();
    const modules = [...new Set([...adapter.tensors.keys()].map((n) => n.replace(/\.lora_[AB]\.weight$/, '')))];
    for (const module of modules) {
      const A = adapter.tensors.get(`${module}.lora_A.weight`);
      const B = adapter.tensors.get(`${module}.lora_B.weight`);
      if (!A || !B) throw new EngineError('input', `${where}: module ${module} lacks its ${A ? 'lora_B' : 'lora_A'} tensor`);
      const nIn = A.length / r;
      const parts = llamaParts(module, base);
      const rows = parts.reduce((a, [, , n]) => a + n, 0);
      if (B.length !== rows * r) throw new EngineError('input', `${where}: ${module}.lora_B.weight has ${B.length / r} rows; the base's layer has ${rows}`);
      for (const [hf, first, n] of parts) {
        tensors.set(`${PEFT_PREFIX}${hf}.lora_A.weight`, { dtype: 'float32', dims: [r, nIn], data: A });
        tensors.set(`${PEFT_PREFIX}${hf}.lora_B.weight`, { dtype: 'float32', dims: [n, r], data: B.slice(first * r, (first + n) * r) }); // rows [first, first + n) of (out, r)
        leaves.add(hf.split('.').pop()!);
      }
    }
    raw.target_modules = [...leaves].sort();
    raw.fan_in_fan_out = false;
  }
  return new Map([
    [ADAPTER_WEIGHTS_FILE, writeSafetensors(tensors, { format: 'pt' })],
    [ADAPTER_CONFIG_FILE, Buffer.from(JSON.stringify(raw, null, 2) + '\n')],
  ]);
}

/** T5ForConditionalGeneration's Linear modules for `cfg` (the output head excluded). */
export function t5LinearModules(cfg: T5Config): Set<string> {
  const out = new Set<string>();
  const ff = cfg.feed_forward_proj === 'relu' ? ['wi', 'wo'] : ['wi_0', 'wi_1', 'wo'];
  const attn = (prefix: string) => ['q', 'k', 'v', 'o'].forEach((w) => out.add(`${prefix}.${w}`));
  for (let i = 0; i < cfg.num_layers; i++) {
    attn(`encoder.block.${i}.layer.0.SelfAttention`);
    ff.forEach((w) => out.add(`encoder.block.${i}.layer.1.DenseReluDense.${w}`));
  }
  for (let i = 0; i < (cfg.num_decoder_layers ?? cfg.num_layers); i++) {
    attn(`decoder.block.${i}.layer.0.SelfAttention`);
    attn(`decoder.block.${i}.layer.1.EncDecAttention`);
    ff.forEach((w) => out.add(`decoder.block.${i}.layer.2.DenseReluDense.${w}`));
  }
  return out;
}

/**
 * PEFT adapter files for a T5 base exported as T5ForConditionalGeneration, from our adapter files
 * (saveAdapter's): the same tensor names, task_type SEQ_2_SEQ_LM, fan_in_fan_out false,
 * target_modules the HF leaf names adapted, base_model_name_or_path `baseNameOrPath`. A module that
 * is not one of `base`'s linear layers, or a tensor whose shape does not fit it, is an error
 * naming it.
 * @example const files = hfT5AdapterFiles(cfg, saveAdapter(plan, adapters), './exported-base')
 */
export function hfT5AdapterFiles(base: T5Config, files: Map<string, Uint8Array>, baseNameOrPath: string | null, where = 'adapter'): Map<string, Buffer> {
  const adapter = loadAdapter(files, { family: 't5', where });
  const linear = t5LinearModules(base);
  const inner = base.num_heads * base.d_kv;
  const dims = (module: string): [number, number] => {
    const leaf = module.split('.').pop()!;
    if (leaf === 'o') return [inner, base.d_model];
    if (leaf === 'wo') return [base.d_ff, base.d_model];
    if (leaf.startsWith('wi')) return [base.d_model, base.d_ff];
    return [base.d_model, inner]; // q, k, v
  };
  const r = adapter.config.r;
  const tensors = new Map<string, TensorData>();
  const modules = new Set<string>();
  for (const [name, data] of adapter.tensors) {
    const module = name.replace(/\.lora_[AB]\.weight$/, '');
    if (!linear.has(module)) throw new EngineError('input', `${where}: module ${module} is not a linear layer of this T5ForConditionalGeneration (the head and embeddings take no adapter)`);
    const [nIn, nOut] = dims(module);
    const want = name.endsWith('.lora_A.weight') ? [r, nIn] : [nOut, r];
    const got = adapter.shapes.get(name)!;
    if (got.join() !== want.join()) throw new EngineError('input', `${where}: ${name} is [${got.join(', ')}]; the base's ${module} needs [${want.join(', ')}]`);
    tensors.set(`${PEFT_PREFIX}${name}`, { dtype: 'float32', dims: got, data });
    modules.add(module);
  }
  // Leaf names (PEFT matches `q` to every `….q`) when they select exactly the adapted modules;
  // otherwise the full module names, so PEFT adds no adapter the file does not hold.
  const leaves = [...new Set([...modules].map((m) => m.split('.').pop()!))].sort();
  const byLeaf = [...linear].filter((m) => leaves.includes(m.split('.').pop()!));
  const targets = byLeaf.length === modules.size ? leaves : [...modules].sort();
  const raw: Record<string, unknown> = { ...adapter.raw, base_model_name_or_path: baseNameOrPath, task_type: 'SEQ_2_SEQ_LM', fan_in_fan_out: false, target_modules: targets };
  return new Map([
    [ADAPTER_WEIGHTS_FILE, writeSafetensors(tensors, { format: 'pt' })],
    [ADAPTER_CONFIG_FILE, Buffer.from(JSON.stringify(raw, null, 2) + '\n')],
  ]);
}
