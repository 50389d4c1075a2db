// The worker's side of "worker lost" (issue 15): an activity interceptor that keeps the list of
// the attempts this process is running in TRUTHGPT_INFLIGHT_FILE (infra/liveness.ts), rewritten
// when an attempt starts and when it ends. When the process dies, the supervisor reads the list and
// fails those attempts at once (spec/errors.ts, WorkerLost), so Temporal retries them without
// waiting for their heartbeat timeout. Without the variable (no supervisor) nothing is written.

import { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptors } from '@temporalio/worker';
import { writeInflight, type InflightActivity } from '../infra/liveness';

/**
 * An interceptor factory recording every attempt of this worker in `file`.
 * @example Worker.create({ …, interceptors: { activity: [inflightRecorder(process.env.TRUTHGPT_INFLIGHT_FILE)] } })
 */
export function inflightRecorder(file: string): (ctx: Context) => ActivityInterceptors {
  const running = new Map<string, InflightActivity>();
  const flush = () => writeInflight(file, { pid: process.pid, activities: [...running.values()] });
  flush();
  return (ctx: Context) => {
    const inbound: ActivityInboundCallsInterceptor = {
      async execute(input, next) {
        const { info } = ctx;
        const token = info.base64TaskToken;
        running.set(token, {
          workflowId: info.workflowExecution?.workflowId ?? '',
          runId: info.workflowExecution?.runId ?? '',
          activityId: info.activityId,
          activityType: info.activityType,
          attempt: info.attempt,
          taskToken: token,
          startedAt: new Date().toISOString(),
        });
        flush();
        try {
          return await next(input);
        } finally {
          running.delete(token);
          flush();
        }
      },
    };
    return { inbound };
  };
}
