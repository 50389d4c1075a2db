// The GPU pool's device gate (activities/device.ts): the worker's slot supplier gets a slot only
// while no activity holds the device; an activity that releases it early lets the next one start
// while it finishes; a release is tied to the activity's own permit, so a second one frees nothing.

import { DeviceGate } from '../../activities/device';

test('one holder at a time; release wakes one waiter; a stale release frees nothing', async () => {
  const gate = new DeviceGate();
  const a = await gate.acquire();
  expect(gate.tryAcquire()).toBeNull();
  let got: unknown = null;
  const b = gate.acquire().then((p) => (got = p));
  const c = gate.acquire();
  await new Promise((r) => setImmediate(r));
  expect(got).toBeNull();
  gate.release(a);
  const pb = await b;
  expect(pb).not.toEqual(a);
  expect(gate.busy).toBe(true);
  // The first activity ends later (its slot is released): that must not free b's hold.
  gate.release(a);
  expect(gate.tryAcquire()).toBeNull();
  gate.release(pb);
  await expect(c).resolves.toBeTruthy();
});

test('an aborted wait rejects with the abort reason and takes no slot', async () => {
  const gate = new DeviceGate();
  const a = gate.tryAcquire()!;
  const ac = new AbortController();
  const waiting = gate.acquire(ac.signal);
  ac.abort(new Error('poller stopped'));
  await expect(waiting).rejects.toThrow('poller stopped');
  gate.release(a);
  expect(gate.busy).toBe(false);
  expect(gate.tryAcquire()).not.toBeNull();
});
