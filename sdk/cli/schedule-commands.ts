// `truthgpt schedule create|list|pause|unpause|trigger|delete`: recurring fine-tunes as Temporal
// Schedules (sdk/schedules.ts). `create` reads a YAML/JSON file with scheduleFineTune's options;
// flags override its id, timing and policies. The spec is validated here, before anything is
// created, with errors naming the file and the field.

import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import fs from 'node:fs';
import YAML from 'yaml';
import type { Config } from '../../infra/config';
import { TruthGPT } from '../index';
import { checkScheduleOptions, deleteSchedule, listSchedules, OVERLAP_POLICIES, pauseSchedule, scheduledFineTuneSpec, scheduleFineTune, triggerSchedule, UnknownScheduleError, unpauseSchedule, type ScheduleFineTuneOptions } from '../schedules';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';
import { UsageError } from './usage-error';

interface CreateFlags extends StackFlags {
  id?: string;
  every?: string;
  cron?: string;
  overlap?: string;
  catchupWindow?: string;
  paused?: boolean;
  json?: boolean;
}

/** Reads scheduleFineTune options from a file, applies the flags and validates the resulting spec. */
export function readScheduleFile(file: string, flags: CreateFlags): ScheduleFineTuneOptions {
  let raw: Record<string, unknown>;
  try {
    raw = YAML.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}`);
  }
  if (!raw || typeof raw !== 'object') throw new UsageError(`${file}: expected a mapping with base, datasetPrefix, train (and id, every or cron)`);
  try {
    checkScheduleOptions(raw);
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}`);
  }
  const o = { ...raw } as unknown as ScheduleFineTuneOptions;
  const twice = `${file}: give exactly one of every or cron (or --every / --cron)`;
  if (flags.every && flags.cron) throw new UsageError(twice);
  if (flags.id) o.id = flags.id;
  if (flags.every) [o.every, o.cron] = [flags.every, undefined];
  if (flags.cron) [o.cron, o.every] = [flags.cron, undefined];
  if (flags.overlap) o.overlap = flags.overlap as ScheduleFineTuneOptions['overlap'];
  if (flags.catchupWindow) o.catchupWindow = flags.catchupWindow;
  if (flags.paused) o.paused = true;
  if (typeof o.id !== 'string' || !o.id) throw new UsageError(`${file}: id: required (or --id)`);
  if ((o.every === undefined) === (o.cron === undefined)) throw new UsageError(twice);
  if (o.overlap !== undefined && !OVERLAP_POLICIES.includes(o.overlap)) throw new UsageError(`${file}: overlap: must be one of ${OVERLAP_POLICIES.join(', ')}, got ${o.overlap}`);
  if (typeof o.datasetPrefix !== 'string') throw new UsageError(`${file}: datasetPrefix: required (e.g. datasets/fiction-)`);
  try {
    scheduledFineTuneSpec(o);
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}`);
  }
  return o;
}

async function withClient<T>(config: Config, fn: (c: Client) => Promise<T>): Promise<T> {
  // TruthGPT.connect: an unreachable server is the one-line "Temporal is not reachable at …" error.
  const tg = await TruthGPT.connect({ config });
  try {
    return await fn(tg.client);
  } catch (err) {
    // An unknown schedule id is the user's to fix, not a crash.
    if (err instanceof UnknownScheduleError) throw new UsageError(err.message);
    throw err;
  } finally {
    await tg.close();
  }
}

const fmtTime = (d: Date | undefined) => (d ? d.toISOString().replace(/\.\d+Z$/, 'Z') : '-');

export function registerScheduleCommands(program: Command): void {
  const schedule = program.command('schedule').description('recurring fine-tunes on Temporal Schedules');

  withStackFlags(schedule.command('create'))
    .description('create a schedule that fine-tunes a base on the newest dataset under a prefix')
    .argument('<file>', 'YAML/JSON: id, every | cron, base, datasetPrefix, lora, train, continueFromAdapter, overlap, catchupWindow')
    .option('--id <id>', 'schedule id (also the lineage of its runs)')
    .option('--every <interval>', 'fire every interval (e.g. 6h, 30m, 5s)')
    .option('--cron <expr>', 'fire on a cron expression (e.g. "0 3 * * *")')
    .option('--overlap <policy>', `while a run is going: ${OVERLAP_POLICIES.join(' | ')} (default SKIP)`)
    .option('--catchup-window <duration>', 'how far back to catch up on firings missed while the server was down (default 10 minutes)')
    .option('--paused', 'create it paused')
    .option('--json', 'print the created schedule as JSON')
    .action(async (file: string, flags: CreateFlags) => {
      const o = readScheduleFile(file, flags);
      const config = configFromFlags(flags);
      await withClient(config, async (client) => {
        await scheduleFineTune(client, o);
        if (flags.json) console.log(JSON.stringify({ id: o.id, every: o.every ?? null, cron: o.cron ?? null, overlap: o.overlap ?? 'SKIP', paused: o.paused ?? false }));
        else console.log(`created schedule ${o.id}: fineTuneWorkflow ${o.every !== undefined ? `every ${o.every}` : `cron "${o.cron}"`} on the newest dataset under ${o.datasetPrefix}`);
      });
    });

  withStackFlags(schedule.command('list'))
    .description('list schedules: paused, next firing, recent runs')
    .option('--json', 'print JSON')
    .action(async (flags: StackFlags & { json?: boolean }) => {
      const rows = await withClient(configFromFlags(flags), listSchedules);
      if (flags.json) {
        console.log(JSON.stringify(rows, null, 2));
        return;
      }
      if (!rows.length) {
        console.log('no schedules');
        return;
      }
      for (const r of rows) {
        console.log(`${r.id}  ${r.paused ? 'paused' : 'active'}  next ${fmtTime(r.nextActionTimes[0])}  ${r.workflowType ?? '-'}  runs ${r.recentRuns.length}${r.note ? `  note: ${r.note}` : ''}`);
      }
    });

  withStackFlags(schedule.command('pause'))
    .description('stop future firings (a running fine-tune goes on)')
    .argument('<id>')
    .option('--note <text>', 'why (shown by list and in the Web UI)')
    .action(async (id: string, flags: StackFlags & { note?: string }) => {
      await withClient(configFromFlags(flags), (c) => pauseSchedule(c, id, flags.note));
      console.log(`paused ${id}`);
    });

  withStackFlags(schedule.command('unpause'))
    .description('resume firings')
    .argument('<id>')
    .action(async (id: string, flags: StackFlags) => {
      await withClient(configFromFlags(flags), (c) => unpauseSchedule(c, id));
      console.log(`unpaused ${id}`);
    });

  withStackFlags(schedule.command('trigger'))
    .description('fire now (under the overlap policy)')
    .argument('<id>')
    .action(async (id: string, flags: StackFlags) => {
      await withClient(configFromFlags(flags), (c) => triggerSchedule(c, id));
      console.log(`triggered ${id}`);
    });

  withStackFlags(schedule.command('delete'))
    .description('delete the schedule (its runs and artifacts stay)')
    .argument('<id>')
    .action(async (id: string, flags: StackFlags) => {
      await withClient(configFromFlags(flags), (c) => deleteSchedule(c, id));
      console.log(`deleted ${id}`);
    });
}
