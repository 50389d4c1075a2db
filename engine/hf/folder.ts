// A Hugging Face model folder on disk, read the way `from_pretrained` reads it: config.json, then
// model.safetensors or the shards that model.safetensors.index.json lists. Only the safetensors
// headers are read up front; each tensor is read from its file when asked for and converted to
// float32 (float16 and bfloat16 widen exactly), so importing a model holds one source tensor at a
// time besides the float32 weights it builds.

import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { headerLength, parseSafetensorsHeader, SafetensorsError, type SafetensorsEntry } from '../checkpoint/safetensors';
import { EngineError } from '../errors';

export const HF_CONFIG_FILE = 'config.json';
export const HF_WEIGHTS_FILE = 'model.safetensors';
export const HF_INDEX_FILE = 'model.safetensors.index.json';
export const HF_TOKENIZER_FILE = 'tokenizer.json';
export const HF_GENERATION_CONFIG_FILE = 'generation_config.json';
/** Tokenizer files copied along with tokenizer.json when a folder has them. */
export const HF_TOKENIZER_SIDE_FILES = ['tokenizer_config.json', 'special_tokens_map.json'] as const;

/** A float32 tensor read from a folder. */
export interface HfTensor {
  dims: number[];
  data: Float32Array;
}

interface Located {
  file: string;
  entry: SafetensorsEntry;
  dataStart: number;
}

const WEIGHT_DTYPES = new Set(['float32', 'float16', 'bfloat16']);

/** float16 bits → float32 value (exact: every half is a float). */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let HALF_TABLE: Float32Array | null = null;

/** Raw little-endian bytes of a float32/float16/bfloat16 tensor → a new Float32Array. */
export function toFloat32(dtype: string, bytes: Uint8Array): Float32Array {
  const n = dtype === 'float32' ? bytes.byteLength / 4 : bytes.byteLength / 2;
  const out = new Float32Array(n);
  if (dtype === 'float32') {
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const u16 = new Uint16Array(n);
  new Uint8Array(u16.buffer).set(bytes);
  if (dtype === 'bfloat16') {
    // bfloat16 is the top half of a float32.
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = u16[i]! << 16;
    return out;
  }
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) HALF_TABLE[h] = halfToFloat(h);
  }
  for (let i = 0; i < n; i++) out[i] = HALF_TABLE[u16[i]!]!;
  return out;
}

/** sha256 of a file, streamed in 4 MiB blocks (never the whole file in memory). */
export function sha256OfFileSync(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new EngineError('input', `${file}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new EngineError('input', `${file}: not JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new EngineError('input', `${file}: expected a JSON object`);
  return json as Record<string, unknown>;
}

/**
 * An HF model folder with its tensors located but not read.
 * @example const f = HfFolder.open('gpt2'); const wte = f.tensor('transformer.wte.weight', [50257, 768])
 */
export class HfFolder {
  private constructor(
    readonly dir: string,
    readonly config: Record<string, unknown>,
    /** The weight files (one, or the shards in index order), relative to dir. */
    readonly weightFiles: string[],
    private readonly located: Map<string, Located>,
  ) {}

  static open(dir: string): HfFolder {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new EngineError('input', `${dir}: not a folder`);
    const configFile = path.join(dir, HF_CONFIG_FILE);
    if (!fs.existsSync(configFile)) throw new EngineError('input', `${dir}: has no ${HF_CONFIG_FILE} (expected a Hugging Face model folder as save_pretrained writes it)`);
    const config = readJson(configFile);
    let files: string[];
    const indexFile = path.join(dir, HF_INDEX_FILE);
    if (fs.existsSync(path.join(dir, HF_WEIGHTS_FILE))) files = [HF_WEIGHTS_FILE];
    else if (fs.existsSync(indexFile)) {
      const map = readJson(indexFile).weight_map;
      if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new EngineError('input', `${indexFile}: weight_map is missing or not an object`);
      files = [...new Set(Object.values(map as Record<string, unknown>).map((v) => String(v)))].sort();
      for (const f of files) {
        if (f.includes('/') || f.includes('\\') || f.startsWith('.')) throw new EngineError('input', `${indexFile}: weight_map names "${f}", which is not a file in the folder`);
      }
    } else {
      const bins = fs.readdirSync(dir).filter((f) => f.endsWith('.bin') || f.endsWith('.pt') || f.endsWith('.h5') || f.endsWith('.msgpack'));
      const hint = bins.length ? ` (it has ${bins.join(', ')}: re-save with save_pretrained(dir, safe_serialization=True))` : '';
      throw new EngineError('input', `${dir}: has neither ${HF_WEIGHTS_FILE} nor ${HF_INDEX_FILE}${hint}`);
    }
    const located = new Map<string, Located>();
    for (const f of files) {
      const file = path.join(dir, f);
      const fd = fs.openSync(file, 'r');
      try {
        const size = fs.fstatSync(fd).size;
        const first8 = Buffer.alloc(8);
        fs.readSync(fd, first8, 0, 8, 0);
        const n = headerLength(first8, size, file);
        const json = Buffer.alloc(n);
        fs.readSync(fd, json, 0, n, 8);
        const { tensors } = parseSafetensorsHeader(json, size - 8 - n, file);
        for (const [name, entry] of tensors) {
          const prev = located.get(name);
          if (prev) throw new SafetensorsError(file, name, `also in ${prev.file}`);
          located.set(name, { file, entry, dataStart: 8 + n });
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    return new HfFolder(dir, config, files, located);
  }

  has(name: string): boolean {
    return this.located.has(name);
  }

  names(): string[] {
    return [...this.located.keys()];
  }

  /** Source dtypes of the weights, e.g. ['bfloat16']. */
  dtypes(): string[] {
    return [...new Set([...this.located.values()].map((l) => l.entry.dtype))].sort();
  }

  /** Reads one tensor as float32; a missing tensor, another shape or a non-float dtype is an error naming file and tensor. */
  tensor(name: string, dims: number[]): HfTensor {
    const l = this.located.get(name);
    const where = this.weightFiles.length === 1 ? path.join(this.dir, this.weightFiles[0]!) : path.join(this.dir, HF_INDEX_FILE);
    if (!l) throw new SafetensorsError(where, name, 'missing');
    const { shape, dtype, offsets } = l.entry;
    if (shape.length !== dims.length || shape.some((d, i) => d !== dims[i])) {
      throw new SafetensorsError(l.file, name, `shape [${shape.join(', ')}], the config needs [${dims.join(', ')}]`);
    }
    if (!WEIGHT_DTYPES.has(dtype)) throw new SafetensorsError(l.file, name, `dtype ${dtype}; weights must be float32, float16 or bfloat16`);
    const bytes = Buffer.allocUnsafe(offsets[1] - offsets[0]);
    const fd = fs.openSync(l.file, 'r');
    try {
      let done = 0;
      while (done < bytes.length) {
        const n = fs.readSync(fd, bytes, done, bytes.length - done, l.dataStart + offsets[0] + done);
        if (n === 0) throw new SafetensorsError(l.file, name, 'truncated while reading');
        done += n;
      }
    } finally {
      fs.closeSync(fd);
    }
    return { dims: shape, data: toFloat32(dtype, bytes) };
  }
}
