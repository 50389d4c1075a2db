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

import type { TensorData } from '../graph/ir';
import { writeSafetensors } from '../checkpoint/safetensors';
import { EngineError } from '../errors';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadAdapter } from '../lora/peft';
import { gptOptions, type GptConfig } from '../models/gpt';
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
