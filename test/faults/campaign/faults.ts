// The faults the campaign injects into a running pipeline, each done to real processes and real
// bytes: SIGKILL of a stack process found through the stack state file (<state>/stack.json), a
// damaged object written into the S3 server, a full scratch disk (a tmpfs the campaign mounts),
// a cancel followed by the SDK's retry. After a fault that stops part of the stack, the stack is
// brought back as a user would: `stackUp` (`truthgpt up`) starts what is not running.

import fs from 'node:fs';
import path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { mulberry32 } from '../../../engine/data/random';
import type { Config } from '../../../infra/config';
import { stackUp } from '../../../infra/stack';
import { processRunning, readState, waitForExit, type ProcessEntry, type WorkerEntry } from '../../../infra/stack-state';
import { sha256OfBuffer } from '../../../infra/store-upload';
import type { ArtifactStore } from '../../../infra/store';
import type { PipelineSpecInput } from '../../../sdk';

export const FAULT_KINDS = [
  'kill-gpu-worker',
  'kill-cpu-worker',
  'kill-supervisor',
  's3-outage',
  'temporal-restart',
  'corrupt-object',
  'non-finite-loss',
  'disk-full',
  'cancel-retry',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A seeded PRNG (the engine's mulberry32): the same seed draws the same campaign. */
export const rng = mulberry32;

export interface StackHandle {
  config: Config;
  /** Environment `up` passes to the processes it starts (ports, state folder, scratch folder). */
  env: NodeJS.ProcessEnv;
  store: ArtifactStore;
  log: (line: string) => void;
}

/** Brings back whatever is down, as `truthgpt up` does. */
export async function bringUp(h: StackHandle): Promise<void> {
  await stackUp(h.config, { env: h.env, timeoutMs: 240_000 });
}

/** Worker processes of a pool as the state file lists them (any layout: one entry per worker, keyed however). */
export function workersOf(h: StackHandle, pool: string): WorkerEntry[] {
  const state = readState(h.config.stack.stateDir);
  const entries = Object.values(state?.workers ?? {}) as WorkerEntry[];
  return entries.filter((w) => w && w.pool === pool && processRunning(w));
}

async function sigkill(entry: ProcessEntry | undefined, what: string): Promise<string> {
  if (!entry || !processRunning(entry)) return `${what}: not running`;
  process.kill(entry.pid, 'SIGKILL');
  await waitForExit(entry, 10_000);
  return `SIGKILL ${what} pid ${entry.pid}`;
}

/** SIGKILLs one live worker of `pool`, drawn by `draw`; the supervisor restarts it. */
export async function killWorker(h: StackHandle, pool: string, draw: () => number): Promise<string> {
  const live = workersOf(h, pool);
  if (live.length === 0) return `no live ${pool} worker`;
  const w = live[Math.floor(draw() * live.length)];
  return sigkill(w, `${pool} worker`);
}

/** SIGKILLs the supervisor; its workers notice and shut down; then `up` starts a new one. */
export async function killSupervisor(h: StackHandle): Promise<string> {
  const state = readState(h.config.stack.stateDir);
  const workers = Object.values(state?.workers ?? {}) as WorkerEntry[];
  const note = await sigkill(state?.supervisor, 'supervisor');
  // The workers poll for their parent every 2 s and then shut down (finishing or abandoning their tasks).
  const gone = await Promise.all(workers.map((w) => waitForExit(w, 120_000)));
  await bringUp(h);
  return `${note}; ${gone.filter(Boolean).length}/${workers.length} workers shut down by themselves; up started a new supervisor`;
}

/** SIGKILLs the S3 server, keeps it down `downMs`, then `up` restarts it on the same port and data folder. */
export async function s3Outage(h: StackHandle, downMs: number): Promise<string> {
  const note = await sigkill(readState(h.config.stack.stateDir)?.s3, 'S3 server');
  await sleep(downMs);
  await bringUp(h);
  return `${note}; down ${(downMs / 1000).toFixed(1)} s; restarted`;
}

/** SIGKILLs the Temporal dev server, then `up` restarts it on the same SQLite file and port. */
export async function temporalRestart(h: StackHandle, downMs: number): Promise<string> {
  const note = await sigkill(readState(h.config.stack.stateDir)?.temporal, 'Temporal dev server');
  await sleep(downMs);
  await bringUp(h);
  return `${note}; down ${(downMs / 1000).toFixed(1)} s; restarted`;
}

export interface Damage {
  key: string;
  how: 'flipped' | 'truncated';
  /** The committed bytes, put back once the run has ended (the operator's repair). */
  original: Buffer;
}

/**
 * Damages a committed object in place through the S3 API, keeping the object's recorded sha256 in
 * its metadata, as a bit rot or a half-written copy on the server would: either bytes flipped in
 * the middle or the second half cut off. The target is the run's newest committed global
 * checkpoint's weights, or (when the draw says so, or nothing is committed yet) a training shard of
 * the dataset the run reads.
 */
export async function corruptObject(h: StackHandle, runId: string, spec: PipelineSpecInput, draw: () => number): Promise<Damage | null> {
  const target = draw() < 0.5 ? ((await newestGlobalWeights(h.store, runId)) ?? (await datasetShard(h.store, spec, draw))) : ((await datasetShard(h.store, spec, draw)) ?? (await newestGlobalWeights(h.store, runId)));
  if (!target) return null;
  const original = await h.store.get(target);
  const how = draw() < 0.5 ? 'flipped' : 'truncated';
  let bad: Buffer;
  if (how === 'flipped') {
    bad = Buffer.from(original);
    const at = Math.floor(original.length / 2);
    for (let i = at; i < Math.min(at + 16, bad.length); i++) bad[i] ^= 0xff;
  } else {
    bad = original.subarray(0, Math.floor(original.length / 2));
  }
  await h.store.client.send(new PutObjectCommand({ Bucket: h.store.bucket, Key: target, Body: bad, Metadata: { sha256: sha256OfBuffer(original) } }));
  return { key: target, how, original };
}

/** Puts the committed bytes back under their key (with their own sha256 in the metadata). */
export async function repair(h: StackHandle, d: Damage): Promise<void> {
  await h.store.put(d.key, d.original);
}

async function newestGlobalWeights(store: ArtifactStore, runId: string): Promise<string | null> {
  const prefixes = (await store.list(`runs/${runId}/global/`)).map((o) => o.key).filter((k) => k.endsWith('/MANIFEST.json')).sort();
  const newest = prefixes.at(-1);
  if (!newest) return null;
  const m = await store.readManifest(newest.slice(0, -'/MANIFEST.json'.length));
  return m?.files.find((f) => f.name === 'model.safetensors')?.key ?? null;
}

async function datasetShard(store: ArtifactStore, spec: PipelineSpecInput, draw: () => number): Promise<string | null> {
  const name = spec.dataset!.name;
  const workers = spec.training.workers ?? 1;
  for (const o of await store.list(`datasets/${name}-`)) {
    if (!o.key.endsWith('/MANIFEST.json')) continue;
    const m = await store.readManifest(o.key.slice(0, -'/MANIFEST.json'.length));
    const ref = m?.meta.ref as { train?: { file: string }[] } | undefined;
    if (!m || !ref?.train || ref.train.length !== workers) continue;
    const file = ref.train[Math.floor(draw() * ref.train.length)].file;
    return m.files.find((f) => f.name === file)?.key ?? null;
  }
  return null;
}

/** A small tmpfs as the workers' scratch folder (TRUTHGPT_SCRATCH_DIR), and a file that fills it. */
export class ScratchDisk {
  private readonly filler: string;
  constructor(readonly dir: string) {
    this.filler = path.join(dir, 'filler');
  }

  /** Mounts a tmpfs of `mib` MiB at `dir` (needs root); returns why not, or null. */
  static mount(dir: string, mib: number, exec: (cmd: string, args: string[]) => void): string | null {
    fs.mkdirSync(dir, { recursive: true });
    try {
      exec('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=1777`, 'tmpfs', dir]);
      return null;
    } catch (err) {
      return `could not mount a tmpfs at ${dir}: ${(err as Error).message.split('\n')[0]}`;
    }
  }

  /** Writes until the disk says ENOSPC; returns the bytes written. */
  fill(): number {
    const fd = fs.openSync(this.filler, 'w');
    const chunk = Buffer.alloc(64 << 10, 0x5a);
    let written = 0;
    try {
      for (;;) {
        try {
          written += fs.writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
      // The last partial chunk: byte by byte would be slow, so halve until nothing fits.
      for (let n = chunk.length >> 1; n >= 1; n >>= 1) {
        try {
          written += fs.writeSync(fd, chunk, 0, n);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        }
      }
    } finally {
      fs.closeSync(fd);
    }
    return written;
  }

  free(): void {
    fs.rmSync(this.filler, { force: true });
  }

  static unmount(dir: string, exec: (cmd: string, args: string[]) => void): void {
    try {
      exec('umount', [dir]);
    } catch {
      // already unmounted
    }
  }
}
