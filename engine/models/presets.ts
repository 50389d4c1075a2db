// Named model configs. The three full-size presets are the original Hugging Face architectures, so
// their parameter counts equal what HF reports for them (asserted in test/engine/models-presets):
//   gpt2-small 124 439 808 (GPT2LMHeadModel, head tied to wte)
//   bert-base  109 482 240 (BertModel: encoder + pooler, no task head)
//   t5-small    60 506 624 (T5ForConditionalGeneration, head tied to shared)
// The tiny presets are for tests: a few layers, 32–64 wide, small vocabularies.

import type { z } from 'zod';
import { expectShape } from '../checkpoint/safetensors';
import type { TensorData } from '../graph/ir';
import { countParams as countSpecs, type ParamSpec } from './blocks';
import { bertParams, BertConfigSchema, hfBertName, type BertConfig } from './bert';
import { gptParams, GptConfigSchema, type GptConfig } from './gpt';
import { hfT5Name, t5Params, T5ConfigSchema, type T5Config } from './t5';

export type Preset =
  | { family: 'gpt'; config: GptConfig }
  | { family: 'bert'; config: BertConfig }
  | { family: 't5'; config: T5Config };

// Configs are parsed once here, so a typo in a preset fails at import naming the field.
const gpt = (c: z.input<typeof GptConfigSchema>): Preset => ({ family: 'gpt', config: GptConfigSchema.parse(c) });
const bert = (c: z.input<typeof BertConfigSchema>): Preset => ({ family: 'bert', config: BertConfigSchema.parse(c) });
const t5 = (c: z.input<typeof T5ConfigSchema>): Preset => ({ family: 't5', config: T5ConfigSchema.parse(c) });

// An HF config.json carries many keys we do not use (architectures, torch_dtype, task params...):
// these parses drop them, where the strict schemas above would refuse them.
const HF_SCHEMAS = { gpt: GptConfigSchema.strip(), bert: BertConfigSchema.strip(), t5: T5ConfigSchema.strip() };

export const PRESETS = {
  'gpt2-small': gpt({ vocab_size: 50257, block_size: 1024, n_layer: 12, n_head: 12, n_embd: 768 }),
  'bert-base': bert({
    vocab_size: 30522,
    hidden_size: 768,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    intermediate_size: 3072,
    max_position_embeddings: 512,
    type_vocab_size: 2,
  }),
  't5-small': t5({ vocab_size: 32128, d_model: 512, d_kv: 64, d_ff: 2048, num_layers: 6, num_heads: 8 }),
  'tiny-gpt': gpt({ vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, n_embd: 64 }),
  'tiny-bert': bert({
    vocab_size: 256,
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 128,
    max_position_embeddings: 64,
  }),
  'tiny-t5': t5({
    vocab_size: 256,
    d_model: 64,
    d_kv: 16,
    d_ff: 128,
    num_layers: 2,
    num_heads: 4,
    relative_attention_num_buckets: 16,
    relative_attention_max_distance: 32,
  }),
} satisfies Record<string, Preset>;

export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

/** The preset named `name`; an unknown name is an error that lists the known ones. */
export function getPreset(name: string): Preset {
  if (!(name in PRESETS)) throw new Error(`unknown model preset "${name}"; known presets: ${PRESET_NAMES.join(', ')}`);
  return PRESETS[name as PresetName];
}

/** Parameter specs of a preset's base model (GPT: LM with tied head; BERT: encoder + pooler; T5: tied LM). */
export function presetParams(preset: Preset): ParamSpec[] {
  switch (preset.family) {
    case 'gpt':
      return gptParams(preset.config);
    case 'bert':
      return bertParams(preset.config);
    case 't5':
      return t5Params(preset.config);
  }
}

/** Exact parameter count of a preset (each tied tensor counted once, as HF num_parameters() does). */
export function countParams(preset: Preset): number {
  return countSpecs(presetParams(preset));
}

/**
 * Parameter count of the preset named `name`, for `truthgpt model params --preset NAME`.
 * @example presetParamCount('gpt2-small') // 124439808
 */
export function presetParamCount(name: string): number {
  return countParams(getPreset(name));
}

// ---------------------------------------------------------------- Hugging Face import

/**
 * The preset-style config of an HF config.json (GPT2Config, BertConfig or T5Config as
 * save_pretrained writes them). Unknown HF fields are ignored; a missing one is a zod error
 * naming it.
 */
export function configFromHf(family: Preset['family'], json: Record<string, unknown>): Preset {
  switch (family) {
    case 'gpt':
      // Field types are checked by the schema's parse; GPT2Config calls block_size n_positions.
      return { family, config: HF_SCHEMAS.gpt.parse({ ...json, block_size: json.n_positions }) };
    case 'bert':
      return { family, config: HF_SCHEMAS.bert.parse(json) };
    case 't5':
      return { family, config: HF_SCHEMAS.t5.parse(json) };
  }
}

/** Our parameter name for a key of an HF safetensors file of this family; null for tied copies and buffers. */
export function hfParamName(preset: Preset, key: string): string | null {
  switch (preset.family) {
    case 'gpt': {
      // GPT2LMHeadModel nests the decoder under `transformer.`; our gpt.ts names its embeddings
      // `wte`/`wpe` without `.weight`. lm_head is the tied copy of wte; attn.bias/masked_bias
      // are causal-mask buffers older checkpoints saved.
      if (key === 'lm_head.weight' || /\.attn\.(bias|masked_bias)$/.test(key)) return null;
      const k = key.startsWith('transformer.') ? key.slice('transformer.'.length) : key;
      return k === 'wte.weight' || k === 'wpe.weight' ? k.slice(0, 3) : k;
    }
    case 'bert':
      return hfBertName(key);
    case 't5':
      return hfT5Name(key, preset.config);
  }
}

export interface HfImport {
  /** float32 weights by our parameter name, one per spec. */
  weights: Map<string, Float32Array>;
  /** File keys no spec asked for (e.g. a task head when importing the base model). */
  unused: string[];
}

/**
 * Maps the tensors of an HF safetensors file onto `specs` (default: the preset's base model).
 * A missing tensor, a wrong shape or a non-float32 dtype is an error naming tensor and file.
 * @example importHfWeights(configFromHf('bert', cfgJson), readSafetensors(buf, file).tensors, file)
 */
export function importHfWeights(preset: Preset, tensors: Map<string, TensorData>, file: string, specs = presetParams(preset)): HfImport {
  const byName = new Map<string, { key: string; t: TensorData }>();
  const unused: string[] = [];
  for (const [key, t] of tensors) {
    const name = hfParamName(preset, key);
    if (name === null) continue;
    byName.set(name, { key, t });
  }
  const wanted = new Set(specs.map((s) => s.name));
  for (const [name, { key }] of byName) if (!wanted.has(name)) unused.push(key);
  const weights = new Map<string, Float32Array>();
  for (const s of specs) {
    const hit = byName.get(s.name);
    const t = expectShape(file, hit?.key ?? s.name, hit?.t, s.shape);
    if (t.dtype !== 'float32') throw new Error(`${file}: tensor "${hit!.key}" is ${t.dtype}; only float32 weights are imported`);
    weights.set(s.name, t.data as Float32Array);
  }
  return { weights, unused };
}
