// `truthgpt demo` (also `truthgpt run demo`, and `npm start`): brings the local stack up if needed,
// runs the demo pipeline (examples/demo.yaml: a small GPT on Brown non-fiction, 2-worker DiLoCo,
// LoRA on the fiction genres, int8 + eval of the merged model) with live progress, saves the
// report next to the stack's state and prints its path and the Web UI link. `--probe` runs the original demoWorkflow instead (Brown stats + ORT probe, seconds).

import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { s3Settings, workflowUiUrl, type Config } from '../../infra/config';
import { ArtifactStore } from '../../infra/store';
import { stackStatus } from '../../infra/stack-health';
import type { demoWorkflow, DemoResult } from '../../workflows/demo';
import type { LoraOutcome } from '../../workflows/pipeline';
import { connectTemporal } from '../client';
import { specLimits } from '../../spec/limits';
import { TASK_QUEUES } from '../../spec/temporal-names';
import { resultOrExit, summarize, watchRun } from './progress';
import { fetchReport } from './report-commands';
import { readSpecFile, withTruthGPT } from './run-commands';
import { bringUp, configFromFlags, withStackFlags, type StackFlags } from './stack-commands';
import { UsageError } from './usage-error';

export interface DemoFlags extends StackFlags {
  categories?: string;
  up: boolean;
  probe?: boolean;
  spec: string;
}

/** The demo pipeline's spec, shipped with the package. */
export const DEMO_SPEC = path.resolve(__dirname, '../../examples/demo.yaml');

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

/** Runs the demo pipeline to the end; returns the local path of its HTML report (null if it failed). */
export async function runDemoPipeline(config: Config, specFile = DEMO_SPEC): Promise<{ workflowId: string; reportFile: string } | null> {
  const parsed = await readSpecFile(specFile, specLimits(config.runtime.workerMemoryGb), config);
  if (parsed.kind !== 'pipeline') throw new UsageError(`${specFile}: the demo needs a PipelineSpec (with a training section)`);
  return withTruthGPT(config, async (tg) => {
    const run = await tg.startPipeline(parsed.spec);
    console.error(`started ${run.workflowId}\n  ${run.uiUrl}`);
    await watchRun(run);
    const r = await resultOrExit(run);
    if (!r) return null;
    console.log(summarize(r, run.uiUrl, config.s3.bucket, { links: false }));
    if (r.lora) console.log(`\n${loraLine(r.lora, config.s3.bucket)}`);
    const store = new ArtifactStore(s3Settings(config));
    try {
      const { html } = await fetchReport(store, run.workflowId);
      const reportFile = path.resolve(config.stack.stateDir, 'reports', `${run.workflowId}.html`);
      fs.mkdirSync(path.dirname(reportFile), { recursive: true });
      fs.writeFileSync(reportFile, html);
      console.log(`\nreport    ${reportFile}  (s3://${config.s3.bucket}/${r.reportKey})\nWeb UI    ${run.uiUrl}`);
      return { workflowId: run.workflowId, reportFile };
    } finally {
      store.close();
    }
  });
}

/** The LoRA stage in one line: what fine-tuning did to the held-out loss, and where the adapter is. */
export function loraLine(l: LoraOutcome, bucket: string): string {
  return [
    `LoRA      val loss ${l.valLossBefore.toFixed(4)} → ${l.valLossAfter.toFixed(4)} (perplexity ${l.perplexityBefore.toFixed(2)} → ${l.perplexityAfter.toFixed(2)}) on ${l.datasetPrefix}`,
    `          ${l.trainable} of ${l.total} parameters trained (${(l.trainableFraction * 100).toFixed(2)}%), base weights unchanged; adapter s3://${bucket}/${l.adapterKey}`,
  ].join('\n');
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
  if (!flags.probe) {
    await runDemoPipeline(config, flags.spec);
    return;
  }
  const categories = flags.categories ? flags.categories.split(',').map((c) => c.trim()).filter(Boolean) : undefined;
  const result = await runDemo(config, { categories }, (id, url) => console.error(`started ${id}\n  ${url}`));
  printResult(config, result);
}

export function registerDemoCommands(program: Command): void {
  const addDemo = (cmd: Command) =>
    withStackFlags(cmd)
      .option('--spec <file>', 'PipelineSpec to run instead of the demo one', DEMO_SPEC)
      .option('--probe', 'run the quick demoWorkflow instead (Brown stats to S3 on the cpu pool, ORT probe on the gpu pool)')
      .option('--categories <list>', 'with --probe: comma-separated Brown genres (default: all)')
      .option('--no-up', 'do not start the local stack when it is down')
      .action(demoAction);
  addDemo(program.command('demo').description('run the demo pipeline: small GPT on Brown non-fiction, 2-worker DiLoCo, LoRA on the fiction genres, int8 quantization, evaluation, report'));
  const run = program.command('run').description('run a workflow');
  addDemo(run.command('demo').description('same as `truthgpt demo`'));
}
