// DiLoCo quality at equal tokens (issue 14, part 4): W = 1, 2, 4 workers, each with batch B/W,
// H inner AdamW steps per round, the outer optimizer after every round; val loss per outer step.
// Runs in one process directly on the engine (the same compiled step, runShard, OuterAggregator
// and LmEvaluator the activities call; no Temporal, no S3): the question is the algorithm's, and
// 2 shared cores cannot afford the orchestration on top. Workers of a round run one after another.
//
//   npx tsx bench/diloco-quality.ts [--rounds 20] [--H 10] [--batch 8] [--context 128]
//        [--workers 1,2,4] [--outer nesterov:0.7:0.9] [--schedule constant] [--seeds 0]
//        [--model 6x384] [--compression none] [--out name]
//   → one JSON line per outer step on stdout; bench/out/<name>.json after every outer step
//
// --outer, --schedule and --seeds take comma-separated lists; every combination with every W runs.
//   --outer    average (plain averaging; W=1: plain AdamW) | nesterov:<lr>:<momentum>[:cos]
//              (`cos`: the outer lr decays as ½(1 + cos(π·r/rounds)) over the rounds)
//   --schedule constant | cosine:<warmup steps>:<min lr as a fraction of lr>, the engine's
//              warmup_cosine over the whole run (decay_steps = rounds × H). The step the graph
//              reads is the GLOBAL step round × H + local step, as trainShard feeds it, so every
//              worker's inner lr matches W = 1's at equal tokens.
//
// Resumable: a run already complete in bench/out/<name>.json is skipped, and a run that was
// stopped continues from bench/out/<name>.<run>.state.safetensors (global weights, outer momentum,
// every worker's weights and AdamW state, written after each outer step), so a killed run loses
// at most one outer step. Resumed runs end with the same numbers as uninterrupted ones.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readSafetensors, writeSafetensors } from '../engine/checkpoint/safetensors';
import { readBrown } from '../engine/data/corpus';
import { ByteTokenizer } from '../engine/data/tokenizer';
import type { TensorData } from '../engine/graph/ir';
import { initParams } from '../engine/models/blocks';
import { GptConfigSchema, gptParams } from '../engine/models/gpt';
import { OptimConfigSchema, type Schedule } from '../engine/optim';
import { LmEvaluator } from '../engine/train/evaluate';
import { compressDelta, decodeDelta, type OuterCompression } from '../engine/train/compress';
import { OuterAggregator, type OuterOptimConfig } from '../engine/train/outer';
import { compileLmTrainStep, runShard, zeroState } from '../engine/train/shard';

interface OuterChoice {
  cfg: OuterOptimConfig;
  /** Cosine decay of the outer lr over the rounds. */
  cos: boolean;
}

function parseOuter(s: string): OuterChoice {
  const [kind, lr, mu, decay] = s.split(':');
  if (kind === 'average' && lr === undefined) return { cfg: { kind: 'average' }, cos: false };
  if (kind === 'nesterov' && (decay === undefined || decay === 'cos')) {
    const cfg: OuterOptimConfig = { kind: 'nesterov', lr: Number(lr ?? 0.7), momentum: Number(mu ?? 0.9) };
    if (Number.isFinite(cfg.lr) && cfg.lr > 0 && Number.isFinite(cfg.momentum) && cfg.momentum >= 0 && cfg.momentum < 1) return { cfg, cos: decay === 'cos' };
  }
  throw new Error(`--outer: cannot read "${s}" (average | nesterov:<lr>:<momentum>[:cos])`);
}

function parseSchedule(s: string, steps: number, lr: number): Schedule {
  if (s === 'constant') return { kind: 'constant' };
  const [kind, warmup, minFrac] = s.split(':');
  const w = Number(warmup);
  const f = Number(minFrac);
  if (kind !== 'cosine' || !Number.isInteger(w) || w < 0 || w >= steps || !(f >= 0 && f <= 1)) {
    throw new Error(`--schedule: cannot read "${s}" (constant | cosine:<warmup steps < ${steps}>:<min lr fraction 0..1>)`);
  }
  return { kind: 'warmup_cosine', warmup_steps: w, decay_steps: steps, min_lr: f * lr };
}

interface CurvePoint {
  round: number;
  valLoss: number;
  /** Mean over workers of the mean train loss of the round's inner steps. */
  trainLoss: number;
  /** The same per worker (shard). */
  shardLoss: number[];
  /** Inner lr at the round's last step; outer lr of the round's step. */
  innerLr: number;
  outerLr: number;
  pseudoGradNorm: number;
}

interface QualityRun {
  key: string;
  outer: string;
  schedule: string;
  seed: number;
  W: number;
  batchPerWorker: number;
  H: number;
  rounds: number;
  lr: number;
  model: string;
  context: number;
  compression: string;
  done: boolean;
  finalValLoss: number;
  deltaBytesPerRound: number;
  curve: CurvePoint[];
  /** Seconds of this process's work on the run (a resumed run adds up its pieces). */
  seconds: number;
  loadavg: number[][];
}

function f32(t: TensorData | undefined, what: string): Float32Array {
  if (!t || !(t.data instanceof Float32Array)) throw new Error(`${what}: missing or not float32`);
  return t.data;
}

async function main() {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '20' },
      H: { type: 'string', default: '10' },
      batch: { type: 'string', default: '8' },
      context: { type: 'string', default: '128' },
      model: { type: 'string', default: '6x384' },
      workers: { type: 'string', default: '1,2,4' },
      outer: { type: 'string', default: 'nesterov:0.7:0.9' },
      schedule: { type: 'string', default: 'constant' },
      seeds: { type: 'string', default: '0' },
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
  const lr = Number(values.lr);
  const compression = values.compression as OuterCompression;
  const [nLayer, nEmbd] = values.model.split('x').map(Number);
  if (!Number.isInteger(nLayer) || !Number.isInteger(nEmbd) || nEmbd % 64 !== 0) throw new Error(`--model: cannot read "${values.model}" (<layers>x<embd>, embd a multiple of 64)`);
  const model = GptConfigSchema.parse({ vocab_size: 259, block_size: T, n_layer: nLayer, n_head: nEmbd / 64, n_embd: nEmbd });
  const outDir = path.join(__dirname, 'out');
  const outFile = path.join(outDir, `${values.out}.json`);
  fs.mkdirSync(outDir, { recursive: true });
  const runs: QualityRun[] = fs.existsSync(outFile) ? (JSON.parse(fs.readFileSync(outFile, 'utf8')) as { runs: QualityRun[] }).runs : [];
  const meta = () => ({ model: `${nLayer}L×${nEmbd}, byte vocab 259`, context: T, batch, H, rounds, lr, compression, threads, evalBatches: Number(values.evalBatches), cpus: os.cpus()[0]?.model, at: new Date().toISOString() });
  const save = () => {
    fs.writeFileSync(`${outFile}.tmp`, JSON.stringify({ meta: meta(), runs }, null, 2));
    fs.renameSync(`${outFile}.tmp`, outFile);
  };

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

  for (const seed of values.seeds.split(',').map(Number)) {
    for (const scheduleSpec of values.schedule.split(',')) {
      const schedule = parseSchedule(scheduleSpec, rounds * H, lr);
      const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr, weight_decay: 0.01 }, grad_clip: 1, schedule });
      for (const outerSpec of values.outer.split(',')) {
        const outer = parseOuter(outerSpec);
        for (const W of values.workers.split(',').map(Number)) {
          const key = [values.model, `T${T}`, `B${batch}`, `H${H}`, `R${rounds}`, `lr${lr}`, scheduleSpec, outerSpec, `W${W}`, `seed${seed}`, compression].join(' ');
          const run = runs.find((r) => r.key === key);
          if (run?.done) {
            console.log(`skip (done): ${key}`);
            continue;
          }
          await runOne(key, W, seed, outer, outerSpec, scheduleSpec, optim, run);
        }
      }
    }
  }
  console.table(runs.map(({ curve: _c, loadavg: _l, key: _k, ...r }) => r));

  async function runOne(key: string, W: number, seed: number, outer: OuterChoice, outerSpec: string, scheduleSpec: string, optim: ReturnType<typeof OptimConfigSchema.parse>, prior: QualityRun | undefined) {
    const B = batch / W;
    if (!Number.isInteger(B)) throw new Error(`--batch ${batch} is not divisible by W=${W}`);
    const stateFile = path.join(outDir, `${values.out}.${createHash('sha256').update(key).digest('hex').slice(0, 12)}.state.safetensors`);
    const shards = Array.from({ length: W }, (_, k) => encode(train.filter((_, i) => i % W === k)));
    const c = await compileLmTrainStep({ model, optim, batchSize: B, contextLength: T }, { intraOpThreads: threads });
    let global = new Map(initParams(gptParams(model), seed));
    let momentum: Map<string, Float32Array> | undefined;
    const runners = shards.map(() => c.runner({ step: 0, params: Object.fromEntries(global), state: zeroState(c.step) }));
    let run: QualityRun;
    if (prior && fs.existsSync(stateFile)) {
      // Continue after the last outer step whose state was written (the JSON may be one step ahead).
      const st = readSafetensors(fs.readFileSync(stateFile), stateFile);
      const r0 = Number(st.metadata.round);
      global = new Map([...global.keys()].map((n) => [n, f32(st.tensors.get(`global.${n}`), `${stateFile}: global.${n}`)]));
      if (st.tensors.has(`momentum.${[...global.keys()][0]}`)) momentum = new Map([...global.keys()].map((n) => [n, f32(st.tensors.get(`momentum.${n}`), `${stateFile}: momentum.${n}`)]));
      runners.forEach((runner, k) => {
        runner.setState(Object.fromEntries(Object.keys(runner.getState()).map((s) => [s, f32(st.tensors.get(`w${k}.${s}`), `${stateFile}: w${k}.${s}`)])));
        runner.setStep(r0 * H);
      });
      run = prior;
      run.curve = run.curve.filter((p) => p.round <= r0);
      console.log(`resume at outer step ${r0}: ${key}`);
    } else {
      const v0 = await evaluator.evaluate(global, val, evalOpts);
      run = { key, outer: outerSpec, schedule: scheduleSpec, seed, W, batchPerWorker: B, H, rounds, lr, model: values.model, context: T, compression, done: false, finalValLoss: NaN, deltaBytesPerRound: 0, curve: [{ round: 0, valLoss: v0.loss, trainLoss: NaN, shardLoss: [], innerLr: NaN, outerLr: NaN, pseudoGradNorm: NaN }], seconds: 0, loadavg: [] };
      if (prior) runs.splice(runs.indexOf(prior), 1);
      runs.push(run);
    }
    let t0 = performance.now();
    let bytes = run.deltaBytesPerRound * (run.curve.length - 1);
    for (let r = run.curve.length - 1; r < rounds; r++) {
      const agg = new OuterAggregator(global);
      const shardLoss: number[] = [];
      let innerLr = NaN;
      for (let k = 0; k < W; k++) {
        const runner = runners[k];
        runner.setParams(Object.fromEntries(global));
        const res = await runShard({ runner, ids: shards[k], seed, shard: k, batchSize: B, contextLength: T, endStep: (r + 1) * H });
        shardLoss.push(res.history.reduce((a, m) => a + m.loss, 0) / res.history.length);
        innerLr = res.history.at(-1)!.lr;
        const local = new Map(Object.entries(runner.getParams()));
        if (compression === 'none') agg.add(local, `worker ${k}`);
        else {
          const d = compressDelta(global, local, compression, `worker ${k}`);
          bytes += d.bytes;
          agg.addDelta(decodeDelta(d.tensors, `worker ${k}`), `worker ${k}`);
        }
      }
      const cfg: OuterOptimConfig = outer.cfg.kind === 'nesterov' && outer.cos ? { ...outer.cfg, lr: outer.cfg.lr * 0.5 * (1 + Math.cos((Math.PI * r) / rounds)) } : outer.cfg;
      const out = agg.apply(cfg, momentum);
      global = out.weights;
      momentum = out.momentum.size ? out.momentum : undefined;
      const v = await evaluator.evaluate(global, val, evalOpts);
      const trainLoss = shardLoss.reduce((a, b) => a + b, 0) / W;
      run.curve.push({ round: r + 1, valLoss: v.loss, trainLoss, shardLoss, innerLr, outerLr: cfg.kind === 'nesterov' ? cfg.lr : NaN, pseudoGradNorm: out.pseudoGradNorm });
      run.seconds += (performance.now() - t0) / 1000;
      t0 = performance.now();
      run.loadavg.push(os.loadavg());
      run.deltaBytesPerRound = bytes / (r + 1);
      run.finalValLoss = v.loss;
      run.done = r + 1 === rounds;
      save();
      console.log(JSON.stringify({ outer: outerSpec, schedule: scheduleSpec, seed, W, round: r + 1, valLoss: v.loss, trainLoss, innerLr, s: run.seconds, load: os.loadavg()[0] }));
      if (run.done) fs.rmSync(stateFile, { force: true });
      else writeState(stateFile, r + 1, global, momentum, runners.map((x) => x.getState()));
    }
    await c.session.release();
  }
}

function writeState(file: string, round: number, global: Map<string, Float32Array>, momentum: Map<string, Float32Array> | undefined, states: Record<string, Float32Array>[]) {
  const t = new Map<string, TensorData>();
  const put = (name: string, a: Float32Array) => t.set(name, { dtype: 'float32', dims: [a.length], data: a });
  for (const [n, a] of global) put(`global.${n}`, a);
  for (const [n, a] of momentum ?? []) put(`momentum.${n}`, a);
  states.forEach((s, k) => Object.entries(s).forEach(([n, a]) => put(`w${k}.${n}`, a)));
  fs.writeFileSync(`${file}.tmp`, writeSafetensors(t, { round: String(round) }));
  fs.renameSync(`${file}.tmp`, file);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
