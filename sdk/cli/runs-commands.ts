// `truthgpt runs | watch ID | cancel ID | retry ID`: the pipeline runs Temporal knows about, read
// through visibility and our search attributes, and the handles the SDK gives a script.

import type { Command } from 'commander';
import type { WorkflowExecutionStatusName } from '@temporalio/client';
import { resultOrExit, summarize, table, watchRun } from './progress';
import { checkRunId } from '../index';
import { choiceArgument, numberArgument, runIdArgument } from './arguments';
import { withTruthGPT } from './run-commands';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';

/** What the TruthgptStage search attribute of a pipeline run can hold (workflows/pipeline.ts). */
const RUN_STAGES = ['queued', 'locateCheckpoint', 'train', 'lora', 'postTraining', 'done', 'failed', 'cancelled'] as const;
const RUN_STATUSES = ['RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'TERMINATED', 'CONTINUED_AS_NEW', 'TIMED_OUT'] as const satisfies readonly WorkflowExecutionStatusName[];

interface RunsFlags extends StackFlags {
  json?: boolean;
  pipeline?: string;
  stage?: string;
  family?: string;
  status?: WorkflowExecutionStatusName;
  limit: number;
}

export function registerRunsCommands(program: Command): void {
  withStackFlags(program.command('runs'))
    .description('list pipeline runs, newest first (from Temporal visibility, with our search attributes)')
    .option('--json', 'print JSON')
    .option('--pipeline <name>', 'only runs of this PipelineSpec name')
    .option('--stage <stage>', `only runs in this stage (${RUN_STAGES.join(', ')})`, choiceArgument('--stage', RUN_STAGES))
    .option('--family <family>', 'only this model family (gpt, bert, t5)', choiceArgument('--family', ['gpt', 'bert', 't5'] as const))
    .option('--status <status>', `only this Temporal status (${RUN_STATUSES.join(', ')})`, choiceArgument('--status', RUN_STATUSES))
    .option('--limit <n>', 'at most this many runs', numberArgument('--limit', 1, 10_000, true), 50)
    .action(async (flags: RunsFlags) => {
      await withTruthGPT(configFromFlags(flags), async (tg) => {
        const runs = await tg.listRuns({
          pipeline: flags.pipeline,
          stage: flags.stage,
          family: flags.family,
          status: flags.status,
          limit: flags.limit,
        });
        if (flags.json) {
          console.log(JSON.stringify(runs, null, 2));
          return;
        }
        if (!runs.length) {
          console.log('no pipeline runs yet; start one with `truthgpt run examples/gpt-brown.yaml`');
          return;
        }
        console.log(
          table([
            ['id', 'status', 'stage', 'pipeline', 'family', 'task', 'best val', 'started'],
            ...runs.map((r) => [r.workflowId, r.status, r.stage ?? '-', r.pipeline ?? '-', r.family ?? '-', r.task ?? '-', bestValText(r), r.startTime.slice(0, 19).replace('T', ' ')]),
          ]),
        );
      });
    });

  withStackFlags(program.command('watch'))
    .description('live progress of a pipeline run (stage, round/step, tokens/s, losses), then its summary')
    .argument('<id>', 'pipeline run id (see `truthgpt runs`)', runIdArgument('run id'))
    .option('--json', 'print the final result as JSON')
    .action(async (id: string, flags: StackFlags & { json?: boolean }) => {
      const config = configFromFlags(flags);
      await withTruthGPT(config, async (tg) => {
        const run = await tg.getPipeline(id);
        console.error(`watching ${id}\n  ${run.uiUrl}`);
        await watchRun(run);
        const r = await resultOrExit(run);
        if (r) console.log(flags.json ? JSON.stringify(r, null, 2) : summarize(r, run.uiUrl, config.s3.bucket));
      });
    });

  withStackFlags(program.command('cancel'))
    .description('cancel a pipeline run: running activities stop at their next heartbeat (a step, a batch), the run ends cancelled; committed checkpoints stay, so `truthgpt retry ID` can continue it')
    .argument('<id>', 'pipeline run id', runIdArgument('run id'))
    .action(async (id: string, flags: StackFlags) => {
      await withTruthGPT(configFromFlags(flags), async (tg) => {
        const run = await tg.getPipeline(id);
        await run.cancel();
        console.log(`cancel requested for ${id}; continue it later with \`truthgpt retry ${id}\``);
      });
    });

  withStackFlags(program.command('retry'))
    .description("start a new run that resumes a failed, cancelled or terminated pipeline from its last committed checkpoint")
    .argument('<id>', 'pipeline run id', runIdArgument('run id'))
    .option('--detach', 'print the new run id and return instead of watching')
    .option('--id <workflowId>', 'id of the new run (default: pipeline-<name>-<time>)', runIdArgument('--id'))
    .option('--json', 'print the final result as JSON')
    .action(async (id: string, flags: StackFlags & { detach?: boolean; id?: string; json?: boolean }) => {
      if (flags.id !== undefined) checkRunId(flags.id, '--id');
      const config = configFromFlags(flags);
      await withTruthGPT(config, async (tg) => {
        const run = await tg.retryFromCheckpoint(id, { workflowId: flags.id });
        if (flags.detach) {
          console.log(run.workflowId);
          return;
        }
        console.error(`started ${run.workflowId} (continues ${id})\n  ${run.uiUrl}`);
        await watchRun(run);
        const r = await resultOrExit(run);
        if (r) console.log(flags.json ? JSON.stringify(r, null, 2) : summarize(r, run.uiUrl, config.s3.bucket));
      });
    });
}

/** The metric that fits the run (spec/family.ts headlineMetric): accuracy for a classifier, exact match (and loss) for seq2seq, else loss and perplexity (LM, MLM, span corruption). */
function bestValText(r: { task: string | null; bestValLoss: number | null; valAccuracy: number | null }): string {
  if (r.task === 'classification' && r.valAccuracy != null) return `acc ${(100 * r.valAccuracy).toFixed(1)}%`;
  if (r.task === 'seq2seq' && r.valAccuracy != null) return `EM ${(100 * r.valAccuracy).toFixed(1)}%${r.bestValLoss != null ? `, loss ${r.bestValLoss.toFixed(4)}` : ''}`;
  return r.bestValLoss != null ? `loss ${r.bestValLoss.toFixed(4)} (ppl ${Math.exp(r.bestValLoss).toFixed(2)})` : '-';
}
