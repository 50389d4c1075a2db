// Named model configs. The three full-size presets are the original Hugging Face architectures, so
// their parameter counts equal what HF reports for them (asserted in test/engine/models-presets):
//   gpt2-small 124 439 808 (GPT2LMHeadModel, head tied to wte)
//   bert-base  109 482 240 (BertModel: encoder + pooler, no task head)
//   t5-small    60 506 624 (T5ForConditionalGeneration, head tied to shared)
// The tiny presets are for tests: a few layers, 32–64 wide, small vocabularies.

import { countParams as countSpecs, type ParamSpec } from './blocks';
import { bertParams, BertConfigSchema, type BertConfig } from './bert';
import { gptParams, GptConfigSchema, type GptConfig } from './gpt';
import { t5Params, T5ConfigSchema, type T5Config } from './t5';

export type Preset =
  | { family: 'gpt'; config: GptConfig }
  | { family: 'bert'; config: BertConfig }
  | { family: 't5'; config: T5Config };

const gpt = (c: Parameters<typeof GptConfigSchema.parse>[0]): Preset => ({ family: 'gpt', config: GptConfigSchema.parse(c) });
const bert = (c: Parameters<typeof BertConfigSchema.parse>[0]): Preset => ({ family: 'bert', config: BertConfigSchema.parse(c) });
const t5 = (c: Parameters<typeof T5ConfigSchema.parse>[0]): Preset => ({ family: 't5', config: T5ConfigSchema.parse(c) });

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
