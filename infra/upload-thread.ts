// Large uploads on a thread of their own. onnxruntime-node runs `session.run` on the calling
// thread (bench/RESULTS.md, "how long one onnxruntime-node call holds the event loop"), so an
// upload started on the main thread beside a training step only moves between steps: on a GPU
// worker a shard's 130 MB result, uploaded while the next shard trained, took 22–44 s and ended
// only after those steps did. Here the bytes go out on this thread's own event loop, with its own
// S3 client built from the same settings, through the same putBuffer as everywhere else.
//
// A checkpoint's tensor files are serialized and hashed here too (their content key needs the hash),
// so the main thread only copies the tensors over: the next shard's activity starts without waiting
// for 130 MB to be packed. Bytes and tensors are copied to the thread (the caller's stay usable);
// errors come back as their name, message, code and HTTP status, which is all translateS3Error and
// the callers read.

import { parentPort, Worker, workerData } from 'node:worker_threads';
import type { TensorData } from '../engine/graph/ir';
import { writeSafetensors } from '../engine/checkpoint/safetensors';
import { contentKeyOf } from './store-manifest';
import { putBuffer, sha256OfBuffer, type PutResult, type UploadTarget } from './store-upload';

/** An upload target without its client: the thread has its own. */
export type ThreadTarget = Omit<UploadTarget, 'client'>;

/** Bytes of a known sha256 to `target`, or tensors to serialize and hash here, then upload content-addressed under `folder`. */
type Job = { id: number; target: ThreadTarget } & ({ body: Uint8Array; sha256: string } | { folder: string; name: string; tensors: Map<string, TensorData>; metadata: Record<string, string> });

/** An upload's result, and for tensors the time spent serializing and hashing them, ms. */
export type ThreadPut = PutResult & { packMs?: number };

type Reply = { id: number; result: ThreadPut } | { id: number; error: { name?: string; message: string; Code?: string; status?: number } };

/** The main thread's side: one thread per store, started on first use, not keeping the process alive. */
export class UploadThread {
  private worker: Worker | null = null;
  private next = 1;
  private readonly pending = new Map<number, { resolve(r: ThreadPut): void; reject(e: unknown): void }>();

  /** `settings`: the store's parsed S3 settings; the thread builds its own client from them (s3Client). */
  constructor(private readonly settings: unknown) {}

  put(target: ThreadTarget, body: Uint8Array, sha256: string): Promise<ThreadPut> {
    return this.send({ id: this.next++, target, body, sha256 });
  }

  /** Serializes `tensors` as a safetensors file on the thread, hashes it there and uploads it to its content key under `folder`. */
  putTensors(target: ThreadTarget, folder: string, name: string, tensors: Map<string, TensorData>, metadata: Record<string, string>): Promise<ThreadPut> {
    return this.send({ id: this.next++, target, folder, name, tensors, metadata });
  }

  private send(job: Job): Promise<ThreadPut> {
    const w = this.start();
    return new Promise((resolve, reject) => {
      this.pending.set(job.id, { resolve, reject });
      if (this.pending.size === 1) w.ref();
      w.postMessage(job);
    });
  }

  close(): void {
    void this.worker?.terminate();
    this.worker = null;
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    // The thread runs this very file (TypeScript, through tsx's loader, as the processes do).
    const code = `require(${JSON.stringify(require.resolve('tsx/cjs/api'))}).register(); require(${JSON.stringify(__filename)});`;
    const w = new Worker(code, { eval: true, workerData: { uploadThread: this.settings } });
    w.unref();
    w.on('message', (r: Reply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      if ('result' in r) p.resolve(r.result);
      else p.reject(Object.assign(new Error(r.error.message), { name: r.error.name, Code: r.error.Code, $metadata: { httpStatusCode: r.error.status } }));
    });
    const fail = (err: unknown) => {
      if (this.worker === w) this.worker = null;
      for (const p of this.pending.values()) p.reject(err instanceof Error ? err : new Error(`upload thread: ${String(err)}`));
      this.pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`upload thread exited with code ${code}`)));
    this.worker = w;
    return w;
  }
}

// In the thread: build the client once, then serve jobs, several at once.
if (parentPort && (workerData as { uploadThread?: unknown } | null)?.uploadThread) {
  const port = parentPort;
  // Required here, not imported at the top: the main thread's store imports this file.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { s3Client } = require('./store') as typeof import('./store');
  const client = s3Client((workerData as { uploadThread: Parameters<typeof s3Client>[0] }).uploadThread);
  const run = async (job: Job): Promise<ThreadPut> => {
    if ('body' in job) return putBuffer({ ...job.target, client }, job.body, job.sha256);
    const t0 = performance.now();
    const bytes = writeSafetensors(job.tensors, job.metadata);
    const sha256 = sha256OfBuffer(bytes);
    const packMs = performance.now() - t0;
    return { ...(await putBuffer({ ...job.target, key: contentKeyOf(job.folder, job.name, sha256), client }, bytes, sha256)), packMs };
  };
  port.on('message', (job: Job) => {
    run(job).then(
      (result) => port.postMessage({ id: job.id, result } satisfies Reply),
      (err: unknown) => {
        const e = err as { name?: string; message?: string; Code?: string; $metadata?: { httpStatusCode?: number } };
        port.postMessage({ id: job.id, error: { name: e?.name, message: e?.message ?? String(err), Code: e?.Code, status: e?.$metadata?.httpStatusCode } } satisfies Reply);
      },
    );
  });
}
