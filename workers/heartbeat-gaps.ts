// A measuring aid for heartbeat timeouts (issue 15): with TRUTHGPT_HEARTBEAT_GAPS=<file>, every
// activity attempt appends one JSON line to <file> with its longest silence: the most time between
// two heartbeats, counting the start and the end of the attempt as beats. A heartbeat timeout must
// exceed the longest silence of its activity, or a live attempt is timed out; the workflows' timeouts
// are a small multiple of the silences measured this way (README, "Heartbeat timeouts"). Off by default.

import fs from 'node:fs';
import { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptors } from '@temporalio/worker';

export interface HeartbeatGapRecord {
  activityType: string;
  workflowId: string;
  attempt: number;
  /** Wall time of the attempt. */
  totalMs: number;
  beats: number;
  maxGapMs: number;
  /** The details of the heartbeat that opened the longest gap ('start' when it was the first). */
  after: string;
  /** ...and of the one that closed it ('end' when nothing beat before the attempt ended). */
  before: string;
}

const describe = (details: unknown) => {
  const text = typeof details === 'string' ? details : JSON.stringify(details) ?? String(details);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
};

/**
 * An interceptor factory appending each attempt's HeartbeatGapRecord to `file`.
 * @example Worker.create({ …, interceptors: { activity: [heartbeatGapRecorder(path.join(stateDir, 'gaps.jsonl'))] } })
 */
export function heartbeatGapRecorder(file: string): (ctx: Context) => ActivityInterceptors {
  return (ctx: Context) => {
    const inbound: ActivityInboundCallsInterceptor = {
      async execute(input, next) {
        const start = Date.now();
        let last = start;
        let lastDetails = 'start';
        let beats = 0;
        let max = { gap: -1, after: 'start', before: 'end' };
        const note = (now: number, details: string) => {
          if (now - last > max.gap) max = { gap: now - last, after: lastDetails, before: details };
          last = now;
          lastDetails = details;
        };
        const heartbeat = ctx.heartbeat;
        // Context.heartbeat is a readonly arrow property; this wrapper replaces it on this attempt's
        // context only, which is the object beat() and the SDK's heartbeat() both call.
        (ctx as { heartbeat: (details?: unknown) => void }).heartbeat = (details?: unknown) => {
          beats += 1;
          note(Date.now(), describe(details));
          heartbeat(details);
        };
        try {
          return await next(input);
        } finally {
          const end = Date.now();
          note(end, 'end');
          const { info } = ctx;
          const record: HeartbeatGapRecord = {
            activityType: info.activityType,
            workflowId: info.workflowExecution?.workflowId ?? '',
            attempt: info.attempt,
            totalMs: end - start,
            beats,
            maxGapMs: max.gap,
            after: max.after,
            before: max.before,
          };
          fs.appendFileSync(file, `${JSON.stringify(record)}\n`);
        }
      },
    };
    return { inbound };
  };
}
