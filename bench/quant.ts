// Quantization benchmark: `npx tsx bench/quant.ts [kernels|e2e|decode|all] [--threads N]`.
// Prints tables and writes bench/out/quant-<section>.json. Never a timed test.
//   kernels – one Linear (M, K) @ (K, N): fp32 MatMul vs int8 DynamicQuantizeMatMul vs
//             DynamicQuantizeLinear+MatMulInteger vs S8S8 QDQ vs int4 MatMulNBits;
//   e2e     – whole GPT forward (nanoGPT CPU config 4L×128 ctx 64 batch 12, and 6L×384 ctx 256
//             batch 4, random init): latency p50/p95 per batch, speedup, weight bytes; plus
//             generation tokens/s with and without the KV cache at context 256;
//   decode  – gpt2-small-sized weights (12L×768, vocab 50257), batch 1 with the KV cache:
//             fp32 vs int8 vs int4 tokens/s (random init: speed only).

import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import '../engine/graph';
import { Graph } from '../engine/graph/ir';
import { serializeModel } from '../engine/graph/onnx';
import { Decoder, lmFeeds, measureSpeed } from '../engine/eval';
import { initParams, mulberry32 } from '../engine/models/blocks';
import { decoderInfo, exportGpt } from '../engine/models/export';
import { GptConfigSchema, gptParams, type GptConfig } from '../engine/models/gpt';
import { quantizeGraph, type QuantConfigInput } from '../engine/quant';
import { weightBytes } from '../engine/quant/rewrite';
import { createSession, type SessionConfig } from '../engine/runtime';

const OUT = path.join(__dirname, 'out');

function randn(n: number, seed: number, std: number): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r()) * std);
}

async function medianMs(model: Uint8Array, feeds: Record<string, ort.Tensor>, cfg: SessionConfig, runs: number): Promise<number> {
  const s = await createSession(model, { graphOptimizationLevel: 'all', ...cfg });
  const r = await measureSpeed(s, [feeds], 1, { warmup: 3, runs });
  await s.release();
  return r.p50Ms;
}

const VARIANTS: [string, QuantConfigInput | null][] = [
  ['fp32', null],
  ['int8 DynamicQuantizeMatMul', { method: 'int8-dynamic', kernel: 'dynamic-quantize-matmul', exclude: [] }],
  ['int8 DQL+MatMulInteger', { method: 'int8-dynamic', kernel: 'matmul-integer', exclude: [] }],
  ['int8 QDQ S8S8', { method: 'int8-static', exclude: [] }],
  ['int4 block32', { method: 'int4', blockSize: 32, exclude: [] }],
  ['int4 block32 acc4', { method: 'int4', blockSize: 32, accuracyLevel: 4, exclude: [] }],
];

async function kernels(cfg: SessionConfig): Promise<unknown[]> {
  const rows: unknown[] = [];
  for (const [M, K, N] of [
    [1, 768, 3072],
    [64, 384, 1536],
    [256, 384, 1536],
    [1024, 384, 1536],
  ]) {
    const g = new Graph('linear');
    const x = g.input('x', 'float32', ['rows', K]);
    g.output(g.op('MatMul', [x, g.initializer('fc.weight', { dtype: 'float32', dims: [K, N], data: randn(K * N, 1, 0.02) })], {}, { name: 'fc' })[0], 'y');
    const feeds = { x: new ort.Tensor('float32', randn(M * K, 2, 1), [M, K]) };
    const row: Record<string, number | string> = { shape: `${M}x${K}x${N}` };
    let base = 0;
    for (const [name, q] of VARIANTS) {
      const model = q ? serializeModel((await quantizeGraph(g, q, { calibration: [feeds], sessionConfig: cfg })).graph).model : serializeModel(g).model;
      const ms = await medianMs(model, feeds, cfg, M >= 256 ? 30 : 200);
      if (!q) base = ms;
      row[name] = `${ms.toFixed(3)} ms (${(base / ms).toFixed(2)}×)`;
    }
    console.table([row]);
    rows.push(row);
  }
  return rows;
}

const NANO_CPU = GptConfigSchema.parse({ vocab_size: 65, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128 });
const MEDIUM = GptConfigSchema.parse({ vocab_size: 259, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 });

async function e2e(cfg: SessionConfig): Promise<unknown[]> {
  const rows: unknown[] = [];
  for (const [label, gcfg, B] of [
    ['nanoGPT CPU 4L×128 ctx64 b12', NANO_CPU, 12],
    ['6L×384 ctx256 b4', MEDIUM, 4],
  ] as [string, GptConfig, number][]) {
    const T = gcfg.block_size;
    const fp = exportGpt(gcfg, initParams(gptParams(gcfg), 1));
    const r = mulberry32(3);
    const ids = BigInt64Array.from({ length: B * T }, () => BigInt(Math.floor(r() * gcfg.vocab_size)));
    const feeds = lmFeeds(fp, ids, [B, T]);
    let base = 0;
    for (const [name, q] of [VARIANTS[0], ...VARIANTS.slice(1).map(([n, c]) => [n, { ...c, exclude: undefined }] as [string, QuantConfigInput])]) {
      const { graph, report } = q ? await quantizeGraph(fp, q, { calibration: [feeds], sessionConfig: cfg }) : { graph: fp, report: null };
      const s = await createSession(serializeModel(graph).model, { graphOptimizationLevel: 'all', ...cfg });
      const sp = await measureSpeed(s, [feeds], B * T, { warmup: 2, runs: 10 });
      await s.release();
      if (!q) base = sp.p50Ms;
      const row = {
        model: label,
        variant: name,
        p50Ms: +sp.p50Ms.toFixed(2),
        p95Ms: +sp.p95Ms.toFixed(2),
        speedup: +(base / sp.p50Ms).toFixed(2),
        tokensPerSec: Math.round(sp.tokensPerSec),
        weightMB: +((report?.weightBytesAfter ?? weightBytes(fp)) / 1e6).toFixed(2),
        compression: report ? +report.compression.toFixed(2) : 1,
      };
      rows.push(row);
    }
  }
  console.table(rows);
  // Generation at context 256: prompt of 32, 224 new tokens, batch 1.
  const w = initParams(gptParams(MEDIUM), 1);
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7) % 256);
  const gen: unknown[] = [];
  for (const kv of [false, true]) {
    const d = await Decoder.create(exportGpt(MEDIUM, w, { kvCache: kv }), decoderInfo(MEDIUM, kv), cfg);
    const t0 = performance.now();
    const out = await d.generate(prompt, { maxNewTokens: 224 });
    const s = (performance.now() - t0) / 1000;
    await d.release();
    gen.push({ model: '6L×384', cache: kv, newTokens: out.length, tokensPerSec: +(out.length / s).toFixed(1) });
  }
  console.table(gen);
  return [...rows, ...gen];
}

async function decode(cfg: SessionConfig): Promise<unknown[]> {
  const gcfg = GptConfigSchema.parse({ vocab_size: 50257, block_size: 1024, n_layer: 12, n_head: 12, n_embd: 768 });
  const fp = exportGpt(gcfg, initParams(gptParams(gcfg), 1), { kvCache: true });
  const info = decoderInfo(gcfg, true);
  const prompt = Array.from({ length: 16 }, (_, i) => i * 11);
  const rows: unknown[] = [];
  let base = 0;
  for (const [name, q] of [
    ['fp32', null],
    ['int8 DynamicQuantizeMatMul', { method: 'int8-dynamic' }],
    ['int4 block32 acc4', { method: 'int4', blockSize: 32, accuracyLevel: 4 }],
    ['int4 block32 acc4 + head', { method: 'int4', blockSize: 32, accuracyLevel: 4, exclude: [] }],
  ] as [string, QuantConfigInput | null][]) {
    const graph = q ? (await quantizeGraph(fp, q)).graph : fp;
    const d = await Decoder.create(graph, info, cfg);
    await d.generate(prompt, { maxNewTokens: 4 }); // warm-up
    const t0 = performance.now();
    const n = (await d.generate(prompt, { maxNewTokens: 48 })).length;
    const tps = n / ((performance.now() - t0) / 1000);
    await d.release();
    if (!q) base = tps;
    rows.push({ model: 'gpt2-small size, batch 1, KV cache', variant: name, tokensPerSec: +tps.toFixed(1), speedup: +(tps / base).toFixed(2) });
    console.table([rows[rows.length - 1]]);
  }
  return rows;
}

async function main(): Promise<void> {
  const section = process.argv[2] ?? 'all';
  const ti = process.argv.indexOf('--threads');
  const cfg: SessionConfig = { intraOpThreads: ti > 0 ? Number(process.argv[ti + 1]) : 2 };
  fs.mkdirSync(OUT, { recursive: true });
  const run: Record<string, (c: SessionConfig) => Promise<unknown[]>> = { kernels, e2e, decode };
  const names = section === 'all' ? Object.keys(run) : [section];
  for (const n of names) {
    if (!run[n]) throw new Error(`bench quant: unknown section "${n}" (kernels | e2e | decode | all)`);
    const rows = await run[n](cfg);
    fs.writeFileSync(path.join(OUT, `quant-${n}.json`), JSON.stringify({ threads: cfg.intraOpThreads, rows }, null, 2));
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
