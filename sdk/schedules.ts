// Recurring fine-tunes as Temporal Schedules: Temporal fires the runs (TruthGPT adds no scheduler
// of its own). Each firing starts fineTuneWorkflow with the same spec; the spec's dataset is "the
// newest version under datasetPrefix" and its lineage is the schedule id, so a run whose data the
// last successful run already used ends "no new data", and `continueFromAdapter` continues from
// the lineage's last adapter.

import { ScheduleNotFoundError, type Client, type ScheduleOverlapPolicy } from '@temporalio/client';
import { msToNumber } from '@temporalio/common';
import { z } from 'zod';
import { DatasetSpecSchema } from '../engine/data/dataset';
import type { DatasetRef } from '../artifacts/datasets';
import { formatIssues } from '../spec/issues';
import { parseFineTuneSpec, type FineTuneSpec, type FineTuneSpecInput } from '../spec/lora';
import { TASK_QUEUES } from '../spec/temporal-names';

export const OVERLAP_POLICIES = ['SKIP', 'BUFFER_ONE', 'BUFFER_ALL', 'CANCEL_OTHER', 'TERMINATE_OTHER', 'ALLOW_ALL'] as const;

/** How far back a schedule catches up on firings missed while the server was down, unless told. */
export const DEFAULT_CATCHUP_WINDOW = '10 minutes';

export interface ScheduleFineTuneOptions {
  /** Schedule id; also the lineage of its runs and the prefix of their workflow ids. */
  id: string;
  /** A cron expression (`0 3 * * *`)… */
  cron?: string;
  /** …or an interval (`6 hours`, `5s`, or milliseconds). */
  every?: string | number;
  base: FineTuneSpecInput['base'];
  /** Every dataset committed under this prefix is a version; each run takes the newest. */
  datasetPrefix: string;
  lora?: FineTuneSpecInput['lora'];
  train: FineTuneSpecInput['train'];
  name?: string;
  /** Start each run from the previous successful run's adapter instead of a fresh one. */
  continueFromAdapter?: boolean;
  /** What a firing does while the previous run is still going. Default SKIP. */
  overlap?: ScheduleOverlapPolicy;
  /** Set explicitly (Temporal's own default is a year). Default DEFAULT_CATCHUP_WINDOW. */
  catchupWindow?: string | number;
  paused?: boolean;
  note?: string;
}

/**
 * The keys a schedule (a schedule file, ScheduleFineTuneOptions) may have; what base, lora and
 * train hold is the FineTuneSpec's to check. Strict, so a misspelt option is an error.
 */
/** A Temporal duration: milliseconds, or a string such as `6h`, `30 minutes`, `5s` (checked with Temporal's own parser). */
const Duration = z.union([z.number().int().positive(), z.string()]).superRefine((v, ctx) => {
  if (typeof v !== 'string') return;
  let ms: number;
  try {
    ms = msToNumber(v as Parameters<typeof msToNumber>[0]);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (e.g. 6h, 30 minutes, 5s, or milliseconds)` });
    return;
  }
  if (!(ms > 0)) ctx.addIssue({ code: 'custom', message: `must be a positive duration, got "${v}"` });
});

const ScheduleOptionsSchema = z.strictObject({
  id: z.string().optional(),
  cron: z.string().optional(),
  every: Duration.optional(),
  base: z.unknown().optional(),
  datasetPrefix: z.string().optional(),
  lora: z.unknown().optional(),
  train: z.unknown().optional(),
  name: z.string().optional(),
  continueFromAdapter: z.unknown().optional(),
  overlap: z.enum(OVERLAP_POLICIES).optional(),
  catchupWindow: Duration.optional(),
  paused: z.boolean().optional(),
  note: z.string().optional(),
} satisfies Record<keyof ScheduleFineTuneOptions, z.ZodType>);

/**
 * Throws when `o` has a key no schedule option has, naming it and the nearest option.
 * @example checkScheduleOptions({ id: 'x', datsetPrefix: 'datasets/a-' }) // throws "invalid schedule: datsetPrefix: unknown key (did you mean datasetPrefix?)"
 */
export function checkScheduleOptions(o: unknown): void {
  const r = ScheduleOptionsSchema.safeParse(o);
  if (!r.success) throw new Error(`invalid schedule: ${formatIssues(r.error, '', ScheduleOptionsSchema, o)}`);
}

/** No schedule with that id in the namespace. */
export class UnknownScheduleError extends Error {
  override name = 'UnknownScheduleError';
  constructor(readonly id: string) {
    super(`schedule ${id} does not exist`);
  }
}

export interface ScheduleSummaryRow {
  id: string;
  paused: boolean;
  note: string | null;
  workflowType: string | null;
  nextActionTimes: Date[];
  /** Workflow ids of the most recent firings (oldest first). */
  recentRuns: string[];
}

/** The spec every firing of a fine-tune schedule runs. */
export function scheduledFineTuneSpec(o: ScheduleFineTuneOptions): FineTuneSpec {
  checkScheduleOptions(o);
  return parseFineTuneSpec({
    name: o.name ?? (o.id.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+/, '') || 'finetune'),
    base: o.base,
    dataset: { kind: 'newest', prefix: o.datasetPrefix },
    lora: o.lora,
    train: o.train,
    continueFromAdapter: o.continueFromAdapter ?? false,
    skipIfSeen: true,
    lineage: o.id,
  });
}

/**
 * Creates a Temporal Schedule that fine-tunes `base` on the newest dataset under `datasetPrefix`.
 * @example await scheduleFineTune(client, { id: 'nightly-fiction', cron: '0 3 * * *', base: { kind: 'checkpoint', prefix: 'runs/pre/global/r000010' }, datasetPrefix: 'datasets/fiction-', train: { steps: 500, batchSize: 8, contextLength: 64 } })
 */
export async function scheduleFineTune(client: Client, o: ScheduleFineTuneOptions): Promise<string> {
  if ((o.cron === undefined) === (o.every === undefined)) throw new Error(`scheduleFineTune ${o.id}: give exactly one of cron or every`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(o.id)) throw new Error(`scheduleFineTune: id "${o.id}" must be letters, digits and . _ - (it names the lineage in the store)`);
  const overlap = o.overlap ?? 'SKIP';
  if (!OVERLAP_POLICIES.includes(overlap)) throw new Error(`scheduleFineTune ${o.id}: overlap must be one of ${OVERLAP_POLICIES.join(', ')}, got ${overlap}`);
  const spec = scheduledFineTuneSpec(o);
  await client.schedule.create({
    scheduleId: o.id,
    spec: o.cron !== undefined ? { cronExpressions: [o.cron] } : { intervals: [{ every: o.every as never }] },
    action: { type: 'startWorkflow', workflowType: 'fineTuneWorkflow', taskQueue: TASK_QUEUES.cpu, workflowId: `finetune-${o.id}`, args: [{ spec }] },
    policies: { overlap, catchupWindow: (o.catchupWindow ?? DEFAULT_CATCHUP_WINDOW) as never, pauseOnFailure: false },
    state: { paused: o.paused ?? false, note: o.note },
  });
  return o.id;
}

interface Described {
  state: { paused: boolean; note?: string };
  info: { nextActionTimes: Date[]; recentActions: { action: unknown }[] };
  action?: unknown;
}

function row(id: string, d: Described): ScheduleSummaryRow {
  const action = d.action as { workflowType?: string } | undefined;
  return {
    id,
    paused: d.state.paused,
    note: d.state.note ?? null,
    workflowType: action?.workflowType ?? null,
    nextActionTimes: d.info.nextActionTimes,
    recentRuns: d.info.recentActions.map((a) => (a.action as { workflow?: { workflowId: string } }).workflow?.workflowId ?? '').filter(Boolean),
  };
}

/** Every schedule of the namespace (fine-tunes and any other). */
export async function listSchedules(client: Client): Promise<ScheduleSummaryRow[]> {
  const out: ScheduleSummaryRow[] = [];
  for await (const s of client.schedule.list()) out.push(row(s.scheduleId, s));
  return out.sort((a, b) => (a.id < b.id ? -1 : 1));
}

/** One schedule, or an error naming the id when there is none. */
export async function describeSchedule(client: Client, id: string): Promise<ScheduleSummaryRow> {
  return row(id, await handle(client, id).describe());
}

function handle(client: Client, id: string) {
  const h = client.schedule.getHandle(id);
  const wrap =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      try {
        return await fn(...a);
      } catch (err) {
        if (err instanceof ScheduleNotFoundError) throw new UnknownScheduleError(id);
        throw err;
      }
    };
  return { describe: wrap(() => h.describe()), pause: wrap((n?: string) => h.pause(n)), unpause: wrap((n?: string) => h.unpause(n)), trigger: wrap(() => h.trigger()), delete: wrap(() => h.delete()) };
}

/** Stops future firings until unpaused (a running fine-tune is not affected). */
export async function pauseSchedule(client: Client, id: string, note = 'paused by truthgpt'): Promise<void> {
  await handle(client, id).pause(note);
}

export async function unpauseSchedule(client: Client, id: string, note = 'unpaused by truthgpt'): Promise<void> {
  await handle(client, id).unpause(note);
}

/** Fires the schedule now (under its overlap policy: with SKIP, not while a run is going). */
export async function triggerSchedule(client: Client, id: string): Promise<void> {
  await handle(client, id).trigger();
}

/** Deletes the schedule; runs it started, and their artifacts, stay. */
export async function deleteSchedule(client: Client, id: string): Promise<void> {
  await handle(client, id).delete();
}

/**
 * Prepares a dataset and commits it as a new version (`datasets/<name>-<spec hash>`), e.g. for a
 * schedule whose datasetPrefix is `datasets/<name>-`. Returns its ref.
 * @example await publishDataset(client, { name: 'fiction', corpus: { kind: 'brown', categories: ['mystery'] } })
 */
export async function publishDataset(client: Client, dataset: unknown, opts: { workflowId?: string } = {}): Promise<DatasetRef> {
  const schema = DatasetSpecSchema.omit({ shards: true });
  const parsed = schema.safeParse(dataset);
  if (!parsed.success) throw new Error(`invalid dataset spec: ${formatIssues(parsed.error, 'dataset', schema, dataset)}`);
  const workflowId = opts.workflowId ?? `dataset-${parsed.data.name}-${Date.now()}`;
  return client.workflow.execute('prepareDatasetWorkflow', { taskQueue: TASK_QUEUES.cpu, workflowId, args: [{ dataset: parsed.data }] }) as Promise<DatasetRef>;
}
