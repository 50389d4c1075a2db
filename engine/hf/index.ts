// Hugging Face model folders in and out of our GPT. `readHfFolder` picks the architecture from
// config.json, maps its config (refusing any math key we cannot honour, naming it) and reads the
// weights tensor by tensor into our parameter names; `writeHfFolder` writes what
// `from_pretrained` strict-loads: config.json with every math key explicit, model.safetensors under
// HF names, generation_config.json and the tokenizer files. docs/hf.md lists the keys.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensors } from '../checkpoint/safetensors';
import { EngineError } from '../errors';
import { countParams } from '../models/blocks';
import { gptParams, type GptConfig } from '../models/gpt';
import { HfConfigReader, leftoverTensors, type HfGptArch, type SpecialTokenIds } from './config-keys';
import { HF_CONFIG_FILE, HF_GENERATION_CONFIG_FILE, HF_INDEX_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_SIDE_FILES, HF_WEIGHTS_FILE, HfFolder, sha256OfFileSync } from './folder';
import { gpt2 } from './gpt2';
import { llama } from './llama';

export { HfFolder, toFloat32, HF_CONFIG_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_SIDE_FILES, HF_WEIGHTS_FILE } from './folder';
export type { SpecialTokenIds } from './config-keys';

/** Model families an HF folder can import into. */
export type HfFamily = 'gpt';

const SUPPORTED: Record<string, HfGptArch> = {
  GPT2LMHeadModel: gpt2,
  GPT2Model: gpt2,
  LlamaForCausalLM: llama,
  MistralForCausalLM: llama,
};
const BY_MODEL_TYPE: Record<string, string> = { gpt2: 'GPT2LMHeadModel', llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM' };

/** Architectures refused on purpose, and why. */
const REFUSED: Record<string, string> = {
  Qwen2ForCausalLM: 'Qwen2 has biases on the q/k/v projections only, and our GPT has biases on every linear layer or on none',
  qwen2: 'Qwen2 has biases on the q/k/v projections only, and our GPT has biases on every linear layer or on none',
};

/** Buffers HF writers save that hold no weights (causal masks, rotary frequency caches). */
const BUFFERS = /(\.attn\.(bias|masked_bias)|\.rotary_emb\.inv_freq)$/;

/** Which mapping a config.json asks for; unknown and refused architectures are errors naming them. */
export function hfArchitecture(json: Record<string, unknown>, where: string): { architecture: string; arch: HfGptArch } {
  const archs = json.architectures;
  const named = Array.isArray(archs) && typeof archs[0] === 'string' ? (archs[0] as string) : null;
  const modelType = typeof json.model_type === 'string' ? json.model_type : null;
  const architecture = named ?? (modelType ? BY_MODEL_TYPE[modelType] : undefined) ?? null;
  const refused = (named && REFUSED[named]) || (modelType && REFUSED[modelType]);
  if (refused) throw new EngineError('config', `${where}: ${named ? `architectures ${JSON.stringify(archs)}` : `model_type "${modelType}"`} is not supported: ${refused}`);
  const arch = architecture ? SUPPORTED[architecture] : undefined;
  if (!arch || !architecture) {
    const what = named ? `architectures ${JSON.stringify(archs)}` : `model_type ${JSON.stringify(json.model_type ?? null)}`;
    throw new EngineError('config', `${where}: ${what} is not supported; supported: ${Object.keys(SUPPORTED).join(', ')}`);
  }
  return { architecture, arch };
}

export interface HfSourceFile {
  name: string;
  sha256: string;
  bytes: number;
}

export interface HfImport {
  family: HfFamily;
  /** The HF class the folder was saved from (config.json architectures[0]). */
  architecture: string;
  /** Our config, every option explicit. */
  config: GptConfig;
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
  const { architecture, arch } = hfArchitecture(folder.config, where);
  const config = arch.configFromHf(folder.config, where);
  const total = gptParams(config).length;
  let done = 0;
  const { weights, used } = arch.readWeights(config, folder, () => onTensor?.(++done, total));
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
    family: 'gpt',
    architecture,
    config,
    weights,
    params: countParams(gptParams(config)),
    sourceDtypes: folder.dtypes(),
    files,
    nameOrPath: typeof folder.config._name_or_path === 'string' && folder.config._name_or_path ? folder.config._name_or_path : null,
    specialTokens: { bos: r.tokenId('bos_token_id'), eos: r.tokenId('eos_token_id'), pad: r.tokenId('pad_token_id') },
    tokenizerFiles,
  };
}

/** The HF class our GPT config exports as: GPT-2 for learned positions, Llama for RoPE. */
export function exportArchitecture(config: GptConfig): HfGptArch {
  return (config.pos ?? 'learned') === 'learned' ? gpt2 : llama;
}

export interface HfExport {
  config: GptConfig;
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
  const arch = exportArchitecture(m.config);
  const tokens = m.specialTokens ?? { bos: null, eos: null };
  const config = arch.configToHf(m.config, tokens);
  if (m.nameOrPath) config._name_or_path = m.nameOrPath;
  const tensors = arch.weightsToHf(m.config, m.weights);
  fs.mkdirSync(dir, { recursive: true });
  const written = new Map<string, Uint8Array>([
    [HF_CONFIG_FILE, Buffer.from(JSON.stringify(config, null, 2) + '\n')],
    [HF_WEIGHTS_FILE, writeSafetensors(tensors, { format: 'pt' })],
    [HF_GENERATION_CONFIG_FILE, Buffer.from(JSON.stringify({ bos_token_id: tokens.bos, eos_token_id: tokens.eos, ...(tokens.pad != null ? { pad_token_id: tokens.pad } : {}) }, null, 2) + '\n')],
    ...(m.tokenizerFiles ?? new Map()),
  ]);
  for (const [name, bytes] of written) fs.writeFileSync(path.join(dir, name), bytes);
  return { architecture: arch.architecture, files: [...written.keys()] };
}
