// The GPU pool's activity slots (activities/device.ts): the worker polls for a task only while no
// running activity holds the device, instead of a fixed one slot. An activity that released the
// device early (a shard uploading its result) keeps running beside the next one's steps; for every
// other activity this is the fixed single slot it had before. A worker that polls only when its
// device is idle never takes a second shard that another idle worker could run.

import type { Context } from '@temporalio/activity';
import type { ActivityInterceptors, ActivitySlotInfo, CustomSlotSupplier, SlotPermit, WorkerTuner } from '@temporalio/worker';
import type { DeviceGate, DevicePermit } from '../activities/device';

/** Activity slots from `gate`; the other kinds keep the SDK's defaults (a GPU worker runs no workflows). */
export function deviceTuner(gate: DeviceGate): WorkerTuner {
  const activities: CustomSlotSupplier<ActivitySlotInfo> = {
    type: 'custom',
    reserveSlot: (_ctx, signal) => gate.acquire(signal),
    tryReserveSlot: () => gate.tryAcquire(),
    markSlotUsed: () => undefined,
    releaseSlot: (ctx) => gate.release(ctx.permit as DevicePermit & SlotPermit),
  };
  return {
    activityTaskSlotSupplier: activities,
    workflowTaskSlotSupplier: { type: 'fixed-size', numSlots: 40 },
    localActivityTaskSlotSupplier: { type: 'fixed-size', numSlots: 100 },
    nexusTaskSlotSupplier: { type: 'fixed-size', numSlots: 100 },
  };
}

/** Ties each activity to the permit it started under, so its `releaseDevice()` frees that one. */
export function deviceBinder(gate: DeviceGate): (ctx: Context) => ActivityInterceptors {
  return (ctx) => ({
    inbound: {
      execute(input, next) {
        gate.bind(ctx);
        return next(input);
      },
    },
  });
}
