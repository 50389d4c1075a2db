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
