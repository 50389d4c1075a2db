// The workflow side of the payload guard (issue 15): every activity input, child-workflow input and
// continue-as-new input a workflow schedules is measured before it is sent, and one above
// Temporal's 256 KiB (spec/payloads.ts) fails the workflow with PayloadTooLarge, naming the call and
// its size, instead of a history that grows past what the server accepts. Registered on the cpu
// worker (workers/worker.ts, interceptors.workflowModules); workers/payload-guard.ts checks what
// activities return.

import type { ActivityInput, ContinueAsNewInput, Next, StartChildWorkflowExecutionInput, WorkflowInterceptorsFactory, WorkflowOutboundCallsInterceptor } from '@temporalio/workflow';
import { failure } from '../spec/errors';
import { payloadSizeProblem } from '../spec/payloads';

function check(what: string, value: unknown): void {
  const problem = payloadSizeProblem(what, value);
  if (problem) throw failure('PayloadTooLarge', problem);
}

/** Measures each outgoing payload, then passes the call on unchanged. */
export class PayloadGuardOutbound implements WorkflowOutboundCallsInterceptor {
  async scheduleActivity(input: ActivityInput, next: Next<WorkflowOutboundCallsInterceptor, 'scheduleActivity'>): Promise<unknown> {
    check(`the input of activity ${input.activityType}`, input.args);
    return next(input);
  }

  async startChildWorkflowExecution(input: StartChildWorkflowExecutionInput, next: Next<WorkflowOutboundCallsInterceptor, 'startChildWorkflowExecution'>): Promise<[Promise<string>, Promise<unknown>]> {
    check(`the input of child workflow ${input.options.workflowId ?? input.workflowType}`, input.options.args);
    return next(input);
  }

  async continueAsNew(input: ContinueAsNewInput, next: Next<WorkflowOutboundCallsInterceptor, 'continueAsNew'>): Promise<never> {
    check('the continue-as-new input', input.args);
    return next(input);
  }
}

export const interceptors: WorkflowInterceptorsFactory = () => ({ outbound: [new PayloadGuardOutbound()] });
