// `npm run bench -- ort-stall [--layers 12] [--embd 768] [--vocab 16384] [--batch 4] [--context 128]`:
// how long onnxruntime-node keeps the event loop from turning, on a ~100M-parameter GPT. An
// activity can only heartbeat when its event loop turns, so the longest of these stalls is the
// silence a heartbeat timeout must cover (README, "Heartbeat timeouts").
//
// A 20 ms interval timer runs throughout; each phase's stall is the longest gap between two of
// its ticks while the phase is awaited. Phases: building the training graph (our code, sync),
// serializing it, InferenceSession.create of the step, the first and later training steps
// (session.run), exporting the inference graph, its session create and one forward pass.

import * as os from 'node:os';
import { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { serializeModel } from '../engine/graph/onnx';
import { tensor } from '../engine/graph/ir';
import { countParams, initParams, mulberry32 } from '../engine/models/blocks';
import { exportGpt } from '../engine/models/export';
import { GptConfigSchema, gptParams } from '../engine/models/gpt';
import { OptimConfigSchema } from '../engine/optim';
import { createSession } from '../engine/runtime/session';
import { stepGraph } from '../engine/train/ksteps';
import { buildLmTrainStep, zeroState } from '../engine/train/shard';
import { StepRunner } from '../engine/runtime/step-runner';

const program = new Command('ort-stall')
  .option('--layers <n>', 'n_layer', '12')
  .option('--embd <n>', 'n_embd', '768')
  .option('--vocab <n>', 'vocab_size', '16384')
  .option('--batch <n>', 'batch size', '4')
  .option('--context <n>', 'context length', '128')
  .option('--steps <n>', 'training steps', '3')
  .option('--threads <n>', 'intra-op threads', '2')
  .parse(process.argv);
const o = program.opts<{ layers: string; embd: string; vocab: string; batch: string; context: string; steps: string; threads: string }>();

/** Runs `fn`, returning its result, its wall time and the longest gap between two ticks of a 20 ms timer meanwhile. */
async function phase<T>(rows: { phase: string; wallMs: number; stallMs: number }[], name: string, fn: () => Promise<T> | T): Promise<T> {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const t = performance.now();
    worst = Math.max(worst, t - last);
    last = t;
  }, 20);
  // Let the timer start ticking before the phase begins.
  await new Promise((r) => setTimeout(r, 50));
  last = performance.now();
  const start = performance.now();
  const result = await fn();
  const end = performance.now();
  worst = Math.max(worst, end - last);
  clearInterval(timer);
  rows.push({ phase: name, wallMs: end - start, stallMs: worst });
  return result;
}

async function main(): Promise<void> {
  const cfg = GptConfigSchema.parse({ vocab_size: Number(o.vocab), n_layer: Number(o.layers), n_head: Math.max(1, Number(o.embd) / 64), n_embd: Number(o.embd), block_size: Number(o.context) });
  const [B, T, threads] = [Number(o.batch), Number(o.context), Number(o.threads)];
  const params = gptParams(cfg);
  const rows: { phase: string; wallMs: number; stallMs: number }[] = [];
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-4 } });
  const step = await phase(rows, 'build training graph (ours)', () => buildLmTrainStep({ model: cfg, optim, batchSize: B, contextLength: T }));
  const bytes = await phase(rows, 'serialize training graph (ours)', () => serializeModel(stepGraph(step, 1)).model);
  const session = await phase(rows, 'InferenceSession.create (train step)', () => createSession(bytes, { graphOptimizationLevel: 'all', intraOpThreads: threads }));
  const weights = initParams(params, 1);
  const runner = new StepRunner(session, { params: Object.fromEntries(weights), state: zeroState(step), step: 0, stepsPerRun: 1 });
  const r = mulberry32(3);
  const ids = () => tensor('int64', [B, T], Array.from({ length: B * T }, () => Math.floor(r() * cfg.vocab_size)));
  for (let i = 0; i < Number(o.steps); i++) await phase(rows, `session.run (train step ${i + 1})`, () => runner.run({ tokens: ids(), targets: ids() }));
  await session.release();
  const fwd = await phase(rows, 'export + serialize inference graph (ours)', () => serializeModel(exportGpt(cfg, weights)).model);
  const inf = await phase(rows, 'InferenceSession.create (inference)', () => createSession(fwd, { intraOpThreads: threads }));
  const feeds = { input_ids: new ort.Tensor('int64', BigInt64Array.from(Array.from({ length: B * T }, () => BigInt(Math.floor(r() * cfg.vocab_size)))), [B, T]) };
  await phase(rows, 'session.run (forward)', () => inf.run(feeds));
  await inf.release();
  const n = countParams(params);
  console.log(`GPT ${cfg.n_layer}L × ${cfg.n_embd}, vocab ${cfg.vocab_size}: ${(n / 1e6).toFixed(1)}M parameters, batch ${B} × ${T}, ${threads} intra-op threads; load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('| phase | wall ms | longest event-loop stall ms |\n|---|---:|---:|');
  for (const row of rows) console.log(`| ${row.phase} | ${row.wallMs.toFixed(0)} | ${row.stallMs.toFixed(0)} |`);
}

main().catch((e: Error) => {
  console.error(e.stack ?? e.message);
  process.exit(1);
});
