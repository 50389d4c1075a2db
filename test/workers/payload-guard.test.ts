// The payload guard (issue 15): what a workflow sends (activity, child and continue-as-new inputs)
// and what an activity returns is measured, and above Temporal's 256 KiB it fails by name with the
// non-retryable PayloadTooLarge; below, the call goes through unchanged. The interceptors are
// called here as the worker calls them, with `next` standing for the rest of the chain.

import type { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInput, ContinueAsNewInput, StartChildWorkflowExecutionInput } from '@temporalio/workflow';
import { MAX_PAYLOAD_BYTES } from '../../spec/payloads';
import { activityPayloadGuard } from '../../workers/payload-guard';
import { PayloadGuardOutbound } from '../../workflows/payload-guard';

const big = { text: 'x'.repeat(300 * 1024) }; // 300 KiB of text (and 11 bytes of JSON)
const limit = MAX_PAYLOAD_BYTES / 1024; // 256
const small = { prefix: 'runs/a/global/r000001' };

async function refusal(p: Promise<unknown>): Promise<ApplicationFailure> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(ApplicationFailure);
  return err as ApplicationFailure;
}

describe('activity results', () => {
  const execute = activityPayloadGuard({ info: { activityType: 'evaluateModels' } } as unknown as Context).inbound!.execute!;
  const input = { args: [], headers: {} };

  test('a result above 256 KiB fails with PayloadTooLarge, naming the activity and the size', async () => {
    const e = await refusal(execute(input, async () => big));
    expect([e.type, e.nonRetryable]).toEqual(['PayloadTooLarge', true]);
    expect(e.message).toBe(`the result of activity evaluateModels is 300.0 KiB as JSON, above the ${limit}.0 KiB Temporal keeps comfortably in a workflow's history; large data belongs in S3, passed by key`);
  });

  test('a result that fits is returned as it is', async () => {
    await expect(execute(input, async () => small)).resolves.toBe(small);
  });
});

describe('what workflows send', () => {
  const guard = new PayloadGuardOutbound();
  const next = jest.fn(async () => 'sent');
  beforeEach(() => next.mockClear());

  test('activity inputs', async () => {
    const input = (args: unknown[]) => ({ activityType: 'trainShard', args, options: {}, headers: {}, seq: 1 }) as unknown as ActivityInput;
    const e = await refusal(guard.scheduleActivity(input([big]), next));
    expect([e.type, e.message.startsWith('the input of activity trainShard is 300.0 KiB')]).toEqual(['PayloadTooLarge', true]);
    expect(next).not.toHaveBeenCalled();
    await expect(guard.scheduleActivity(input([small]), next)).resolves.toBe('sent');
  });

  test('child workflow and continue-as-new inputs', async () => {
    const child = (args: unknown[]) => ({ workflowType: 'trainingWorkflow', options: { workflowId: 'p-train', args }, headers: {}, seq: 2 }) as unknown as StartChildWorkflowExecutionInput;
    expect((await refusal(guard.startChildWorkflowExecution(child([big]), next as never))).message).toMatch(/^the input of child workflow p-train is 300\.0 KiB/);
    await expect(guard.startChildWorkflowExecution(child([small]), next as never)).resolves.toBe('sent');
    const can = (args: unknown[]) => ({ args, headers: {}, options: {} }) as unknown as ContinueAsNewInput;
    expect((await refusal(guard.continueAsNew(can([big]), next as never))).message).toMatch(/^the continue-as-new input is 300\.0 KiB/);
    expect(next).toHaveBeenCalledTimes(1);
  });
});
