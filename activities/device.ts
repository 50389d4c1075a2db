// The GPU pool's one device, shared by the activities of one worker process. A training step owns
// the whole device, so the worker takes a new activity only while no running activity holds it
// (workers/device-slots.ts turns this gate into the worker's activity slot supplier). An activity
// holds the device from its start until it ends, or until it calls `releaseDevice()`: the shard
// loop does so once its steps are done and the final weights and state are copied out of the
// runner, so the next shard's steps run while this one packs and uploads its result (bench/RESULTS.md,
// "Orchestration share at rounds of tens of seconds"). The result is still committed before the
// activity completes: nothing about durability changes, only what runs beside the upload.
//
// In an activity the GPU-pool worker did not start (CPU pool, tests that run activities directly)
// `releaseDevice()` does nothing.

import { Context } from '@temporalio/activity';

/** What the slot supplier hands the worker for one task: the device, until released. */
export interface DevicePermit {
  id: number;
}

export class DeviceGate {
  private holder: DevicePermit | null = null;
  private next = 1;
  private readonly waiters = new Set<() => void>();

  /** A permit once no activity holds the device (it then holds it); rejects with the signal's reason on abort. */
  acquire(signal?: AbortSignal): Promise<DevicePermit> {
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const wake = () => {
        const p = this.tryAcquire();
        if (!p) return;
        this.waiters.delete(wake);
        signal?.removeEventListener('abort', abort);
        resolve(p);
      };
      const abort = () => {
        this.waiters.delete(wake);
        reject(signal!.reason);
      };
      if (signal?.aborted) return abort();
      signal?.addEventListener('abort', abort, { once: true });
      this.waiters.add(wake);
    });
  }

  /** A permit at once, or null while the device is held. */
  tryAcquire(): DevicePermit | null {
    if (this.holder) return null;
    this.holder = { id: this.next++ };
    return this.holder;
  }

  /** Ends `permit`'s hold on the device (the activity ended, or released it early); a later call is a no-op. */
  release(permit: DevicePermit): void {
    if (this.holder?.id !== permit.id) return;
    this.holder = null;
    for (const wake of [...this.waiters]) {
      wake();
      if (this.holder) break;
    }
  }

  /** Ties the activity that has just started to the permit it runs under (the worker's interceptor calls this). */
  bind(ctx: Context): void {
    if (this.holder) held.set(ctx, { gate: this, permit: this.holder });
  }

  /** Whether some activity (or a reserved slot) holds the device now. */
  get busy(): boolean {
    return this.holder !== null;
  }
}

/** Which gate and permit each running activity of a gated worker started under. */
const held = new WeakMap<Context, { gate: DeviceGate; permit: DevicePermit }>();

/**
 * The calling activity is done with the device (its steps ran, what it keeps is copied out): the
 * worker may start the next activity while this one uploads. No-op outside a GPU-pool worker.
 * @example await runShard(…); const params = runner.getParams(); releaseDevice(); await commit(params)
 */
export function releaseDevice(): void {
  const h = held.get(Context.current());
  if (h) h.gate.release(h.permit);
}
