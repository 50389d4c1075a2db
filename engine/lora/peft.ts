// Adapter files in PEFT's layout, so an adapter trained here loads with `PeftModel.from_pretrained`
// and a PEFT adapter loads here:
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r, in)
//                              base_model.model.<module>.lora_B.weight (out, r)
//   adapter_config.json        PEFT's LoraConfig keys (peft_type "LORA", r, lora_alpha, ...)
// <module> is the Hugging Face module path: ours plus a family prefix (GPT2LMHeadModel nests the
// decoder under `transformer.`); imported graphs already carry full paths.

import { EngineError } from '../errors';
import type { TensorData } from '../graph/ir';
import { readSafetensors, writeSafetensors } from '../checkpoint/safetensors';
import { parseLoraConfig, type LoraConfig, type ModelFamily } from './config';
import type { LoraPlan } from './model';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
const PEFT_PREFIX = 'base_model.model.';

/** Module-path prefix between our names and the HF task model's (GPT-2: `transformer.`). */
export function defaultModulePrefix(family: ModelFamily | undefined): string {
  return family === 'gpt' ? 'transformer.' : '';
}

const TASK_TYPES: Record<ModelFamily, string | null> = { gpt: 'CAUSAL_LM', bert: null, t5: 'SEQ_2_SEQ_LM' };

export interface SaveAdapterOptions {
  baseModelNameOrPath?: string | null;
  /** Default: defaultModulePrefix(config.family). */
  modulePrefix?: string;
  /** PEFT task_type; default by family (CAUSAL_LM, SEQ_2_SEQ_LM, none for BERT). */
  taskType?: string | null;
  /** PEFT fan_in_fan_out: the base stores (in, out) weights (GPT-2 Conv1D). Default: family gpt. */
  fanInFanOut?: boolean;
}

/** PEFT's adapter_config.json for `plan`. */
export function peftAdapterConfig(plan: LoraPlan, opts: SaveAdapterOptions = {}): Record<string, unknown> {
  const c = plan.config;
  // PEFT expands 'all-linear' into the leaf names it matched before saving; do the same.
  const targets =
    c.target_modules === 'all-linear' ? [...new Set(plan.modules.map((m) => m.module.split('.').pop()!))].sort() : (c.target_modules ?? [...new Set(plan.modules.map((m) => m.module.split('.').pop()!))].sort());
  return {
    peft_type: 'LORA',
    task_type: opts.taskType !== undefined ? opts.taskType : c.family ? TASK_TYPES[c.family] : null,
    base_model_name_or_path: opts.baseModelNameOrPath ?? null,
    r: c.r,
    lora_alpha: c.lora_alpha,
    lora_dropout: c.lora_dropout,
    target_modules: targets,
    use_rslora: c.use_rslora,
    bias: c.bias,
    fan_in_fan_out: opts.fanInFanOut ?? c.family === 'gpt',
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    use_dora: false,
    revision: null,
  };
}

/**
 * The two adapter files for `plan` and its trained tensors (keyed `<module>.lora_A.weight` …).
 * @example const files = saveAdapter(plan, trainer.params(), { baseModelNameOrPath: 'gpt2' })
 */
export function saveAdapter(plan: LoraPlan, adapters: Map<string, Float32Array>, opts: SaveAdapterOptions = {}): Map<string, Buffer> {
  const prefix = opts.modulePrefix ?? defaultModulePrefix(plan.config.family);
  const tensors = new Map<string, TensorData>();
  for (const s of plan.adapterParams) {
    const data = adapters.get(s.name);
    if (!data) throw new Error(`saveAdapter: adapter tensor ${s.name} is missing`);
    tensors.set(`${PEFT_PREFIX}${prefix}${s.name}`, { dtype: 'float32', dims: s.shape, data });
  }
  return new Map([
    [ADAPTER_WEIGHTS_FILE, writeSafetensors(tensors, { format: 'pt' })],
    [ADAPTER_CONFIG_FILE, Buffer.from(JSON.stringify(peftAdapterConfig(plan, opts), null, 2) + '\n')],
  ]);
}

export interface LoadedAdapter {
  /** The adapter's settings; target_modules as saved (a list of leaf names or a regex). */
  config: LoraConfig;
  /** float32 tensors under our names (`<module>.lora_A.weight`). */
  tensors: Map<string, Float32Array>;
  shapes: Map<string, number[]>;
  raw: Record<string, unknown>;
}

/**
 * Reads PEFT adapter files (ours or PEFT's). `family` fills in what the file does not say.
 * Errors name the file and the key or tensor.
 */
export function loadAdapter(files: Map<string, Uint8Array>, opts: { family?: ModelFamily; modulePrefix?: string; where?: string } = {}): LoadedAdapter {
  const where = opts.where ?? 'adapter';
  const cfgBytes = files.get(ADAPTER_CONFIG_FILE);
  const weights = files.get(ADAPTER_WEIGHTS_FILE);
  if (!cfgBytes) throw new EngineError('input', `${where}: ${ADAPTER_CONFIG_FILE} is missing`);
  if (!weights) throw new EngineError('input', `${where}: ${ADAPTER_WEIGHTS_FILE} is missing`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(Buffer.from(cfgBytes).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new EngineError('input', `${where}/${ADAPTER_CONFIG_FILE}: not JSON (${(e as Error).message})`);
  }
  if (raw.peft_type !== 'LORA') throw new EngineError('input', `${where}/${ADAPTER_CONFIG_FILE}: peft_type is ${JSON.stringify(raw.peft_type)}, expected "LORA"`);
  const config = parseLoraConfig(
    {
      r: raw.r,
      lora_alpha: raw.lora_alpha,
      lora_dropout: raw.lora_dropout ?? 0,
      target_modules: raw.target_modules ?? undefined,
      use_rslora: raw.use_rslora ?? false,
      bias: raw.bias ?? 'none',
      family: opts.family,
    },
    `${where}/${ADAPTER_CONFIG_FILE}`,
  );
  const prefix = PEFT_PREFIX + (opts.modulePrefix ?? defaultModulePrefix(opts.family));
  const file = `${where}/${ADAPTER_WEIGHTS_FILE}`;
  const tensors = new Map<string, Float32Array>();
  const shapes = new Map<string, number[]>();
  for (const [key, t] of readSafetensors(weights, file).tensors) {
    if (!key.startsWith(prefix)) throw new EngineError('input', `${file}: tensor "${key}" does not start with "${prefix}"`);
    const name = key.slice(prefix.length);
    const isA = name.endsWith('.lora_A.weight');
    if (!isA && !name.endsWith('.lora_B.weight')) throw new EngineError('input', `${file}: tensor "${key}" is neither lora_A nor lora_B`);
    if (t.dtype !== 'float32') throw new EngineError('input', `${file}: tensor "${key}" is ${t.dtype}; only float32 adapters load`);
    if (t.dims.length !== 2 || t.dims[isA ? 0 : 1] !== config.r) {
      throw new EngineError('input', `${file}: tensor "${key}" has shape [${t.dims.join(', ')}], expected ${isA ? '(r, in)' : '(out, r)'} with r = ${config.r}`);
    }
    tensors.set(name, t.data as Float32Array);
    shapes.set(name, t.dims);
  }
  return { config, tensors, shapes, raw };
}

/** Checks loaded tensors against a plan (same modules, same shapes); errors name the tensor. */
export function checkAdapterAgainstPlan(adapter: LoadedAdapter, plan: LoraPlan, where = 'adapter'): void {
  for (const s of plan.adapterParams) {
    const dims = adapter.shapes.get(s.name);
    if (!dims) throw new EngineError('input', `${where}: tensor ${s.name} is missing for module ${s.name.replace(/\.lora_[AB]\.weight$/, '')}`);
    if (dims.join() !== s.shape.join()) throw new EngineError('input', `${where}: tensor ${s.name} is [${dims.join(', ')}], the model needs [${s.shape.join(', ')}]`);
  }
  const planned = new Set(plan.adapterParams.map((s) => s.name));
  const extra = [...adapter.shapes.keys()].filter((n) => !planned.has(n));
  if (extra.length) throw new EngineError('input', `${where}: tensors for modules the model does not adapt: ${extra.join(', ')}`);
}
