// Reading an HF config.json strictly where it matters: every key that changes the math is read
// through these helpers, which either return a value our model honours or throw an error naming
// the key, its value and why. Keys that do not change the math are never read.

import { EngineError } from '../errors';
import type { GptConfig } from '../models/gpt';
import type { TensorData } from '../graph/ir';
import type { HfFolder } from './folder';

/** An architecture that maps onto our GPT builder, both ways. */
export interface HfGptArch {
  /** The HF `architectures[0]` this writes on export. */
  architecture: string;
  /** Our GPT config from the HF config.json; refuses any math key it cannot honour. */
  configFromHf(json: Record<string, unknown>, where: string): GptConfig;
  /** Our weights (float32, by our parameter name) read tensor by tensor from the folder; lists source tensors it read. */
  readWeights(cfg: GptConfig, folder: HfFolder, onTensor?: (name: string) => void): { weights: Map<string, Float32Array>; used: Set<string> };
  /** config.json of the export: model_type, architectures and every math key explicit. */
  configToHf(cfg: GptConfig, tokens: SpecialTokenIds): Record<string, unknown>;
  /** Tensors under HF names, exactly what the HF class strict-loads. */
  weightsToHf(cfg: GptConfig, weights: Map<string, Float32Array>): Map<string, TensorData>;
}

export interface SpecialTokenIds {
  bos: number | null;
  eos: number | null;
  pad?: number | null;
}

/** Typed reads of one config.json, each error naming the file, the key and the value. */
export class HfConfigReader {
  constructor(
    readonly json: Record<string, unknown>,
    readonly where: string,
  ) {}

  private fail(key: string, msg: string): never {
    throw new EngineError('config', `${this.where}: ${key} = ${JSON.stringify(this.json[key])}: ${msg}`, { details: { key, value: this.json[key] ?? null } });
  }

  /** A refusal: the key has a value our model cannot reproduce. */
  refuse(key: string, why: string): never {
    return this.fail(key, why);
  }

  has(key: string): boolean {
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  int(key: string, dflt?: number): number {
    const v = this.json[key] ?? dflt;
    if (v === undefined) throw new EngineError('config', `${this.where}: ${key} is missing`, { details: { key } });
    if (!Number.isSafeInteger(v) || (v as number) <= 0) this.fail(key, 'expected a positive integer');
    return v as number;
  }

  num(key: string, dflt: number): number {
    const v = this.json[key] ?? dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, 'expected a number');
    return v;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.json[key] ?? dflt;
    if (typeof v !== 'boolean') this.fail(key, 'expected true or false');
    return v;
  }

  str(key: string, dflt: string): string {
    const v = this.json[key] ?? dflt;
    if (typeof v !== 'string') this.fail(key, 'expected a string');
    return v;
  }

  /** The key must hold one of `allowed` (missing means `dflt`); otherwise refused with `why`. */
  oneOf<T>(key: string, dflt: T, allowed: T[], why: string): T {
    const v = (this.json[key] ?? dflt) as T;
    if (!allowed.includes(v)) this.refuse(key, why);
    return v;
  }

  /** The key must be missing, null or `ok`; anything else is refused with `why`. */
  onlyDefault(key: string, ok: unknown, why: string): void {
    const v = this.json[key];
    if (v !== undefined && v !== null && v !== ok) this.refuse(key, why);
  }

  /** bos/eos/pad ids as HF records them (an int, or the first of a list), null when absent. */
  tokenId(key: string): number | null {
    const v = this.json[key];
    if (Array.isArray(v)) return Number.isSafeInteger(v[0]) ? (v[0] as number) : null;
    return Number.isSafeInteger(v) ? (v as number) : null;
  }
}

/** Source tensors a folder holds that the mapping did not read, minus HF buffers that carry no weights. */
export function leftoverTensors(folder: HfFolder, used: Set<string>, buffers: RegExp): string[] {
  return folder.names().filter((n) => !used.has(n) && !buffers.test(n)).sort();
}
