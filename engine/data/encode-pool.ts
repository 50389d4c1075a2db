// Worker threads that tokenize batches of documents for prepareDataset, so data preparation uses
// every core: the main thread reads the corpus and writes the shards, each worker runs the
// pre-token cache (word-cache.ts) with its own copy of the tokenizer. Batches are handed out in
// turn and their ids come back to the writer in corpus order, so the shards are the same as with
// one thread. A worker's ids are the library's, as in the main thread. A worker that fails is a
// plain Error (an infrastructure fault: the activity is retried).

import { availableParallelism } from 'node:os';
import { extname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { TokenIds } from './tokenizer';

/** What a worker needs: the tokenizer.json text and how its ids are stored. */
export interface EncodeWorkerData {
  json: string;
  wide: boolean;
}

/** A batch of documents as one buffer of UTF-8 text and each document's end. */
export interface EncodeRequest {
  id: number;
  text: ArrayBuffer;
  ends: Int32Array;
}

/** A batch's ids, all documents one after the other (each with its EOT), and each document's end. */
export type EncodeReply = { id: number; ids: Uint16Array | Uint32Array; ends: Int32Array } | { id: number; error: string };

/** Workers by default: one per core, at most 4 (past that the main thread's reading and writing is the bound). */
export function defaultEncodeWorkers(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

export class EncodePool {
  private readonly workers: Worker[];
  private readonly waiting = new Map<number, { resolve: (ids: TokenIds[]) => void; reject: (e: Error) => void }>();
  private next = 0;
  private failed: Error | null = null;

  constructor(data: EncodeWorkerData, count = defaultEncodeWorkers()) {
    // Under tsx or ts-jest the worker is TypeScript: it registers tsx's loader before loading it.
    const file = join(__dirname, `encode-worker${extname(__filename)}`);
    // Both paths are resolved here: an eval'd worker resolves modules from the process's working directory.
    const code = extname(__filename) === '.ts' ? `require(${JSON.stringify(require.resolve('tsx/cjs/api'))}).register(); require(${JSON.stringify(file)});` : `require(${JSON.stringify(file)});`;
    this.workers = Array.from({ length: count }, () => {
      const w = new Worker(code, { eval: true, workerData: data });
      w.on('message', (m: EncodeReply) => this.reply(m));
      w.on('error', (e) => this.fail(new Error(`tokenizer worker: ${e.message}`)));
      w.on('exit', (code) => code !== 0 && this.fail(new Error(`tokenizer worker exited with code ${code}`)));
      return w;
    });
  }

  get size(): number {
    return this.workers.length;
  }

  /** The ids of each text followed by EOT, as `Tokenizer.encodeDocs` gives them. */
  encodeDocs(texts: readonly string[]): Promise<TokenIds[]> {
    if (this.failed) return Promise.reject(this.failed);
    let total = 0;
    for (const t of texts) total += Buffer.byteLength(t, 'utf8');
    const text = Buffer.from(new ArrayBuffer(total));
    const ends = new Int32Array(texts.length);
    let at = 0;
    texts.forEach((t, i) => (ends[i] = at += text.write(t, at, 'utf8')));
    const id = this.next++;
    return new Promise<TokenIds[]>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      const request: EncodeRequest = { id, text: text.buffer as ArrayBuffer, ends };
      this.workers[id % this.workers.length].postMessage(request, [request.text, ends.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  private reply(m: EncodeReply): void {
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    if ('error' in m) return w.reject(new Error(`tokenizer worker: ${m.error}`));
    const docs: TokenIds[] = [];
    let from = 0;
    for (const end of m.ends) {
      docs.push(m.ids.subarray(from, end));
      from = end;
    }
    w.resolve(docs);
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const w of this.waiting.values()) w.reject(e);
    this.waiting.clear();
  }
}
