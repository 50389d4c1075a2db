// DiLoCo benchmark (issue 5): same token budget, W=1 vs W=2 with H=50, on the real local stack
// (Temporal dev server, S3 server, supervised worker processes) in a temp folder on free ports.
// Records final val loss, wall time, and Temporal's share of wall time: the rounds' wall time in
// the workflow vs the same steps run directly in the engine.
//
//   npx tsx bench/diloco.ts [--rounds 8] [--batch 16]     → table on stdout, bench/out/diloco.json

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readBrown } from '../engine/data/corpus';
import { ByteTokenizer } from '../engine/data/tokenizer';
import { initParams } from '../engine/models/blocks';
import { gptParams } from '../engine/models/gpt';
import { compileLmTrainStep, runShard, zeroState } from '../engine/train/shard';
import { loadConfig } from '../infra/config';
import { freePort } from '../infra/ports';
import { stackDown, stackUp } from '../infra/stack';
import { startTraining, waitTraining } from '../sdk/cli/run-commands';
import { connectTemporal } from '../sdk/client';
import { parseTrainingSpec, type TrainingSpecInput } from '../spec/training';

async function main() {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '8' }, batch: { type: 'string', default: '16' } } });
  const rounds = Number(values.rounds);
  const batch = Number(values.batch);
  const H = 50;
  const base = (workers: number): TrainingSpecInput => ({
    name: `bench-w${workers}`,
    model: { preset: 'tiny-gpt', config: { vocab_size: 259 } }, // 2 layers × 64 wide, 4 heads
    dataset: { name: 'brown-bench', corpus: { kind: 'brown', categories: ['news', 'humor', 'romance'] }, valFraction: 0.1 },
    workers,
    rounds,
    innerSteps: H,
    // Same tokens per round: W workers × batch/W sequences.
    batchSize: batch / workers,
    contextLength: 64,
    optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 },
    outer: workers === 1 ? { kind: 'average' } : { kind: 'nesterov', lr: 0.7, momentum: 0.9 },
    evalEvery: rounds,
    evalBatches: 32,
    checkpoint: { everySteps: H, everySeconds: 0 },
    threads: 1,
  });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-bench-'));
  const env = { TRUTHGPT_STATE_DIR: dir, TRUTHGPT_TEMPORAL_PORT: String(await freePort()), TRUTHGPT_UI_PORT: String(await freePort()), TRUTHGPT_S3_PORT: String(await freePort()) };
  const config = loadConfig(env);
  const rows: Record<string, unknown>[] = [];
  try {
    await stackUp(config, { timeoutMs: 240_000 });
    const client = await connectTemporal(config);
    try {
      for (const W of [1, 2]) {
        const t0 = performance.now();
        const id = await startTraining(client, base(W), { workflowId: `bench-w${W}-${Date.now()}` });
        const r = await waitTraining(client, id);
        const wall = performance.now() - t0;
        if (r.status !== 'completed') throw new Error(`W=${W}: ${JSON.stringify(r.error)}`);
        const roundMs = r.trainHistory.reduce((a, p) => a + p.roundMs, 0);
        const shardMs = r.trainHistory.reduce((a, p) => a + p.trainMs * W, 0); // W shards run one after another on the one GPU-pool worker
        rows.push({ W, rounds, H, batchPerWorker: batch / W, tokens: r.tokensSeen, valLoss: r.valHistory.at(-1)!.loss, val0: r.valHistory[0].loss, wallS: wall / 1000, roundsS: roundMs / 1000, shardTrainS: shardMs / 1000 });
      }
    } finally {
      await client.connection.close();
    }
  } finally {
    await stackDown(config).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // The same W=1 steps directly in the engine: no Temporal, no S3, one process.
  const spec = parseTrainingSpec(base(1));
  if (spec.model.family !== 'gpt') throw new Error('bench/diloco trains a GPT');
  const tok = new ByteTokenizer();
  const ids: number[] = [];
  for (const d of readBrown(['news', 'humor', 'romance'])) ids.push(...tok.encode(d.text), tok.eot);
  const c = await compileLmTrainStep({ model: spec.model.config, optim: spec.optimizer, batchSize: batch, contextLength: 64 }, { intraOpThreads: 1 });
  const params = Object.fromEntries(initParams(gptParams(spec.model.config), 0));
  const t0 = performance.now();
  await runShard({ runner: c.runner({ step: 0, params, state: zeroState(c.step) }), ids: Uint16Array.from(ids), seed: 0, shard: 0, batchSize: batch, contextLength: 64, endStep: rounds * H });
  const directS = (performance.now() - t0) / 1000;

  const w1 = rows[0] as { valLoss: number; roundsS: number };
  const w2 = rows[1] as { valLoss: number };
  const summary = {
    directEngineS: directS,
    orchestrationShareW1: (w1.roundsS - directS) / w1.roundsS,
    lossGapW2vsW1: (w2.valLoss - w1.valLoss) / w1.valLoss,
  };
  console.table(rows);
  console.table([summary]);
  fs.mkdirSync(path.join(__dirname, 'out'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'out', 'diloco.json'), JSON.stringify({ rows, summary, cpus: os.cpus().length, at: new Date().toISOString() }, null, 2));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
