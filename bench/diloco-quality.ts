// DiLoCo quality at equal tokens (issue 14, part 4): W = 1, 2, 4 workers, each with batch B/W,
// H inner AdamW steps per round, the outer optimizer after every round; val loss per outer step.
// Runs in one process directly on the engine (the same compiled step, runShard, OuterAggregator
// and LmEvaluator the activities call; no Temporal, no S3): the question is the algorithm's, and
// 2 shared cores cannot afford the orchestration on top. Workers of a round run one after another.
//
//   npx tsx bench/diloco-quality.ts [--rounds 20] [--H 10] [--batch 8] [--context 128]
//        [--workers 1,2,4] [--outer nesterov:0.7:0.9] [--compression none] [--out name]
//   → one JSON line per outer step on stdout, bench/out/<name>.json at the end
//
// --outer takes a comma-separated list; `average` is plain averaging (W=1: plain AdamW).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readBrown } from '../engine/data/corpus';
import { ByteTokenizer } from '../engine/data/tokenizer';
import { initParams } from '../engine/models/blocks';
import { GptConfigSchema, gptParams } from '../engine/models/gpt';
import { OptimConfigSchema } from '../engine/optim';
import { LmEvaluator } from '../engine/train/evaluate';
import { compressDelta, decodeDelta, type OuterCompression } from '../engine/train/compress';
import { OuterAggregator, type OuterOptimConfig } from '../engine/train/outer';
import { compileLmTrainStep, runShard, zeroState } from '../engine/train/shard';

function parseOuter(s: string): OuterOptimConfig {
  const [kind, lr, mu] = s.split(':');
  if (kind === 'average') return { kind: 'average' };
  if (kind === 'nesterov') return { kind: 'nesterov', lr: Number(lr ?? 0.7), momentum: Number(mu ?? 0.9) };
  throw new Error(`--outer: unknown "${s}" (average | nesterov:<lr>:<momentum>)`);
}

async function main() {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '20' },
      H: { type: 'string', default: '10' },
      batch: { type: 'string', default: '8' },
      context: { type: 'string', default: '128' },
      workers: { type: 'string', default: '1,2,4' },
      outer: { type: 'string', default: 'nesterov:0.7:0.9' },
      compression: { type: 'string', default: 'none' },
      lr: { type: 'string', default: '1e-3' },
      evalBatches: { type: 'string', default: '16' },
      threads: { type: 'string', default: '1' },
      out: { type: 'string', default: 'diloco-quality' },
    },
  });
  const rounds = Number(values.rounds);
  const H = Number(values.H);
  const batch = Number(values.batch);
  const T = Number(values.context);
  const threads = Number(values.threads);
  const compression = values.compression as OuterCompression;
  const model = GptConfigSchema.parse({ vocab_size: 259, block_size: T, n_layer: 6, n_head: 6, n_embd: 384 });
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: Number(values.lr), weight_decay: 0.01 }, grad_clip: 1 });

  // Brown news + humor + romance + fiction, bytes; every 10th document is validation, the rest
  // go to the W train shards by document index (as prepareDataset assigns by a hash).
  const tok = new ByteTokenizer();
  const docs = [...readBrown(['news', 'humor', 'romance', 'fiction'])];
  const encode = (ds: typeof docs) => {
    const ids: number[] = [];
    for (const d of ds) ids.push(...tok.encode(d.text), tok.eot);
    return Uint16Array.from(ids);
  };
  const val = encode(docs.filter((_, i) => i % 10 === 0));
  const train = docs.filter((_, i) => i % 10 !== 0);
  const evaluator = new LmEvaluator(model, { intraOpThreads: threads });
  const evalOpts = { batchSize: 8, contextLength: T, maxBatches: Number(values.evalBatches) };

  const runs: Record<string, unknown>[] = [];
  for (const outerSpec of values.outer.split(',')) {
    const outer = parseOuter(outerSpec);
    for (const W of values.workers.split(',').map(Number)) {
      const B = batch / W;
      if (!Number.isInteger(B)) throw new Error(`--batch ${batch} is not divisible by W=${W}`);
      const shards = Array.from({ length: W }, (_, k) => encode(train.filter((_, i) => i % W === k)));
      const c = await compileLmTrainStep({ model, optim, batchSize: B, contextLength: T }, { intraOpThreads: threads });
      let global = new Map(initParams(gptParams(model), 0));
      let momentum: Map<string, Float32Array> | undefined;
      const runners = shards.map(() => c.runner({ step: 0, params: Object.fromEntries(global), state: zeroState(c.step) }));
      const curve: { round: number; valLoss: number; trainLoss: number }[] = [];
      const v0 = await evaluator.evaluate(global, val, evalOpts);
      curve.push({ round: 0, valLoss: v0.loss, trainLoss: NaN });
      const t0 = performance.now();
      let bytes = 0;
      for (let r = 0; r < rounds; r++) {
        const agg = new OuterAggregator(global);
        let trainLoss = 0;
        for (let k = 0; k < W; k++) {
          const runner = runners[k];
          runner.setParams(Object.fromEntries(global));
          const res = await runShard({ runner, ids: shards[k], seed: 0, shard: k, batchSize: B, contextLength: T, endStep: (r + 1) * H });
          trainLoss += res.history.reduce((a, m) => a + m.loss, 0) / res.history.length / W;
          const local = new Map(Object.entries(runner.getParams()));
          if (compression === 'none') agg.add(local, `worker ${k}`);
          else {
            const d = compressDelta(global, local, compression, `worker ${k}`);
            bytes += d.bytes;
            agg.addDelta(decodeDelta(d.tensors, `worker ${k}`), `worker ${k}`);
          }
        }
        const out = agg.apply(outer, momentum);
        global = out.weights;
        momentum = out.momentum.size ? out.momentum : undefined;
        const v = await evaluator.evaluate(global, val, evalOpts);
        curve.push({ round: r + 1, valLoss: v.loss, trainLoss });
        console.log(JSON.stringify({ outer: outerSpec, W, round: r + 1, valLoss: v.loss, trainLoss, s: (performance.now() - t0) / 1000 }));
      }
      runs.push({ outer: outerSpec, W, batchPerWorker: B, H, rounds, compression, finalValLoss: curve.at(-1)!.valLoss, deltaBytesPerRound: bytes / rounds, curve, seconds: (performance.now() - t0) / 1000 });
      await c.session.release();
    }
  }
  const meta = { model: '6L×384, byte vocab 259', context: T, batch, H, rounds, lr: Number(values.lr), compression, threads, cpus: os.cpus()[0]?.model, loadavg: os.loadavg(), at: new Date().toISOString() };
  fs.mkdirSync(path.join(__dirname, 'out'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'out', `${values.out}.json`), JSON.stringify({ meta, runs }, null, 2));
  console.table(runs.map(({ curve: _c, ...r }) => r));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
