// The TruthGPT SDK, the package's main entry: connect, start a pipeline from a PipelineSpec, watch
// it, list runs through Temporal visibility, retry a failed run from its last checkpoint.
//
//   const tg = await TruthGPT.connect();
//   const run = await tg.startPipeline(spec);          // validated before anything starts
//   console.log(await run.progress());                 // stage, round/step, losses
//   const result = await run.result();                 // report key, variants, val history, LoRA outcome
//
// Everything goes through Temporal: there is no second queue or state store beside it.

import { Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type WorkflowExecutionStatusName, type WorkflowHandle } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { runIdProblem } from '../artifacts/keys';
import { loadConfig, workflowUiUrl, type Config } from '../infra/config';
import type { PipelineProgress, PipelineResult, pipelineWorkflow, StageOutcome } from '../workflows/pipeline';
import type { TrainingProgress } from '../workflows/controls';
import { connectTemporal } from './client';
import { needsModelFrom, resolveModelFrom } from './model-from';
import { withStore } from './store';
import { errorTypeOf } from '../spec/errors';
import { specLimits } from '../spec/limits';
import { payloadProblem } from '../spec/payloads';
import { parsePipelineSpec, type PipelineSpec, type PipelineSpecInput } from '../spec/pipeline';
import { TASK_QUEUES, TruthgptBestValLoss, TruthgptModelFamily, TruthgptPipeline, TruthgptStage, TruthgptTask, TruthgptValAccuracy } from '../spec/temporal-names';

export { InvalidSpecError, parsePipelineSpec, PipelineLoraSchema, PipelineSpecSchema, type PipelineLora, type PipelineLoraInput, type PipelineSpec, type PipelineSpecInput } from '../spec/pipeline';
export { ERROR_TYPES, errorTypeOf, type ErrorType } from '../spec/errors';
export * from './schedules';
export { needsModelFrom, resolveModelFrom } from './model-from';
export * from './models';
export type { LoraOutcome, PipelineProgress, PipelineResult, StageOutcome } from '../workflows/pipeline';
export type { FineTuneCompleted, FineTuneResult, FineTuneSkipped } from '../workflows/fine-tune';
export type { TrainingProgress } from '../workflows/controls';

/** Temporal did not answer: the local stack is down or the address is wrong. */
export class TemporalUnreachableError extends Error {
  override name = 'TemporalUnreachableError';
}
/** No workflow with that id in the namespace. */
export class UnknownRunError extends Error {
  override name = 'UnknownRunError';
}
/** The requested id belongs to an earlier or running workflow. */
export class RunIdTakenError extends Error {
  override name = 'RunIdTakenError';
}
/** A run id that cannot name a run's folder in the store ('../x', 'a/b', ...). */
export class InvalidRunIdError extends Error {
  override name = 'InvalidRunIdError';
}
/** A workflow input too large for Temporal's history (a spec that carries data). */
export class PayloadTooLargeError extends Error {
  override name = 'PayloadTooLargeError';
}

/** Throws InvalidRunIdError unless `id` can name a run. */
export function checkRunId(id: string, what = 'run id'): string {
  const problem = runIdProblem(id);
  if (problem) throw new InvalidRunIdError(`${what} ${JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id)} cannot be used: ${problem}`);
  return id;
}

/** Throws PayloadTooLargeError when `value` would not fit a workflow's history. */
export function checkPayload(what: string, value: unknown): void {
  const problem = payloadProblem(what, value);
  if (problem) throw new PayloadTooLargeError(problem);
}

/** The run is in a state that does not allow the request (retrying a run that completed). */
export class RunStateError extends Error {
  override name = 'RunStateError';
}
/** A run ended without a result; `type` is the error vocabulary type when there is one. */
export class RunFailedError extends Error {
  override name = 'RunFailedError';
  constructor(
    message: string,
    readonly workflowId: string,
    readonly status: WorkflowExecutionStatusName,
    readonly type: string | null,
  ) {
    super(message);
  }
}

export interface ConnectOptions {
  /** A loaded config; default `loadConfig(env)`. */
  config?: Config;
  /** Env to read the config from (default process.env), as the workers do. */
  env?: Record<string, string | undefined>;
}

/** What `progress()` returns: the pipeline's own view plus the live training child's. */
export interface RunProgress {
  workflowId: string;
  status: WorkflowExecutionStatusName;
  pipeline: PipelineProgress | null;
  training: TrainingProgress | null;
  /** The LoRA child's progress (chunks as rounds, steps, losses) once the lora stage started. */
  lora: TrainingProgress | null;
  /** Activities of the run and its running stages that failed and wait for another attempt. */
  retrying: RetryingActivity[];
  uiUrl: string;
}

/** A pending activity past its first attempt: what failed last and how often it has been tried. */
export interface RetryingActivity {
  /** The workflow that scheduled it (the pipeline or one of its stage children). */
  workflowId: string;
  activity: string;
  /** The attempt running or scheduled now (2 = one failure so far). */
  attempt: number;
  lastFailure: string;
}

export interface RunSummary {
  workflowId: string;
  status: WorkflowExecutionStatusName;
  pipeline: string | null;
  stage: string | null;
  family: string | null;
  /** What the run trains for: lm (GPT), classification or mlm (BERT), seq2seq or span-corruption (T5). */
  task: string | null;
  bestValLoss: number | null;
  /** Classification runs: the best validation accuracy (over every validation document); seq2seq runs: the best exact match. */
  valAccuracy: number | null;
  startTime: string;
  closeTime: string | null;
  uiUrl: string;
}

export interface RunFilter {
  pipeline?: string;
  stage?: string;
  family?: string;
  status?: WorkflowExecutionStatusName;
  /** Most recent first; default 50. */
  limit?: number;
}

/** Error names whose message is written for users (the CLI prints it alone, no stack trace). */
export const SDK_USER_ERRORS = ['TemporalUnreachableError', 'UnknownRunError', 'RunIdTakenError', 'RunStateError', 'RunFailedError', 'InvalidSpecError', 'InvalidRunIdError', 'PayloadTooLargeError'];

const RETRYABLE_STATUSES: WorkflowExecutionStatusName[] = ['FAILED', 'TERMINATED', 'CANCELLED', 'TIMED_OUT'];

/** Sortable and readable: 20251126-145200 (UTC). */
const stamp = (d = new Date()) => d.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
const quote = (s: string) => `'${s.replace(/'/g, "\\'")}'`;
const first = <T>(v: unknown): T | null => (Array.isArray(v) && v.length ? (v[0] as T) : null);

/** A started (or looked-up) pipeline run. */
export class PipelineRun {
  constructor(
    private readonly tg: TruthGPT,
    readonly workflowId: string,
    private readonly handle: WorkflowHandle<typeof pipelineWorkflow>,
  ) {}

  /** The Temporal Web UI page of this run. */
  get uiUrl(): string {
    return this.tg.uiUrl(this.workflowId);
  }

  /**
   * Stage, stage outcomes and — while training runs — rounds, steps, tokens and recent losses.
   * @example const p = await run.progress(); console.log(p.pipeline?.stage, p.training?.step)
   */
  async progress(): Promise<RunProgress> {
    const desc = await this.tg.describe(this.workflowId);
    const memo = (desc.memo ?? {}) as { stages?: StageOutcome[]; continues?: string[]; trainingWorkflowId?: string; loraWorkflowId?: string; resumedFrom?: PipelineProgress['resumedFrom'] };
    let pipeline: PipelineProgress | null = null;
    if (desc.status.name === 'RUNNING') pipeline = await this.handle.query<PipelineProgress>(pipelineProgressName).catch(() => null);
    if (!pipeline && memo.stages) {
      // Closed runs answer from the memo: no worker needed to replay them.
      const stage = first<string>(desc.searchAttributes[TruthgptStage.name]) ?? 'train';
      pipeline = {
        name: first<string>(desc.searchAttributes[TruthgptPipeline.name]) ?? '',
        stage: stage as PipelineProgress['stage'],
        stages: memo.stages,
        trainingWorkflowId: memo.trainingWorkflowId ?? `${this.workflowId}-train`,
        loraWorkflowId: memo.loraWorkflowId ?? null,
        paused: false,
        continues: memo.continues ?? [],
        resumedFrom: memo.resumedFrom ?? null,
      };
    }
    const childProgress = (workflowId: string | null | undefined) =>
      workflowId ? this.tg.client.workflow.getHandle(workflowId).query<TrainingProgress>('progress').catch(() => null) : Promise.resolve(null);
    const started = (stage: string) => pipeline?.stages.find((s) => s.stage === stage && s.workflowId)?.workflowId;
    const running = desc.status.name === 'RUNNING' ? [this.workflowId, ...(pipeline?.stages.filter((s) => s.status === 'running' && s.workflowId).map((s) => s.workflowId!) ?? [])] : [];
    const [training, lora, retrying] = await Promise.all([
      childProgress(started('train') && pipeline?.trainingWorkflowId),
      childProgress(started('lora')),
      Promise.all(running.map((id) => retryingActivities(this.tg.client, id))).then((xs) => xs.flat()),
    ]);
    return { workflowId: this.workflowId, status: desc.status.name, pipeline, training, lora, retrying, uiUrl: this.uiUrl };
  }

  /** Waits for the run; throws RunFailedError (with the vocabulary `type` and the stage) if it did not complete. */
  async result(): Promise<PipelineResult> {
    try {
      return await this.handle.result();
    } catch (err) {
      const desc = await this.tg.describe(this.workflowId).catch(() => null);
      const status = desc?.status.name ?? 'FAILED';
      throw new RunFailedError(`${this.workflowId} ${status.toLowerCase()}: ${innermost(err)}`, this.workflowId, status, errorTypeOf(err) ?? null);
    }
  }

  /**
   * Cancels the run; the training child stops at its next heartbeat, committed checkpoints stay.
   * Throws RunStateError for a run that has already ended (there is nothing to cancel).
   */
  async cancel(): Promise<void> {
    const { status } = await this.tg.describe(this.workflowId);
    if (status.name !== 'RUNNING') {
      throw new RunStateError(`${this.workflowId} is ${status.name.toLowerCase().replace(/_/g, ' ')}, not running: there is nothing to cancel`);
    }
    await this.handle.cancel();
  }

  /** Holds training before its next round (and the pipeline before its next stage). */
  async pause(): Promise<void> {
    await this.handle.signal('pause');
  }

  async resume(): Promise<void> {
    await this.handle.signal('resume');
  }
}

const pipelineProgressName = 'progress';

function innermost(err: unknown): string {
  let e = err as { message?: string; cause?: unknown } | undefined;
  let message = e?.message ?? String(err);
  for (let d = 0; e && d < 8; e = e.cause as typeof e, d++) if (e.message) message = e.message;
  return message;
}

/** The client: one Temporal connection, configured like the workers (env or an explicit Config). */
export class TruthGPT {
  private constructor(
    readonly client: Client,
    readonly config: Config,
  ) {}

  /**
   * Connects to Temporal using the same env config as the workers.
   * @example const tg = await TruthGPT.connect(); … await tg.close();
   */
  static async connect(opts: ConnectOptions = {}): Promise<TruthGPT> {
    const config = opts.config ?? loadConfig(opts.env ?? process.env);
    try {
      return new TruthGPT(await connectTemporal(config), config);
    } catch (err) {
      throw new TemporalUnreachableError(
        `Temporal is not reachable at ${config.temporal.address} (${(err as Error).message.split('\n')[0]}); start the local stack with \`truthgpt up\`, or point TEMPORAL_ADDRESS at your cluster`,
      );
    }
  }

  async close(): Promise<void> {
    await this.client.connection.close();
  }

  uiUrl(workflowId: string): string {
    return workflowUiUrl(this.config, workflowId);
  }

  /**
   * Validates the whole spec (unless it is a parsed PipelineSpec already), then starts pipelineWorkflow as `pipeline-<name>-<time>` (or `opts.workflowId`).
   * Throws InvalidSpecError naming every bad field, RunIdTakenError if the id was used before.
   * @example const run = await tg.startPipeline(YAML.parse(fs.readFileSync('examples/gpt-brown.yaml', 'utf8')))
   */
  async startPipeline(specInput: PipelineSpecInput | PipelineSpec, opts: { workflowId?: string; continues?: string[] } = {}): Promise<PipelineRun> {
    const resolved = !isParsed(specInput) && needsModelFrom(specInput) ? await withStore(this.config, (s) => resolveModelFrom(s, specInput)) : specInput;
    const spec = isParsed(resolved) ? resolved : parsePipelineSpec(resolved, specLimits(this.config.runtime.workerMemoryGb));
    if (opts.workflowId !== undefined) checkRunId(opts.workflowId);
    // The spec travels twice: as the workflow's input and, as the user wrote it, in its memo.
    checkPayload('the pipeline spec', { args: spec, memo: specInput });
    const base = opts.workflowId ?? `pipeline-${spec.name}-${stamp()}`;
    for (let attempt = 1; ; attempt++) {
      const workflowId = attempt === 1 ? base : `${base}-${attempt}`;
      try {
        const handle = await this.client.workflow.start<typeof pipelineWorkflow>('pipelineWorkflow', {
          taskQueue: TASK_QUEUES.cpu,
          workflowId,
          args: [{ spec, ...(opts.continues?.length ? { continues: opts.continues } : {}) }],
          // Ids name artifacts in the store (runs/<id>/...): never run two workflows under one.
          workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
          memo: { spec: specInput, continues: opts.continues ?? [] },
          typedSearchAttributes: [
            { key: TruthgptPipeline, value: spec.name },
            { key: TruthgptModelFamily, value: spec.training.model.family },
            { key: TruthgptStage, value: 'queued' },
          ],
          staticSummary: `pipeline ${spec.name}${opts.continues?.length ? ` (continues ${opts.continues[0]})` : ''}`,
        });
        return new PipelineRun(this, workflowId, handle);
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        // A generated id may collide with a run started in the same second: take the next suffix.
        if (opts.workflowId === undefined && attempt < 20) continue;
        throw new RunIdTakenError(`run id ${workflowId} is already used by another run; ids are never reused because they name the run's artifacts — choose another id or leave it out`);
      }
    }
  }

  /** A handle to an existing pipeline run; throws UnknownRunError when there is none. */
  async getPipeline(workflowId: string): Promise<PipelineRun> {
    await this.describe(workflowId);
    return new PipelineRun(this, workflowId, this.client.workflow.getHandle<typeof pipelineWorkflow>(workflowId));
  }

  /** Temporal's describe, with a clear error for an unknown id. */
  async describe(workflowId: string) {
    try {
      return await this.client.workflow.getHandle(workflowId).describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError || (err as { name?: string }).name === 'WorkflowNotFoundError') {
        throw new UnknownRunError(`no run with id ${workflowId} in namespace ${this.config.temporal.namespace}; list runs with \`truthgpt runs\``);
      }
      throw err;
    }
  }

  /**
   * Pipeline runs from Temporal visibility, newest first, filtered by our search attributes.
   * @example await tg.listRuns({ pipeline: 'demo', stage: 'done' })
   */
  async listRuns(filter: RunFilter = {}): Promise<RunSummary[]> {
    const clauses = [`WorkflowType = 'pipelineWorkflow'`];
    if (filter.pipeline) clauses.push(`${TruthgptPipeline.name} = ${quote(filter.pipeline)}`);
    if (filter.stage) clauses.push(`${TruthgptStage.name} = ${quote(filter.stage)}`);
    if (filter.family) clauses.push(`${TruthgptModelFamily.name} = ${quote(filter.family)}`);
    if (filter.status) clauses.push(`ExecutionStatus = ${quote(filter.status)}`);
    const out: RunSummary[] = [];
    const limit = filter.limit ?? 50;
    for await (const w of this.client.workflow.list({ query: clauses.join(' AND '), pageSize: Math.min(limit, 100) })) {
      const sa = w.searchAttributes;
      out.push({
        workflowId: w.workflowId,
        status: w.status.name,
        pipeline: first<string>(sa[TruthgptPipeline.name]),
        stage: first<string>(sa[TruthgptStage.name]),
        family: first<string>(sa[TruthgptModelFamily.name]),
        // GPT runs do not set the task: they train language models.
        task: first<string>(sa[TruthgptTask.name]) ?? (first<string>(sa[TruthgptModelFamily.name]) === 'gpt' ? 'lm' : null),
        bestValLoss: first<number>(sa[TruthgptBestValLoss.name]),
        valAccuracy: first<number>(sa[TruthgptValAccuracy.name]),
        startTime: w.startTime.toISOString(),
        closeTime: w.closeTime?.toISOString() ?? null,
        uiUrl: this.uiUrl(w.workflowId),
      });
      if (out.length >= limit) break;
    }
    return out;
  }

  /**
   * Starts a new run of a failed, terminated or cancelled pipeline's spec whose training resumes
   * from that run's last committed global checkpoint. The new run's memo and result name the run
   * it continues (`continues`, newest first).
   * @example const again = await tg.retryFromCheckpoint('pipeline-brown-20251126-145200')
   */
  async retryFromCheckpoint(workflowId: string, opts: { workflowId?: string } = {}): Promise<PipelineRun> {
    const desc = await this.describe(workflowId);
    if (desc.type !== 'pipelineWorkflow') throw new UnknownRunError(`${workflowId} is a ${desc.type}, not a pipeline run; retry the pipeline that started it`);
    if (!RETRYABLE_STATUSES.includes(desc.status.name)) {
      throw new RunStateError(`${workflowId} is ${desc.status.name.toLowerCase()}; only failed, terminated, cancelled or timed-out runs can be retried`);
    }
    const memo = (desc.memo ?? {}) as { spec?: unknown; continues?: string[] };
    if (!memo.spec) throw new UnknownRunError(`${workflowId} has no spec in its memo (was it started by the TruthGPT SDK?)`);
    return this.startPipeline(memo.spec as PipelineSpecInput, { workflowId: opts.workflowId, continues: [workflowId, ...(memo.continues ?? [])] });
  }

  /** Whether any worker polls the workflow queue (a started run would otherwise wait silently). */
  async workersPolling(): Promise<boolean> {
    const res = await this.client.workflowService.describeTaskQueue({
      namespace: this.config.temporal.namespace,
      taskQueue: { name: TASK_QUEUES.cpu },
      taskQueueType: 1, // TASK_QUEUE_TYPE_WORKFLOW
    });
    return (res.pollers?.length ?? 0) > 0;
  }
}

/** The pending activities of `workflowId` that have failed at least once (none when it cannot be described). */
async function retryingActivities(client: Client, workflowId: string): Promise<RetryingActivity[]> {
  const d = await client.workflow
    .getHandle(workflowId)
    .describe()
    .catch(() => null);
  return (d?.raw.pendingActivities ?? [])
    .filter((a) => (a.attempt ?? 1) > 1 && a.lastFailure)
    .map((a) => ({ workflowId, activity: a.activityType?.name ?? 'activity', attempt: a.attempt ?? 2, lastFailure: innermostFailure(a.lastFailure!) }));
}

/** The deepest message of a failure proto (an activity's ApplicationFailure wraps the cause). */
function innermostFailure(f: { message?: string | null; cause?: unknown }): string {
  let cur: { message?: string | null; cause?: unknown } | null | undefined = f;
  let message = f.message ?? '';
  for (let d = 0; cur && d < 8; cur = cur.cause as typeof cur, d++) if (cur.message) message = cur.message;
  return message;
}

/** A spec parsed already (its training holds a resolved model config) versus user input, which is parsed here. */
function isParsed(s: PipelineSpecInput | PipelineSpec): s is PipelineSpec {
  const t = (s as PipelineSpec).training as Partial<PipelineSpec['training']> | undefined;
  return typeof t?.model === 'object' && t.model !== null && 'config' in t.model && typeof t.dataset === 'object';
}
