// Parsed checkpoint tensor files kept in this process by the sha256 of their bytes. A file's
// sha256 names its content (the store keys committed files by it, and every CheckpointRef carries
// it), so a worker that already holds the bytes of a sha256 — because it wrote them (the
// aggregator's global checkpoint, a shard's optimizer state) or read them for an earlier
// activity — uses them instead of reading them again. Sharing it between the pools of one
// process is safe for the same reason. Entries are never mutated: readers copy what they change
// (StepRunner.setParams copies into its own buffers; the outer step writes new arrays).
//
// Least recently used entries go first once the bytes held pass the budget; one entry larger
// than the whole budget is not kept.

import os from 'node:os';
import type { TensorData } from '../engine/graph/ir';

export type Tensors = Map<string, TensorData>;

export interface TensorCacheStats {
  hits: number;
  misses: number;
  /** Bytes of file content served from memory instead of the store. */
  bytesSaved: number;
  entries: number;
  bytes: number;
}

export class TensorCache {
  private readonly entries = new Map<string, { tensors: Promise<Tensors>; bytes: number }>();
  private held = 0;
  private hits = 0;
  private misses = 0;
  private saved = 0;

  constructor(readonly maxBytes: number) {}

  /**
   * The tensors of the file with this sha256: from memory, or from `load()` once (concurrent
   * callers of the same sha256 share one load). A failed load is forgotten.
   */
  async get(sha256: string, bytes: number, load: () => Promise<Tensors>): Promise<Tensors> {
    const hit = this.entries.get(sha256);
    if (hit) {
      this.hits++;
      this.saved += bytes;
      this.entries.delete(sha256);
      this.entries.set(sha256, hit); // most recently used last
      return hit.tensors;
    }
    this.misses++;
    const tensors = load();
    if (bytes > this.maxBytes) return tensors;
    this.insert(sha256, tensors, bytes);
    tensors.catch(() => {
      if (this.entries.get(sha256)?.tensors === tensors) this.forget(sha256);
    });
    return tensors;
  }

  /** Keeps tensors this process just wrote as the file with this sha256. */
  put(sha256: string, tensors: Tensors, bytes: number): void {
    if (bytes > this.maxBytes || this.entries.has(sha256)) return;
    this.insert(sha256, Promise.resolve(tensors), bytes);
  }

  /** Lets go of an entry its reader used for the last time (a shard's previous optimizer state), so it does not push out live ones. */
  drop(sha256: string): void {
    this.forget(sha256);
  }

  has(sha256: string): boolean {
    return this.entries.has(sha256);
  }

  stats(): TensorCacheStats {
    return { hits: this.hits, misses: this.misses, bytesSaved: this.saved, entries: this.entries.size, bytes: this.held };
  }

  clear(): void {
    this.entries.clear();
    this.held = 0;
  }

  private insert(sha256: string, tensors: Promise<Tensors>, bytes: number): void {
    this.entries.set(sha256, { tensors, bytes });
    this.held += bytes;
    for (const key of this.entries.keys()) {
      if (this.held <= this.maxBytes) break;
      if (key !== sha256) this.forget(key);
    }
  }

  private forget(sha256: string): void {
    const e = this.entries.get(sha256);
    if (!e) return;
    this.entries.delete(sha256);
    this.held -= e.bytes;
  }
}

/**
 * The process's cache: a quarter of the machine's memory, at most 8 GiB (gpt2-small in float32 is
 * 0.5 GB of weights and 1 GB of AdamW moments, so a worker keeps a few rounds of both).
 */
export const tensorCache = new TensorCache(Math.min(8 * 2 ** 30, Math.floor(os.totalmem() / 4)));
