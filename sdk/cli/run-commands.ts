// `truthgpt run SPEC [--detach]` and `truthgpt wait ID [--json]`. SPEC is a YAML/JSON file holding
// either a PipelineSpec (it has a `training` section: pipelineWorkflow, with live progress bars and
// a summary table) or a bare TrainingSpec (trainingWorkflow alone: final checkpoint files with
// sha256, the val-loss history). The spec is validated here, once, before anything starts, with
// errors naming the file and the field; the workflow gets the parsed form.

import { WorkflowFailedError, type Client } from '@temporalio/client';
import type { Command } from 'commander';
import fs from 'node:fs';
import YAML from 'yaml';
import { workflowUiUrl, type Config } from '../../infra/config';
import type { trainingWorkflow, TrainingResult } from '../../workflows/training';
import { errorTypeOf } from '../../spec/errors';
import { checkPayload, checkRunId, TruthGPT } from '../index';
import { InvalidSpecError, isPipelineSpecInput, parsePipelineSpec, type PipelineSpec } from '../../spec/pipeline';
import { DEFAULT_SPEC_LIMITS, specLimits, type SpecLimits } from '../../spec/limits';
import { parseTrainingSpec, type TrainingSpec, type TrainingSpecInput } from '../../spec/training';
import { TASK_QUEUES } from '../../spec/temporal-names';
import { needsModelFrom, resolveModelFrom } from '../model-from';
import { withStore } from '../store';
import { resultOrExit, summarize, watchRun } from './progress';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';
import { runIdArgument } from './arguments';
import { UsageError } from './usage-error';

/** The largest spec file read (specs are a few KiB; Temporal keeps at most 256 KiB of one). */
export const MAX_SPEC_FILE_BYTES = 2 ** 20;

/** A YAML or JSON spec file, parsed but not yet validated; errors name the file. */
export function readSpecDocument(file: string): unknown {
  let text: string;
  try {
    // Checked before reading: a spec is settings, and a huge file is data in the wrong place.
    const { size } = fs.statSync(file);
    if (size > MAX_SPEC_FILE_BYTES) {
      throw new UsageError(`spec file ${file} is ${(size / 2 ** 20).toFixed(1)} MiB, above ${MAX_SPEC_FILE_BYTES / 2 ** 20} MiB: a spec holds settings, not data; put text or weights in files or S3 and name them by path or key`);
    }
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`spec file ${file}: ${(err as Error).message}`);
  }
  try {
    return YAML.parse(text); // YAML is a superset of JSON
  } catch (err) {
    throw new UsageError(`spec file ${file}: not valid YAML/JSON: ${(err as Error).message}`);
  }
}

/**
 * A spec file, validated (against `limits`: the worker memory, from the config): a PipelineSpec when
 * it has a `training` section, else a TrainingSpec. A `model.from` is read from the store of `config`
 * first (sdk/model-from.ts), so a missing model is named before anything starts.
 */
export async function readSpecFile(
  file: string,
  limits: SpecLimits = DEFAULT_SPEC_LIMITS,
  config?: Config,
): Promise<{ kind: 'pipeline'; spec: PipelineSpec } | { kind: 'training'; spec: TrainingSpec }> {
  const invalid = (lines: string[]) => new UsageError(`spec file ${file} is invalid, fix these fields and run again:\n  ${lines.join('\n  ')}`);
  let raw = readSpecDocument(file);
  try {
    if (config && needsModelFrom(raw)) raw = await withStore(config, (s) => resolveModelFrom(s, raw));
    return isPipelineSpecInput(raw) ? { kind: 'pipeline', spec: parsePipelineSpec(raw, limits) } : { kind: 'training', spec: parseTrainingSpec(raw, limits) };
  } catch (err) {
    throw invalid(err instanceof InvalidSpecError ? err.issues : [(err as Error).message]);
  }
}

/**
 * Starts trainingWorkflow on the cpu queue (workflows run there); returns the workflow id.
 * @example const id = await startTraining(client, { model: { preset: 'tiny-gpt' }, ... });
 */
export async function startTraining(client: Client, specInput: TrainingSpecInput, opts: { workflowId?: string; limits?: SpecLimits } = {}): Promise<string> {
  return startParsedTraining(client, parseTrainingSpec(specInput, opts.limits), opts);
}

/** startTraining for a spec parsed already (readSpecFile's). */
async function startParsedTraining(client: Client, spec: TrainingSpec, opts: { workflowId?: string }): Promise<string> {
  const workflowId = opts.workflowId === undefined ? `${spec.name}-${new Date().toISOString().replace(/[:.]/g, '-').toLowerCase()}` : checkRunId(opts.workflowId);
  checkPayload('the training spec', spec);
  await client.workflow.start<typeof trainingWorkflow>('trainingWorkflow', { taskQueue: TASK_QUEUES.cpu, workflowId, args: [{ spec }] });
  return workflowId;
}

export type WaitOutcome =
  | ({ workflowId: string; status: 'completed' } & TrainingResult)
  | { workflowId: string; status: 'failed'; error: { type: string | null; message: string } };

/** Waits for a run (following continue-as-new) and returns its result or its failure. */
export async function waitTraining(client: Client, workflowId: string): Promise<WaitOutcome> {
  try {
    const result = (await client.workflow.getHandle<typeof trainingWorkflow>(workflowId).result()) as TrainingResult;
    return { workflowId, status: 'completed', ...result };
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) throw err;
    const cause = err.cause as Error | undefined;
    let message = cause?.message ?? err.message;
    for (let c = cause?.cause as Error | undefined; c; c = c.cause as Error | undefined) message += ` ← ${c.message}`;
    return { workflowId, status: 'failed', error: { type: errorTypeOf(err) ?? null, message } };
  }
}

function summary(config: Config, r: WaitOutcome): string {
  if (r.status === 'failed') return `${r.workflowId} failed${r.error.type ? ` (${r.error.type})` : ''}: ${r.error.message}`;
  const lines = [
    `${r.workflowId}: ${r.rounds} rounds, ${r.steps} steps per worker, ${r.tokensSeen} tokens, ${(r.wallMs / 1000).toFixed(1)} s`,
    `val loss  ${r.valHistory.map((v) => `r${v.round} ${v.loss.toFixed(4)}`).join(', ')}`,
    `checkpoint s3://${config.s3.bucket}/${r.checkpoint.prefix}`,
    ...Object.entries(r.checkpoint.files).map(([name, f]) => `  ${name}  ${f.size} bytes  sha256 ${f.sha256}`),
    `Web UI    ${workflowUiUrl(config, r.workflowId)}`,
  ];
  return lines.join('\n');
}

/** Runs `fn` with a connected SDK; a stack that is down becomes a one-line error with the fix. */
export async function withTruthGPT<T>(config: Config, fn: (tg: TruthGPT) => Promise<T>): Promise<T> {
  const tg = await TruthGPT.connect({ config });
  try {
    return await fn(tg);
  } finally {
    await tg.close();
  }
}

const withClient = <T>(config: Config, fn: (c: Client) => Promise<T>) => withTruthGPT(config, (tg) => fn(tg.client));

/** Starts a pipeline and (unless detached) watches it to the end: progress bar, then the summary table. */
async function runPipeline(config: Config, spec: PipelineSpec, flags: { detach?: boolean; id?: string; json?: boolean }): Promise<void> {
  await withTruthGPT(config, async (tg) => {
    if (!(await tg.workersPolling())) {
      console.error(`truthgpt: warning: no worker polls ${TASK_QUEUES.cpu}, so the run will wait; start the workers with \`truthgpt up\` (or \`npm run worker\`)`);
    }
    const run = await tg.startPipeline(spec, { workflowId: flags.id });
    if (flags.detach) {
      console.log(run.workflowId);
      return;
    }
    console.error(`started ${run.workflowId}\n  ${run.uiUrl}`);
    await watchRun(run);
    const r = await resultOrExit(run);
    if (r) console.log(flags.json ? JSON.stringify(r, null, 2) : summarize(r, run.uiUrl, config.s3.bucket));
  });
}

/** `wait ID` for a pipeline: its result as a summary table or JSON. */
export async function waitPipeline(tg: TruthGPT, id: string, json: boolean): Promise<void> {
  const run = await tg.getPipeline(id);
  const r = await resultOrExit(run);
  if (r) console.log(json ? JSON.stringify(r, null, 2) : summarize(r, run.uiUrl, tg.config.s3.bucket));
}

/** Adds `run SPEC` (to the existing `run` group when there is one) and `wait ID`. */
export function registerRunCommands(program: Command): void {
  const run = program.commands.find((c) => c.name() === 'run') ?? program.command('run').description('run a workflow');
  withStackFlags(run)
    .argument('[spec]', 'PipelineSpec or TrainingSpec file (YAML or JSON)')
    .option('--detach', 'print the run id and return instead of waiting')
    .option('--id <workflowId>', 'workflow id (default: <spec name>-<timestamp>)', runIdArgument('--id'))
    .option('--json', 'print the result as JSON')
    .action(async (file: string | undefined, flags: StackFlags & { detach?: boolean; id?: string; json?: boolean }) => {
      if (!file) {
        run.help({ error: true });
        return;
      }
      // Everything that can be checked here is, before connecting anywhere.
      if (flags.id !== undefined) checkRunId(flags.id, '--id');
      const config = configFromFlags(flags);
      const parsed = await readSpecFile(file, specLimits(config.runtime.workerMemoryGb), config);
      if (parsed.kind === 'pipeline') return runPipeline(config, parsed.spec, flags);
      await withClient(config, async (client) => {
        const id = await startParsedTraining(client, parsed.spec, { workflowId: flags.id });
        if (flags.detach) {
          console.log(id);
          return;
        }
        console.error(`started ${id}\n  ${workflowUiUrl(config, id)}`);
        const r = await waitTraining(client, id);
        console.log(flags.json ? JSON.stringify(r, null, 2) : summary(config, r));
        if (r.status === 'failed') process.exitCode = 1;
      });
    });

  withStackFlags(program.command('wait'))
    .description('wait for a run and print its result (pipeline: stages, variants, report; training: checkpoint sha256s, val losses)')
    .argument('<id>', 'workflow id printed by `truthgpt run --detach`', runIdArgument('run id'))
    .option('--json', 'print the result as JSON')
    .action(async (id: string, flags: StackFlags & { json?: boolean }) => {
      const config = configFromFlags(flags);
      await withTruthGPT(config, async (tg) => {
        if ((await tg.describe(id)).type === 'pipelineWorkflow') return waitPipeline(tg, id, Boolean(flags.json));
        const r = await waitTraining(tg.client, id);
        console.log(flags.json ? JSON.stringify(r, null, 2) : summary(config, r));
        if (r.status === 'failed') process.exitCode = 1;
      });
    });
}
