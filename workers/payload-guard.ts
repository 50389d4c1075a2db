// The activity side of the payload guard (issue 15): an activity's result above Temporal's 256 KiB
// (spec/payloads.ts) fails with PayloadTooLarge (non-retryable: the same work returns the same
// result), naming the activity and the size, instead of a completion the server refuses and the
// activity then retried until its timeouts. workflows/payload-guard.ts checks what workflows send.

import type { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptors } from '@temporalio/worker';
import { failure } from '../spec/errors';
import { payloadSizeProblem } from '../spec/payloads';

/**
 * The interceptor factory a worker registers (`interceptors.activity`).
 * @example Worker.create({ …, interceptors: { activity: [activityPayloadGuard] } })
 */
export function activityPayloadGuard(ctx: Context): ActivityInterceptors {
  const inbound: ActivityInboundCallsInterceptor = {
    async execute(input, next) {
      const result = await next(input);
      const problem = payloadSizeProblem(`the result of activity ${ctx.info.activityType}`, result);
      if (problem) throw failure('PayloadTooLarge', problem);
      return result;
    },
  };
  return { inbound };
}
