// The fault campaign (`npm run faults -- --n N [--seed S]`): N tiny pipelines on the real local
// stack (Temporal dev server on SQLite, S3 server, supervised worker processes), one fault each at
// a seeded moment. Each run must end completed with its training checkpoint bit-identical
// (sha256 of every file) to the uninterrupted reference run of its spec, or failed with a named
// cause from the error vocabulary (spec/errors.ts); and every artifact committed along the way
// must still be there, byte for byte, at the end (ledger.ts).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, s3Settings } from '../../../infra/config';
import { freePort } from '../../../infra/ports';
import { stackDown } from '../../../infra/stack';
import { ArtifactStore } from '../../../infra/store';
import { WorkflowFailedError } from '@temporalio/client';
import { RunStateError, TruthGPT, type PipelineResult, type PipelineSpecInput } from '../../../sdk';
import { ERROR_TYPES, type ErrorType } from '../../../spec/errors';
import {
  bringUp,
  corruptObject,
  FAULT_KINDS,
  killSupervisor,
  killWorker,
  repair,
  rng,
  s3Outage,
  ScratchDisk,
  sleep,
  temporalRestart,
  type Damage,
  type FaultKind,
  type StackHandle,
} from './faults';
import { Ledger, type LedgerProblem } from './ledger';
import { VARIANTS, withDatasetName, type Variant } from './specs';

export type Verdict = 'identical' | 'named' | 'lost' | 'mismatched' | 'unnamed' | 'hung';

export interface RunRecord {
  i: number;
  kind: FaultKind;
  variant: string;
  runId: string;
  /** The run that carried on after a cancel (cancel-retry). */
  retryId: string | null;
  /** ms after the start when the fault was injected, and whether the run was still running then. */
  injectAtMs: number | null;
  hit: boolean;
  fault: string;
  status: string;
  /** Vocabulary types found along the failure's cause chain, outermost first. */
  types: ErrorType[];
  message: string | null;
  checkpoint: Record<string, string> | null;
  verdict: Verdict;
  why: string;
  wallMs: number;
  /** wallMs minus the reference run's: what the fault cost (the table averages it over runs that completed identical). */
  recoveryMs: number | null;
}

export interface CampaignOptions {
  n: number;
  seed: number;
  /** Per-run deadline (a cancel-retry gets it twice); a run past it is terminated and counted as hung. */
  runDeadlineMs?: number;
  log?: (line: string) => void;
  /** Which kinds to draw from (default all); the i-th run gets kinds[(shuffled)]. */
  kinds?: readonly FaultKind[];
  /** Keep the stack's state folder (logs, data) after the campaign. */
  keepState?: boolean;
  /** No new run starts after this many ms from the campaign's start; the ledger check still runs. */
  budgetMs?: number;
  /** Called after each run, e.g. to save progress. */
  onRun?: (r: RunRecord) => void;
}

export interface CampaignReport {
  n: number;
  seed: number;
  startedAt: string;
  wallMs: number;
  machine: { cpu: string; cores: number; loadavg: number[]; node: string; platform: string };
  references: { variant: string; runId: string; status: string; types: ErrorType[]; checkpoint: Record<string, string> | null; wallMs: number }[];
  skipped: { kind: FaultKind; why: string }[];
  runs: RunRecord[];
  ledger: { manifests: number; files: number; bytes: number; problems: LedgerProblem[] };
  table: KindRow[];
  totals: { runs: number; identical: number; named: number; lost: number; mismatched: number; unnamed: number; hung: number };
  line: string;
  stateDir: string | null;
  /** Set when --budget stopped the campaign before N runs (then `runs` is shorter than `n`). */
  budget?: string | null;
  ok: boolean;
}

export interface KindRow {
  kind: FaultKind;
  runs: number;
  hit: number;
  identical: number;
  named: number;
  lost: number;
  mismatched: number;
  unnamed: number;
  hung: number;
  meanRecoveryMs: number | null;
}

type Outcome =
  | { status: 'COMPLETED'; result: PipelineResult; wallMs: number }
  | { status: string; types: ErrorType[]; message: string; wallMs: number }
  | { status: 'HUNG'; wallMs: number };

/** Every vocabulary type along an error's cause chain, outermost first. */
export function typesOf(err: unknown): { types: ErrorType[]; message: string } {
  const types: ErrorType[] = [];
  const messages: string[] = [];
  for (let e = err as { type?: unknown; cause?: unknown; message?: string } | undefined, d = 0; e && d < 10; e = e.cause as typeof e, d++) {
    if (typeof e.type === 'string' && e.type in ERROR_TYPES && !types.includes(e.type as ErrorType)) types.push(e.type as ErrorType);
    if (e.message) messages.push(e.message);
  }
  return { types, message: messages.join(' <- ') };
}

const shasOf = (r: PipelineResult) => Object.fromEntries(Object.entries(r.training.checkpoint.files).map(([n, f]) => [n, f.sha256]));

/** Temporal through the SDK, reconnecting after the server went away and came back. */
class Client {
  private tg: TruthGPT | null = null;
  constructor(private readonly h: StackHandle) {}
  async get(): Promise<TruthGPT> {
    this.tg ??= await TruthGPT.connect({ config: this.h.config });
    return this.tg;
  }
  drop(): void {
    const tg = this.tg;
    this.tg = null;
    void tg?.close().catch(() => {});
  }
  /** Runs `fn` until it succeeds or `deadline` passes, reconnecting between failures. */
  async retrying<T>(what: string, deadline: number, fn: (tg: TruthGPT) => Promise<T>): Promise<T> {
    for (let failures = 0; ; failures++) {
      try {
        return await fn(await this.get());
      } catch (err) {
        // Answers, not outages: a run in the wrong state, a run that failed.
        if (err instanceof RunStateError || err instanceof WorkflowFailedError) throw err;
        if (Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message.split('\n')[0]}`);
        if (failures % 3 === 2) this.drop();
        await sleep(1000);
      }
    }
  }
}

/** Waits for a run to close (through server restarts); HUNG when the deadline passes first. */
async function outcomeOf(c: Client, id: string, startedAt: number, deadline: number): Promise<Outcome> {
  for (;;) {
    if (Date.now() > deadline) return { status: 'HUNG', wallMs: Date.now() - startedAt };
    let status: string;
    try {
      status = (await (await c.get()).describe(id)).status.name;
    } catch {
      c.drop();
      await sleep(1000);
      continue;
    }
    if (status === 'RUNNING') {
      await sleep(500);
      continue;
    }
    const wallMs = Date.now() - startedAt;
    try {
      const result = await c.retrying(`result of ${id}`, deadline, (tg) => tg.client.workflow.getHandle(id).result() as Promise<PipelineResult>);
      return { status: 'COMPLETED', result, wallMs };
    } catch (err) {
      return { status, ...typesOf(err), wallMs };
    }
  }
}

async function terminate(c: Client, id: string): Promise<void> {
  await c.retrying(`terminate ${id}`, Date.now() + 30_000, (tg) => tg.client.workflow.getHandle(id).terminate('fault campaign: run deadline passed')).catch(() => {});
}

/** Draws the kind of every run: each cycle through the kinds in a seeded order, so a small N still covers them all. */
function drawKinds(n: number, kinds: readonly FaultKind[], draw: () => number): FaultKind[] {
  const out: FaultKind[] = [];
  while (out.length < n) {
    const cycle = [...kinds];
    for (let i = cycle.length - 1; i > 0; i--) {
      const j = Math.floor(draw() * (i + 1));
      [cycle[i], cycle[j]] = [cycle[j], cycle[i]];
    }
    out.push(...cycle);
  }
  return out.slice(0, n);
}

function exec(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export async function runCampaign(opts: CampaignOptions): Promise<CampaignReport> {
  const log = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  // Longer than the longest heartbeat timeout (post-training's CPU activities: 10 min): a worker
  // killed mid-activity is retried only after it, so a shorter deadline calls a slow recovery a hang.
  const runDeadlineMs = opts.runDeadlineMs ?? 720_000;
  const t0 = Date.now();
  const startedAt = new Date().toISOString();
  const draw = rng(opts.seed);
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-campaign-'));
  const scratchDir = path.join(stateDir, 'scratch');
  const skipped: CampaignReport['skipped'] = [];
  let kinds = [...(opts.kinds ?? FAULT_KINDS)];
  // 16 MiB: room for a tiny dataset being tokenized once the filler is gone.
  const mountError = kinds.includes('disk-full') ? ScratchDisk.mount(scratchDir, 16, exec) : null;
  const mounted = kinds.includes('disk-full') && mountError === null;
  if (mountError) {
    skipped.push({ kind: 'disk-full', why: mountError });
    kinds = kinds.filter((k) => k !== 'disk-full');
    log(`disk-full skipped: ${mountError}`);
  }
  fs.mkdirSync(scratchDir, { recursive: true });
  const scratch = new ScratchDisk(scratchDir);
  const envVars: Record<string, string> = {
    TRUTHGPT_STATE_DIR: stateDir,
    TRUTHGPT_TEMPORAL_PORT: String(await freePort()),
    TRUTHGPT_UI_PORT: String(await freePort()),
    TRUTHGPT_S3_PORT: String(await freePort()),
    TRUTHGPT_SCRATCH_DIR: scratchDir,
    TRUTHGPT_S3_BUCKET: 'truthgpt',
    ...(process.env.TRUTHGPT_S3_SERVER ? { TRUTHGPT_S3_SERVER: process.env.TRUTHGPT_S3_SERVER } : {}),
  };
  const config = loadConfig(envVars);
  const store = new ArtifactStore(s3Settings(config));
  const h: StackHandle = { config, env: { ...process.env, ...envVars }, store, log };
  const c = new Client(h);
  const ledger = new Ledger();
  const references: CampaignReport['references'] = [];
  const runs: RunRecord[] = [];
  let failedToFinish: Error | null = null;
  let budgetNote: string | null = null;

  // Interrupted (Ctrl-C, a CI timeout): take the stack down and the tmpfs away before leaving.
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping the campaign's stack (state ${stateDir})`);
    void stackDown(config)
      .catch(() => [])
      .finally(() => {
        if (mounted) ScratchDisk.unmount(scratchDir, exec);
        process.exit(130);
      });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    log(`fault campaign: n=${opts.n} seed=${opts.seed} state ${stateDir}`);
    await bringUp(h);

    // References: every variant once, no fault.
    const ref = new Map<string, { shas: Record<string, string> | null; wallMs: number }>();
    for (const v of VARIANTS) {
      const id = `faults-s${opts.seed}-ref-${v.id}`;
      const start = Date.now();
      await c.retrying(`start ${id}`, start + 60_000, (tg) => tg.startPipeline(v.spec, { workflowId: id }));
      const o = await outcomeOf(c, id, start, start + runDeadlineMs);
      const shas = o.status === 'COMPLETED' ? shasOf((o as Extract<Outcome, { result: PipelineResult }>).result) : null;
      const types = 'types' in o ? o.types : [];
      references.push({ variant: v.id, runId: id, status: o.status, types, checkpoint: shas, wallMs: o.wallMs });
      log(`reference ${v.id}: ${o.status}${types.length ? ` ${types.join('/')}` : ''} in ${(o.wallMs / 1000).toFixed(1)} s`);
      const expected = v.expectFailure ? o.status !== 'COMPLETED' && types.includes(v.expectFailure) : o.status === 'COMPLETED';
      if (!expected) throw new Error(`the reference run of ${v.id} ended ${o.status} ${'message' in o ? o.message : ''}: no campaign without a reference`);
      ref.set(v.id, { shas, wallMs: o.wallMs });
      await ledger.scan(store, `runs/${id}/`, id);
    }
    await ledger.scan(store, 'datasets/', 'references');

    const kindsDrawn = drawKinds(opts.n, kinds, draw);
    const healthy = VARIANTS.filter((v) => !v.expectFailure);
    for (let i = 0; i < opts.n; i++) {
      if (opts.budgetMs !== undefined && Date.now() - t0 > opts.budgetMs) {
        budgetNote = `the time budget (${(opts.budgetMs / 60000).toFixed(0)} min) ran out after ${i} of ${opts.n} runs`;
        log(budgetNote);
        break;
      }
      const kind = kindsDrawn[i];
      const variant: Variant = kind === 'non-finite-loss' ? VARIANTS.find((v) => v.expectFailure === 'NonFiniteLoss')! : healthy[Math.floor(draw() * healthy.length)];
      const reference = ref.get(variant.id)!;
      const record = await oneRun({ i, kind, variant, reference, seed: opts.seed, draw, h, c, scratch: mounted ? scratch : null, runDeadlineMs });
      runs.push(record);
      opts.onRun?.(record);
      // What the fault stopped comes back before the next run (idempotent when all is up).
      await bringUp(h);
      for (const id of [record.runId, record.retryId]) if (id) await ledger.scan(store, `runs/${id}/`, id);
      await ledger.scan(store, 'datasets/', record.runId);
      log(
        `run ${i + 1}/${opts.n} ${kind} (${variant.id}) ${record.runId}: ${record.verdict}` +
          `${record.types.length ? ` [${record.types.join(' <- ')}]` : ''} — ${record.fault}${record.hit ? '' : ' (after the run had ended)'}; ${(record.wallMs / 1000).toFixed(1)} s` +
          `${record.verdict === 'identical' || record.verdict === 'named' ? '' : `; ${record.why}`}`,
      );
    }
  } catch (err) {
    failedToFinish = err as Error;
    log(`campaign stopped: ${(err as Error).stack ?? (err as Error).message}`);
  }

  // The ledger: everything committed is still there, byte for byte.
  let verified: Awaited<ReturnType<Ledger['verify']>> = { files: 0, bytes: 0, problems: [] };
  try {
    await bringUp(h);
    verified = await ledger.verify(store);
  } catch (err) {
    failedToFinish ??= err as Error;
    log(`ledger check failed: ${(err as Error).message}`);
  }
  for (const p of verified.problems) {
    const r = runs.find((x) => x.runId === p.runId || x.retryId === p.runId);
    if (r) {
      r.verdict = p.kind === 'lost' ? 'lost' : 'mismatched';
      r.why = `${r.why}; ${p.detail}`.replace(/^; /, '');
    }
  }

  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  c.drop();
  store.close();
  await stackDown(config).catch(() => {});
  if (mounted) ScratchDisk.unmount(scratchDir, exec);
  const keep = opts.keepState || failedToFinish !== null || verified.problems.length > 0 || runs.some((r) => r.verdict !== 'identical' && r.verdict !== 'named');
  if (!keep) fs.rmSync(stateDir, { recursive: true, force: true });

  const report = summarize({ opts, kinds: opts.kinds ?? FAULT_KINDS, runs, references, skipped, verified, ledgerSize: ledger.entries.size, startedAt, wallMs: Date.now() - t0, stateDir: keep ? stateDir : null });
  report.budget = budgetNote;
  if (failedToFinish) {
    report.ok = false;
    (report as CampaignReport & { error?: string }).error = failedToFinish.message;
  }
  return report;
}

interface OneRun {
  i: number;
  kind: FaultKind;
  variant: Variant;
  reference: { shas: Record<string, string> | null; wallMs: number };
  seed: number;
  draw: () => number;
  h: StackHandle;
  c: Client;
  scratch: ScratchDisk | null;
  runDeadlineMs: number;
}

async function oneRun(o: OneRun): Promise<RunRecord> {
  const { i, kind, variant, reference, h, c, draw } = o;
  const runId = `faults-s${o.seed}-r${String(i).padStart(4, '0')}`;
  let spec: PipelineSpecInput = variant.spec;
  // A full disk bites where the worker writes: a dataset being tokenized. Same tokens under another
  // name, so the checkpoint is still the reference's.
  if (kind === 'disk-full') spec = withDatasetName(spec, `${spec.dataset!.name}-r${i}`);
  // The fault's moment: anywhere in the first 80 % of the reference run's time.
  const injectAtMs = Math.round(draw() * 0.8 * reference.wallMs);
  const downMs = kind === 's3-outage' ? 5000 + Math.round(draw() * 25_000) : kind === 'temporal-restart' ? 1000 + Math.round(draw() * 4000) : kind === 'disk-full' ? 5000 + Math.round(draw() * 25_000) : 0;
  const subDraw = rng(Math.floor(draw() * 2 ** 32));

  // Set inside the injection below (`as` keeps TypeScript from narrowing them to their first value).
  let fault = '' as string;
  let damage = null as Damage | null;
  let retryId = null as string | null;
  let hit = false as boolean;
  if (kind === 'disk-full' && o.scratch) {
    const bytes = o.scratch.fill();
    fault = `scratch tmpfs filled (${bytes} bytes)`;
  }
  const start = Date.now();
  const deadline = start + o.runDeadlineMs;
  await c.retrying(`start ${runId}`, start + 60_000, (tg) => tg.startPipeline(spec, { workflowId: runId }));
  const stillRunning = async () => (await c.retrying('describe', Date.now() + 30_000, (tg) => tg.describe(runId)).catch(() => null))?.status.name === 'RUNNING';

  const inject = (async (): Promise<void> => {
    if (kind === 'disk-full') {
      hit = true;
      await sleep(downMs);
      o.scratch?.free();
      fault += `; freed after ${(downMs / 1000).toFixed(1)} s`;
      return;
    }
    if (kind === 'non-finite-loss') {
      hit = true;
      fault = `spec ${variant.id}: ${JSON.stringify(variant.spec.training.optimizer)}`;
      return;
    }
    await sleep(injectAtMs);
    hit = await stillRunning();
    switch (kind) {
      case 'kill-gpu-worker':
        fault = await killWorker(h, 'gpu', subDraw);
        return;
      case 'kill-cpu-worker':
        fault = await killWorker(h, 'cpu', subDraw);
        return;
      case 'kill-supervisor':
        fault = await killSupervisor(h);
        return;
      case 's3-outage':
        fault = await s3Outage(h, downMs);
        return;
      case 'temporal-restart':
        fault = await temporalRestart(h, downMs);
        return;
      case 'corrupt-object':
        damage = await corruptObject(h, runId, spec, subDraw);
        fault = damage ? `${damage.how} ${damage.key}` : 'nothing committed to damage';
        return;
      case 'cancel-retry': {
        try {
          await c.retrying(`cancel ${runId}`, deadline, async (tg) => (await tg.getPipeline(runId)).cancel());
        } catch (err) {
          if (!(err instanceof RunStateError)) throw err;
          fault = 'cancel: the run had already ended';
          return;
        }
        const closed = await outcomeOf(c, runId, start, deadline);
        if (closed.status === 'COMPLETED') {
          fault = 'cancel arrived as the run completed';
          return;
        }
        retryId = `${runId}-retry`;
        await c.retrying(`retry ${runId}`, deadline, (tg) => tg.retryFromCheckpoint(runId, { workflowId: retryId! }));
        fault = `cancelled (${closed.status}), then retried as ${retryId}`;
        return;
      }
    }
  })().catch((err: Error) => {
    fault += ` (injection failed: ${err.message.split('\n')[0]})`;
  });

  let outcome = await outcomeOf(c, runId, start, deadline);
  await inject;
  if (retryId) outcome = await outcomeOf(c, retryId, start, deadline + o.runDeadlineMs);
  if (damage) await repair(h, damage);
  if (kind === 'disk-full') o.scratch?.free();

  const rec: RunRecord = {
    i,
    kind,
    variant: variant.id,
    runId,
    retryId,
    injectAtMs: kind === 'disk-full' || kind === 'non-finite-loss' ? 0 : injectAtMs,
    hit,
    fault,
    status: outcome.status,
    types: 'types' in outcome ? outcome.types : [],
    message: 'message' in outcome ? outcome.message.slice(0, 600) : null,
    checkpoint: outcome.status === 'COMPLETED' ? shasOf((outcome as Extract<Outcome, { result: PipelineResult }>).result) : null,
    verdict: 'identical',
    why: '',
    wallMs: outcome.wallMs,
    recoveryMs: null,
  };
  if (outcome.status === 'HUNG') {
    for (const id of [runId, retryId]) if (id) await terminate(c, id);
    rec.verdict = 'hung';
    rec.why = `no outcome within ${o.runDeadlineMs / 1000} s; terminated`;
    return rec;
  }
  rec.recoveryMs = outcome.wallMs - reference.wallMs;
  if (outcome.status === 'COMPLETED') {
    const same = reference.shas !== null && JSON.stringify(rec.checkpoint) === JSON.stringify(reference.shas);
    rec.verdict = same ? 'identical' : 'mismatched';
    if (!same) rec.why = reference.shas ? `checkpoint ${JSON.stringify(rec.checkpoint)} differs from the reference ${JSON.stringify(reference.shas)}` : `completed, but ${variant.id} must fail`;
    return rec;
  }
  if (rec.types.length === 0) {
    rec.verdict = 'unnamed';
    rec.why = `${outcome.status} without a type from the error vocabulary: ${rec.message}`;
    return rec;
  }
  rec.verdict = 'named';
  if (variant.expectFailure && !rec.types.includes(variant.expectFailure)) {
    rec.verdict = 'mismatched';
    rec.why = `${variant.id} must fail with ${variant.expectFailure}, failed with ${rec.types.join('/')}`;
  }
  if (kind === 'corrupt-object' && damage) {
    const d = damage;
    // The damage must be caught as what it is, naming the damaged file.
    if (!rec.types.includes('CorruptCheckpoint') || !rec.message?.includes(d.key)) {
      rec.verdict = 'mismatched';
      rec.why = `after ${d.how} ${d.key} the run failed with ${rec.types.join('/')}: ${rec.message}; expected CorruptCheckpoint naming the file`;
    }
  }
  return rec;
}

function summarize(a: {
  opts: CampaignOptions;
  kinds: readonly FaultKind[];
  runs: RunRecord[];
  references: CampaignReport['references'];
  skipped: CampaignReport['skipped'];
  verified: { files: number; bytes: number; problems: LedgerProblem[] };
  ledgerSize: number;
  startedAt: string;
  wallMs: number;
  stateDir: string | null;
}): CampaignReport {
  const count = (rs: RunRecord[], v: Verdict) => rs.filter((r) => r.verdict === v).length;
  const table: KindRow[] = a.kinds.map((kind) => {
    const rs = a.runs.filter((r) => r.kind === kind);
    // What the fault cost a run that recovered: its time beyond the reference's.
    const rec = rs.filter((r) => r.recoveryMs !== null && r.verdict === 'identical' && r.hit);
    return {
      kind,
      runs: rs.length,
      hit: rs.filter((r) => r.hit).length,
      identical: count(rs, 'identical'),
      named: count(rs, 'named'),
      lost: count(rs, 'lost'),
      mismatched: count(rs, 'mismatched'),
      unnamed: count(rs, 'unnamed'),
      hung: count(rs, 'hung'),
      meanRecoveryMs: rec.length ? rec.reduce((s, r) => s + r.recoveryMs!, 0) / rec.length : null,
    };
  });
  const totals = {
    runs: a.runs.length,
    identical: count(a.runs, 'identical'),
    named: count(a.runs, 'named'),
    lost: count(a.runs, 'lost'),
    mismatched: count(a.runs, 'mismatched'),
    unnamed: count(a.runs, 'unnamed'),
    hung: count(a.runs, 'hung'),
  };
  // The last line folds a hung run into "lost" (it never came back) and a failure without a named
  // cause into "mismatched" (not what the contract promises); the table keeps them apart.
  const lost = totals.lost + totals.hung;
  const mismatched = totals.mismatched + totals.unnamed;
  const line = `${totals.runs} runs: ${totals.identical} completed identical, ${totals.named} failed with a named cause, ${lost} lost, ${mismatched} mismatched`;
  const cpus = os.cpus();
  return {
    n: a.opts.n,
    seed: a.opts.seed,
    startedAt: a.startedAt,
    wallMs: a.wallMs,
    machine: { cpu: cpus[0]?.model ?? 'unknown', cores: cpus.length, loadavg: os.loadavg(), node: process.version, platform: `${os.platform()} ${os.release()}` },
    references: a.references,
    skipped: a.skipped,
    runs: a.runs,
    ledger: { manifests: a.ledgerSize, files: a.verified.files, bytes: a.verified.bytes, problems: a.verified.problems },
    table,
    totals,
    line,
    stateDir: a.stateDir,
    ok: (totals.runs === a.opts.n || a.opts.budgetMs !== undefined) && lost === 0 && mismatched === 0 && a.verified.problems.length === 0,
  };
}
