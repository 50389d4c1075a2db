// `truthgpt demo` (also `truthgpt run demo`): brings the local stack up if needed, runs
// demoWorkflow and prints its result with the Web UI link of the run.

import type { Command } from 'commander';
import { workflowUiUrl, type Config } from '../../infra/config';
import { stackStatus } from '../../infra/stack-health';
import type { demoWorkflow, DemoResult } from '../../workflows/demo';
import { connectTemporal } from '../client';
import { TASK_QUEUES } from '../search-attributes';
import { bringUp, configFromFlags, withStackFlags, type StackFlags } from './stack-commands';

export interface DemoFlags extends StackFlags {
  categories?: string;
  up: boolean;
}

/**
 * Starts demoWorkflow and waits for its result.
 * @example const result = await runDemo(loadConfig(), { categories: ['news'] });
 */
export async function runDemo(config: Config, input: { categories?: string[] } = {}, onStart?: (workflowId: string, url: string) => void): Promise<DemoResult> {
  const client = await connectTemporal(config);
  try {
    const workflowId = `demo-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    const handle = await client.workflow.start<typeof demoWorkflow>('demoWorkflow', {
      taskQueue: TASK_QUEUES.cpu,
      workflowId,
      args: [input],
      workflowExecutionTimeout: '15 minutes',
    });
    onStart?.(workflowId, workflowUiUrl(config, workflowId));
    return await handle.result();
  } finally {
    await client.connection.close();
  }
}

function printResult(config: Config, r: DemoResult): void {
  const s = r.dataset.stats;
  const p = r.runtime;
  const lines = [
    `dataset   Brown corpus: ${s.documents} documents, ${s.sentences} sentences, ${s.words} words, ${s.characters} characters, ${s.bytes} bytes, byte vocab ${s.byteVocab}`,
    `          genres: ${Object.entries(s.categories).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `          top words: ${s.topWords.slice(0, 10).map((w) => `${w.word} ${w.count}`).join(', ')}`,
    `          summary: s3://${config.s3.bucket}/${r.dataset.key} (${r.dataset.size} bytes, sha256 ${r.dataset.sha256.slice(0, 16)}…)`,
    `runtime   onnxruntime-node ${p.onnxruntimeVersion} on ${p.ep}:${p.deviceId} (worker pid ${p.pid} on ${p.host}, node ${p.node})`,
    `          probe softmax(tanh(xW+b)) = [${p.output.map((v) => v.toFixed(4)).join(', ')}], max |ORT - reference| = ${p.maxAbsError.toExponential(2)}, ${p.sessionMs} ms`,
    `Web UI    ${workflowUiUrl(config, r.workflowId)}`,
  ];
  console.log(lines.join('\n'));
}

async function demoAction(flags: DemoFlags): Promise<void> {
  const config = configFromFlags(flags);
  if (flags.up && config.stack.localTemporal) {
    const status = await stackStatus(config);
    if (!status.healthy) {
      console.error(`stack not healthy (${status.down.join(', ')}); bringing it up`);
      await bringUp(config);
    }
  }
  const categories = flags.categories ? flags.categories.split(',').map((c) => c.trim()).filter(Boolean) : undefined;
  const result = await runDemo(config, { categories }, (id, url) => console.error(`started ${id}\n  ${url}`));
  printResult(config, result);
}

export function registerDemoCommands(program: Command): void {
  const addDemo = (cmd: Command) =>
    withStackFlags(cmd)
      .option('--categories <list>', 'comma-separated Brown genres (default: all)')
      .option('--no-up', 'do not start the local stack when it is down')
      .action(demoAction);
  addDemo(program.command('demo').description('run the demo workflow (dataset stats to S3 on the cpu pool, ORT probe on the gpu pool)'));
  const run = program.command('run').description('run a workflow');
  addDemo(run.command('demo').description('same as `truthgpt demo`'));
}
