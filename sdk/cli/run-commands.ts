// `truthgpt run SPEC [--detach]` and `truthgpt wait ID [--json]`: start a trainingWorkflow from a
// YAML/JSON TrainingSpec file and collect its result (final checkpoint files with sha256, the
// val-loss history). The spec is validated here, before anything starts, with errors naming the
// field; the worker validates it again.

import { WorkflowFailedError, type Client } from '@temporalio/client';
import type { Command } from 'commander';
import fs from 'node:fs';
import YAML from 'yaml';
import { workflowUiUrl, type Config } from '../../infra/config';
import type { trainingWorkflow, TrainingResult } from '../../workflows/training';
import { connectTemporal } from '../client';
import { errorTypeOf } from '../errors';
import { parseTrainingSpec, type TrainingSpecInput } from '../schemas/training';
import { TASK_QUEUES } from '../search-attributes';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';

/** Reads a TrainingSpec file (YAML or JSON), validated; errors name the file and the field. */
export function readSpecFile(file: string) {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`spec file ${file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text);
  } catch (err) {
    throw new Error(`spec file ${file}: not valid YAML/JSON: ${(err as Error).message}`);
  }
  try {
    return parseTrainingSpec(raw);
  } catch (err) {
    throw new Error(`spec file ${file}: ${(err as Error).message}`);
  }
}

/**
 * Starts trainingWorkflow on the cpu queue (workflows run there); returns the workflow id.
 * @example const id = await startTraining(client, { model: { preset: 'tiny-gpt' }, ... });
 */
export async function startTraining(client: Client, specInput: TrainingSpecInput, opts: { workflowId?: string } = {}): Promise<string> {
  const spec = parseTrainingSpec(specInput);
  const workflowId = opts.workflowId ?? `${spec.name}-${new Date().toISOString().replace(/[:.]/g, '-').toLowerCase()}`;
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

async function withClient<T>(config: Config, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = await connectTemporal(config);
  try {
    return await fn(client);
  } finally {
    await client.connection.close();
  }
}

/** Adds `run SPEC` (to the existing `run` group when there is one) and `wait ID`. */
export function registerRunCommands(program: Command): void {
  const run = program.commands.find((c) => c.name() === 'run') ?? program.command('run').description('run a workflow');
  withStackFlags(run)
    .argument('[spec]', 'TrainingSpec file (YAML or JSON)')
    .option('--detach', 'print the run id and return instead of waiting')
    .option('--id <workflowId>', 'workflow id (default: <spec name>-<timestamp>)')
    .option('--json', 'print the result as JSON')
    .action(async (file: string | undefined, flags: StackFlags & { detach?: boolean; id?: string; json?: boolean }) => {
      if (!file) {
        run.help({ error: true });
        return;
      }
      const spec = readSpecFile(file);
      const config = configFromFlags(flags);
      await withClient(config, async (client) => {
        const id = await startTraining(client, spec, { workflowId: flags.id });
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
    .description('wait for a training run and print its result (final checkpoint sha256s, val-loss history)')
    .argument('<id>', 'workflow id printed by `truthgpt run --detach`')
    .option('--json', 'print the result as JSON')
    .action(async (id: string, flags: StackFlags & { json?: boolean }) => {
      const config = configFromFlags(flags);
      const r = await withClient(config, (client) => waitTraining(client, id));
      console.log(flags.json ? JSON.stringify(r, null, 2) : summary(config, r));
      if (r.status === 'failed') process.exitCode = 1;
    });
}
