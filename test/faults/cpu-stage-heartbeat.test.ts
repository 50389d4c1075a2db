// A CPU worker lost where no supervisor reports it (a `truthgpt worker` host that goes down, a
// worker started by hand) mid quantizeClassifier: the attempt is timed out by its heartbeat timeout
// (60 s) and retried on another worker, not after the 60-minute start-to-close timeout. The stage
// runs in pipelineWorkflow's CPU_STAGE, as do mergeClassifierLora and quantizeT5.
//
// Real parts: a Temporal dev server and an S3 server; the workflows and gpu workers in this process;
// the cpu worker as its own process (workers/main.ts, no supervisor, so no WorkerLost report), which
// is SIGKILLed while quantizeClassifier runs and replaced by a second process.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { temporal } from '@temporalio/proto';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { loadConfig } from '../../infra/config';
import { tsCommand } from '../../infra/stack-spawn';
import { importModel, TruthGPT, type PipelineSpecInput } from '../../sdk';
import type { HeartbeatGapRecord } from '../../workers/heartbeat-gaps';
import { createPoolWorker, type PoolWorker } from '../../workers/worker';
import { withS3, type S3Fixture } from '../helpers/s3';
import { withTemporal, type TemporalFixture } from '../helpers/temporal';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'hf-io', 'bert_spam');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let temporalServer: TemporalFixture;
let s3: S3Fixture;
let env: Record<string, string>;
let workers: PoolWorker[];
let running: Promise<void>[];
let tg: TruthGPT;
let tmp: string;
const children: ChildProcess[] = [];

/** A cpu-role worker process on this stack, its output in `<tmp>/<name>.log`; resolves once it polls. */
async function cpuWorker(name: string): Promise<ChildProcess> {
  const { command, args } = tsCommand('workers/main.ts', ['--role', 'cpu']);
  const log = path.join(tmp, `${name}.log`);
  const out = fs.openSync(log, 'a');
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  children.push(child);
  for (let i = 0; i < 1200 && !/ready/.test(fs.readFileSync(log, 'utf8')); i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}: ${fs.readFileSync(log, 'utf8')}`);
    await sleep(100);
  }
  if (!/ready/.test(fs.readFileSync(log, 'utf8'))) throw new Error(`${name} did not start: ${fs.readFileSync(log, 'utf8')}`);
  return child;
}

beforeAll(async () => {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-cpu-hb-'));
  [temporalServer, s3] = await Promise.all([withTemporal(), withS3({ bucket: 'truthgpt-cpu-hb' })]);
  env = {
    TRUTHGPT_TEMPORAL_PORT: String(temporalServer.port),
    TRUTHGPT_UI_PORT: String(temporalServer.uiPort),
    TRUTHGPT_S3_PORT: String(s3.server.port),
    TRUTHGPT_S3_BUCKET: 'truthgpt-cpu-hb',
    TRUTHGPT_STATE_DIR: s3.dir,
    TRUTHGPT_HEARTBEAT_GAPS: path.join(tmp, 'gaps.jsonl'),
  };
  const config = loadConfig(env);
  workers = await Promise.all([createPoolWorker(config, 'workflows'), createPoolWorker(config, 'gpu')]);
  running = workers.map((w) => w.run());
  tg = await TruthGPT.connect({ config });
}, 180_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await tg?.close();
  for (const w of workers ?? []) if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
  await Promise.allSettled(running ?? []);
  await Promise.allSettled([temporalServer?.close(), s3?.close()]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('a cpu worker SIGKILLed mid quantizeClassifier, with no supervisor to report it: the heartbeat timeout retries it on another worker', async () => {
  const first = await cpuWorker('cpu-1');
  const imported = await importModel(FIXTURE, { name: 'tiny-bert-spam', config: tg.config });
  // Half the corpus as validation documents: each variant's gate scores every one with the fp32 and
  // the int8 model, seconds of work to land the kill in.
  const spec: PipelineSpecInput = {
    name: 'cpu-hb',
    model: { from: imported.ref, task: 'classification' },
    dataset: { name: 'spam', corpus: { kind: 'spam-assassin' }, valFraction: 0.5 },
    training: { rounds: 0, innerSteps: 1, batchSize: 16, contextLength: 64 },
    quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 1 }],
  };
  const run = await tg.startPipeline(spec);
  const handle = tg.client.workflow.getHandle(run.workflowId);

  // Kill as soon as the server says the attempt has started on the first worker.
  let started: temporal.api.workflow.v1.IPendingActivityInfo | undefined;
  for (let i = 0; i < 6000 && !started; i++) {
    const d = await handle.describe();
    started = d.raw.pendingActivities?.find((p) => p.activityType?.name === 'quantizeClassifier' && p.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED);
    if (!started) await sleep(100);
  }
  expect(started).toBeDefined();
  // Without a heartbeat timeout the killed attempt would wait out its 60-minute start-to-close one.
  const asked = ((await handle.fetchHistory()).events ?? []).find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'quantizeClassifier')!;
  expect(asked.activityTaskScheduledEventAttributes!.heartbeatTimeout?.seconds?.toString()).toBe('60');
  first.kill('SIGKILL');
  const killedAt = Date.now();
  await cpuWorker('cpu-2');

  const r = await run.result();
  expect(r.classifierVariants!.map((v) => v.name)).toEqual(['int8']);

  // The second attempt's last failure is the first one's heartbeat timeout.
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'quantizeClassifier')!;
  const attempts = events.map((e) => e.activityTaskStartedEventAttributes).filter((a) => a && String(a.scheduledEventId) === String(scheduled.eventId));
  expect(attempts.map((a) => a!.attempt)).toEqual([2]);
  const lost = attempts[0]!.lastFailure!;
  expect(lost.timeoutFailureInfo?.timeoutType).toBe(temporal.api.enums.v1.TimeoutType.TIMEOUT_TYPE_HEARTBEAT);
  const retriedAt = events.find((e) => e.activityTaskStartedEventAttributes === attempts[0])!;
  const retriedMs = Number(retriedAt.eventTime!.seconds) * 1000 + Math.round((retriedAt.eventTime!.nanos ?? 0) / 1e6) - killedAt;
  // Measured, not asserted (a timing): kill → retry start.
  console.log(`cpu worker SIGKILLed mid quantizeClassifier: the retry started ${retriedMs} ms after the kill (heartbeat timeout 60 s)`);

  // The surviving attempt's longest silence between heartbeats (TRUTHGPT_HEARTBEAT_GAPS).
  const gaps = fs
    .readFileSync(env.TRUTHGPT_HEARTBEAT_GAPS, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as HeartbeatGapRecord)
    .filter((g) => g.activityType === 'quantizeClassifier');
  console.log(`quantizeClassifier heartbeat gaps: ${gaps.map((g) => `attempt ${g.attempt}: ${g.beats} beats over ${g.totalMs} ms, longest silence ${g.maxGapMs} ms (${g.after} → ${g.before})`).join('; ')}`);
  expect(gaps.map((g) => g.attempt)).toEqual([2]);
  expect(gaps[0].beats).toBeGreaterThan(2);
}, 900_000);
