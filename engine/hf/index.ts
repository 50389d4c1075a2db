// Hugging Face model folders in and out of our GPT. `readHfFolder` picks the architecture from
// config.json, maps its config (refusing any math key we cannot honour, naming it) and reads the
// weights tensor by tensor into our parameter names; `writeHfFolder` writes what
// `from_pretrained` strict-loads: config.json with every math key explicit, model.safetensors under
// HF names, generation_config.json and the tokenizer files. docs/hf.md lists the keys.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensors } from '../checkpoint/safetensors';
import type { TensorData } from '../graph/ir';
import { EngineError } from '../errors';
import { countParams, type ParamSpec } from '../models/blocks';
import { gptParams, type GptConfig } from '../models/gpt';
import { BERT_ARCHITECTURES, bertConfigFromHf, bertConfigToHf, bertModelParams, bertWeightsToHf, readBertWeights, type BertModelConfig } from './bert';
import { readT5Weights, t5ConfigFromHf, t5ConfigToHf, t5WeightsToHf } from './t5';
import { t5Params, type T5Config } from '../models/t5';
import { HfConfigReader, leftoverTensors, type HfGptArch, type SpecialTokenIds } from './config-keys';
import { HF_CONFIG_FILE, HF_GENERATION_CONFIG_FILE, HF_INDEX_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_SIDE_FILES, HF_WEIGHTS_FILE, HfFolder, sha256OfFileSync } from './folder';
import { gpt2 } from './gpt2';
import { llama } from './llama';

export { HfFolder, toFloat32, HF_CONFIG_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_SIDE_FILES, HF_WEIGHTS_FILE } from './folder';
export type { SpecialTokenIds } from './config-keys';
export { BertModelConfigSchema, bertModelParams, type BertModelConfig } from './bert';

/** Model families an HF folder can import into, with their config. */
export type HfModelConfig = { family: 'gpt'; config: GptConfig } | { family: 'bert'; config: BertModelConfig } | { family: 't5'; config: T5Config };
export type HfFamily = HfModelConfig['family'];

/** Parameter specs of an imported model (our names and shapes). */
export function hfModelParams(m: HfModelConfig): ParamSpec[] {
  return m.family === 'gpt' ? gptParams(m.config) : m.family === 'bert' ? bertModelParams(m.config) : t5Params(m.config);
}

const SUPPORTED: Record<string, HfGptArch> = {
  GPT2LMHeadModel: gpt2,
  GPT2Model: gpt2,
  LlamaForCausalLM: llama,
  MistralForCausalLM: llama,
};
const BY_MODEL_TYPE: Record<string, string> = { gpt2: 'GPT2LMHeadModel', llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', bert: 'BertModel', t5: 'T5ForConditionalGeneration' };

/** Architectures refused on purpose, and why. */
const REFUSED: Record<string, string> = {
  Qwen2ForCausalLM: 'Qwen2 has biases on the q/k/v projections only, and our GPT has biases on every linear layer or on none',
  qwen2: 'Qwen2 has biases on the q/k/v projections only, and our GPT has biases on every linear layer or on none',
};

/** Buffers HF writers save that hold no weights (causal masks, rotary frequency caches). */
const BUFFERS = /(\.attn\.(bias|masked_bias)|\.rotary_emb\.inv_freq)$/;

/** Which mapping a config.json asks for; unknown and refused architectures are errors naming them. */
export function hfArchitecture(json: Record<string, unknown>, where: string): { architecture: string; family: 'gpt'; arch: HfGptArch } | { architecture: string; family: 'bert' | 't5' } {
  const archs = json.architectures;
  const named = Array.isArray(archs) && typeof archs[0] === 'string' ? (archs[0] as string) : null;
  const modelType = typeof json.model_type === 'string' ? json.model_type : null;
  const architecture = named ?? (modelType ? BY_MODEL_TYPE[modelType] : undefined) ?? null;
  const refused = (named && REFUSED[named]) || (modelType && REFUSED[modelType]);
  if (refused) throw new EngineError('config', `${where}: ${named ? `architectures ${JSON.stringify(archs)}` : `model_type "${modelType}"`} is not supported: ${refused}`);
  if (architecture && BERT_ARCHITECTURES.includes(architecture)) return { architecture, family: 'bert' };
  if (architecture === 'T5ForConditionalGeneration') return { architecture, family: 't5' };
  const arch = architecture ? SUPPORTED[architecture] : undefined;
  if (!arch || !architecture) {
    const what = named ? `architectures ${JSON.stringify(archs)}` : `model_type ${JSON.stringify(json.model_type ?? null)}`;
    throw new EngineError('config', `${where}: ${what} is not supported; supported: ${[...Object.keys(SUPPORTED), ...BERT_ARCHITECTURES, 'T5ForConditionalGeneration'].join(', ')}`);
  }
  return { architecture, family: 'gpt', arch };
}

export interface HfSourceFile {
  name: string;
  sha256: string;
  bytes: number;
}

export type HfImport = HfModelConfig & HfImportRest;
interface HfImportRest {
  /** The HF class the folder was saved from (config.json architectures[0]). */
  architecture: string;
  /** Our parameter names and shapes. */
  specs: ParamSpec[];
  /** float32 weights by our parameter name. */
  weights: Map<string, Float32Array>;
  params: number;
  /** dtypes of the source tensors (e.g. ['bfloat16']). */
  sourceDtypes: string[];
  /** Every file read (config, weights, index, tokenizer), with its sha256. */
  files: HfSourceFile[];
  /** config.json `_name_or_path`, when the writer recorded it (an HF id or a folder). */
  nameOrPath: string | null;
  specialTokens: SpecialTokenIds;
  /** Tokenizer files by name (tokenizer.json and its small companions), when the folder has them. */
  tokenizerFiles: Map<string, Buffer>;
}

/**
 * Reads an HF model folder into our GPT config and float32 weights, one tensor at a time.
 * `onTensor(done, total)` reports progress. Errors name the file, the key or the tensor.
 * @example const m = readHfFolder('gpt2-folder'); m.config.n_layer // 12
 */
export function readHfFolder(dir: string, onTensor?: (done: number, total: number) => void): HfImport {
  const folder = HfFolder.open(dir);
  const where = path.join(dir, HF_CONFIG_FILE);
  const found = hfArchitecture(folder.config, where);
  const { architecture } = found;
  const model: HfModelConfig =
    found.family === 'gpt'
      ? { family: 'gpt', config: found.arch.configFromHf(folder.config, where) }
      : found.family === 'bert'
        ? { family: 'bert', config: bertConfigFromHf(folder.config, where, architecture) }
        : { family: 't5', config: t5ConfigFromHf(folder.config, where) };
  const total = hfModelParams(model).length;
  let done = 0;
  const tick = () => onTensor?.(++done, total);
  const { weights, used } =
    found.family === 'gpt'
      ? found.arch.readWeights(model.config as GptConfig, folder, tick)
      : model.family === 'bert'
        ? readBertWeights(model.config, folder, tick)
        : readT5Weights(model.config as T5Config, folder, tick);
  const specs = hfModelParams(model).filter((s) => weights.has(s.name));
  const left = leftoverTensors(folder, used, BUFFERS);
  if (left.length > 0) {
    const shown = left.slice(0, 5).map((n) => `"${n}"`).join(', ');
    throw new EngineError('input', `${dir}: ${left.length} tensor${left.length > 1 ? 's' : ''} that ${architecture} with this config.json does not have: ${shown}${left.length > 5 ? ', ...' : ''}`);
  }
  const read = [HF_CONFIG_FILE, ...(folder.weightFiles.length > 1 || !fs.existsSync(path.join(dir, HF_WEIGHTS_FILE)) ? [HF_INDEX_FILE] : []), ...folder.weightFiles];
  const tokenizerFiles = new Map<string, Buffer>();
  if (fs.existsSync(path.join(dir, HF_TOKENIZER_FILE))) {
    for (const f of [HF_TOKENIZER_FILE, ...HF_TOKENIZER_SIDE_FILES]) {
      const p = path.join(dir, f);
      if (fs.existsSync(p)) {
        tokenizerFiles.set(f, fs.readFileSync(p));
        read.push(f);
      }
    }
  }
  const files = read.map((name) => {
    const p = path.join(dir, name);
    return { name, sha256: sha256OfFileSync(p), bytes: fs.statSync(p).size };
  });
  const r = new HfConfigReader(folder.config, where);
  return {
    ...model,
    architecture,
    specs,
    weights,
    params: countParams(specs),
    sourceDtypes: folder.dtypes(),
    files,
    nameOrPath: typeof folder.config._name_or_path === 'string' && folder.config._name_or_path ? folder.config._name_or_path : null,
    specialTokens: { bos: r.tokenId('bos_token_id'), eos: r.tokenId('eos_token_id'), pad: r.tokenId('pad_token_id') },
    tokenizerFiles,
  };
}

/**
 * Config keys transformers 5 validates as floats (its strict config dataclasses refuse `1` for
 * `initializer_factor`): written with a decimal point even when whole.
 */
const FLOAT_KEYS = [
  'initializer_factor', 'initializer_range', 'dropout_rate', 'classifier_dropout', 'layer_norm_epsilon', 'layer_norm_eps', 'rms_norm_eps', 'rope_theta',
  'attention_dropout', 'resid_pdrop', 'embd_pdrop', 'attn_pdrop', 'hidden_dropout_prob', 'attention_probs_dropout_prob',
];

/** config.json text: 2-space JSON with the float keys' whole numbers written as `1.0`. */
export function hfConfigJson(config: Record<string, unknown>): string {
  const text = JSON.stringify(config, null, 2);
  return text.replace(new RegExp(`("(?:${FLOAT_KEYS.join('|')})": )(-?\\d+)(,?)$`, 'gm'), '$1$2.0$3') + '\n';
}

/** The HF class our GPT config exports as: GPT-2 for learned positions, Llama for RoPE. */
export function exportArchitecture(config: GptConfig): HfGptArch {
  return (config.pos ?? 'learned') === 'learned' ? gpt2 : llama;
}

export type HfExport = HfModelConfig & HfExportRest;
interface HfExportRest {
  weights: Map<string, Float32Array>;
  specialTokens?: SpecialTokenIds;
  tokenizerFiles?: Map<string, Uint8Array>;
  /** Recorded in config.json `_name_or_path` (e.g. the imported source or the store prefix). */
  nameOrPath?: string;
}

/**
 * Writes an HF folder `from_pretrained` strict-loads. `dir` must be missing or empty, so an export
 * never mixes with another model's files. Returns the files written.
 * @example writeHfFolder('out/gpt2', { config, weights })
 */
export function writeHfFolder(dir: string, m: HfExport): { architecture: string; files: string[] } {
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new EngineError('input', `${dir}: the export folder is not empty`);
  const tokens = m.specialTokens ?? { bos: null, eos: null };
  let config: Record<string, unknown>;
  let tensors: Map<string, TensorData>;
  if (m.family === 'gpt') {
    const arch = exportArchitecture(m.config);
    config = arch.configToHf(m.config, tokens);
    tensors = arch.weightsToHf(m.config, m.weights);
  } else if (m.family === 'bert') {
    config = bertConfigToHf(m.config, tokens);
    tensors = bertWeightsToHf(m.config, m.weights);
  } else {
    config = t5ConfigToHf(m.config, tokens);
    tensors = t5WeightsToHf(m.config, m.weights);
  }
  if (m.nameOrPath) config._name_or_path = m.nameOrPath;
  const architecture = (config.architectures as string[])[0]!;
  fs.mkdirSync(dir, { recursive: true });
  const written = new Map<string, Uint8Array>([
    [HF_CONFIG_FILE, Buffer.from(hfConfigJson(config))],
    [HF_WEIGHTS_FILE, writeSafetensors(tensors, { format: 'pt' })],
    [HF_GENERATION_CONFIG_FILE, Buffer.from(JSON.stringify({ bos_token_id: tokens.bos, eos_token_id: tokens.eos, ...(tokens.pad != null ? { pad_token_id: tokens.pad } : {}) }, null, 2) + '\n')],
    ...(m.tokenizerFiles ?? new Map()),
  ]);
  for (const [name, bytes] of written) fs.writeFileSync(path.join(dir, name), bytes);
  return { architecture, files: [...written.keys()] };
}
