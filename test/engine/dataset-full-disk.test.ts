// A full disk while a dataset is tokenized is an error of that dataset, not the end of the worker
// process: the fault campaign (test/faults/campaign) found the CPU worker dying of an unhandled
// 'error' event (ENOSPC) on a shard's write stream when its scratch tmpfs was full. Here the shard
// file is a symlink to /dev/full, whose every write fails with ENOSPC, as on a full disk.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { prepareDataset } from '../../engine/data/dataset';

const linux = fs.existsSync('/dev/full');
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-full-disk-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

(linux ? test : test.skip)('a shard write failing with ENOSPC rejects prepareDataset with that error; the process lives on and a retry on a free disk succeeds', async () => {
  const spec = { name: 'full', corpus: { kind: 'brown' as const, categories: ['humor'] }, valFraction: 0.2, shards: 2 };
  fs.symlinkSync('/dev/full', path.join(dir, 'train-1.bin'));
  const uncaught: Error[] = [];
  const onUncaught = (err: Error) => uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    await expect(prepareDataset(spec, dir)).rejects.toMatchObject({ code: 'ENOSPC' });
    // Give a stray 'error' event time to surface.
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    process.off('uncaughtException', onUncaught);
  }
  expect(uncaught).toEqual([]);

  // Space again (the activity's retry): the same spec prepares, with both shards written.
  const again = path.join(dir, 'again');
  const m = await prepareDataset(spec, again);
  expect(m.splits.train.map((s) => s.tokens > 0)).toEqual([true, true]);
  expect(fs.statSync(path.join(again, 'train-1.bin')).size).toBe(m.splits.train[1].bytes);
});
