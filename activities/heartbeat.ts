// One heartbeat between units of work (a step, a batch, a document, a model): tell Temporal the
// activity is alive, and stop if its run was cancelled. Temporal delivers a cancellation only in the
// answer to a heartbeat, so every long activity heartbeats here and its proxy has a heartbeat
// timeout; the worker throttles heartbeats to HEARTBEAT_THROTTLE (workers/worker.ts), so a cancel
// stops the activity within a few seconds plus one unit of work. The CancelledFailure thrown here
// ends the attempt as cancelled (ActivityTaskCanceled in the history); committed work stays.

import { CancelledFailure, Context } from '@temporalio/activity';

/**
 * Heartbeats `details`, then throws if the activity was cancelled (by the workflow, a timeout, or
 * the worker shutting down).
 * @example for (const b of batches) { await run(b); beat(`batch ${i}`); }
 */
export function beat(details?: unknown): void {
  const ctx = Context.current();
  ctx.heartbeat(details);
  stopIfCancelled();
}

/** Throws the cancellation's reason when the current activity has been cancelled. */
export function stopIfCancelled(): void {
  const signal = Context.current().cancellationSignal;
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new CancelledFailure(`${Context.current().info.activityType}: cancelled`);
}

/**
 * Runs `fn` (reads, writes, commits: work that awaits I/O and has no units to beat between) while
 * heartbeating `details` every second, so its heartbeat timeout measures the worker, not the size
 * of the model; stops afterwards if the activity was cancelled meanwhile.
 * @example return whileBeating('createModel r0', () => commitCheckpoint(store, prefix, ckpt))
 */
export async function whileBeating<T>(details: unknown, fn: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat(details);
  const timer = setInterval(() => ctx.heartbeat(details), 1000);
  try {
    const result = await fn();
    stopIfCancelled();
    return result;
  } finally {
    clearInterval(timer);
  }
}

/**
 * Lets the event loop turn (a heartbeat goes out, a cancel comes in), then beats `details`: the call
 * between the pieces of long synchronous work, so the silence a heartbeat timeout must cover is one
 * piece, not the whole stretch.
 * @example for (const s of params) { init(s); await yieldThenBeat(`init ${s.name}`); }
 */
export async function yieldThenBeat(details?: unknown): Promise<void> {
  await new Promise((r) => setImmediate(r));
  beat(details);
}
