// Generation benchmark: `npx tsx bench/generate.ts [--threads N] [--new N]`. Prints a table and
// writes bench/out/generate.json. Never a timed test. Random init: speed only.
//   GPT 6L×384 at block_size 256, batch 1, a 32-token prompt and --new tokens (default 768, three
//   times block_size): the KV cache with the default window (restart at ¾·block_size), the cache
//   with windowKeep = block_size (nanoGPT's crop every step: a block_size prefill per token), and
//   no cache. The window policy (engine/eval/generate.ts) is the same for all three.
//   T5 4 layers × 256 (d_ff 1024, 4 heads × 64), a 64-token source and 64 new tokens: encoder once
//   and a cached decoder, against the cache-free graph rerun per token.

import * as fs from 'node:fs';
import * as path from 'node:path';
import '../engine/graph';
import { Decoder, T5Generator } from '../engine/eval';
import { initParams } from '../engine/models/blocks';
import { decoderInfo, exportGpt } from '../engine/models/export';
import { GptConfigSchema, gptParams } from '../engine/models/gpt';
import { t5Params, T5ConfigSchema } from '../engine/models/t5';
import type { SessionConfig } from '../engine/runtime';

const OUT = path.join(__dirname, 'out');

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

async function gpt(cfg: SessionConfig, newTokens: number): Promise<Record<string, unknown>[]> {
  const gcfg = GptConfigSchema.parse({ vocab_size: 512, block_size: 256, n_layer: 6, n_head: 6, n_embd: 384 });
  const w = initParams(gptParams(gcfg), 1);
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7) % 512);
  const rows: Record<string, unknown>[] = [];
  let reference: number[] | null = null;
  for (const [label, kv, keep] of [
    ['KV cache, window restarts at 192', true, undefined],
    ['KV cache, windowKeep 256 (crop every step)', true, 256],
    ['no cache', false, undefined],
  ] as [string, boolean, number | undefined][]) {
    const d = await Decoder.create(exportGpt(gcfg, w, { kvCache: kv }), decoderInfo(gcfg, kv), cfg);
    await d.generate(prompt, { maxNewTokens: 4 }); // warm-up
    const t0 = performance.now();
    const r = await d.decode(prompt, { maxNewTokens: newTokens, windowKeep: keep });
    const s = (performance.now() - t0) / 1000;
    await d.release();
    if (keep === undefined) {
      if (reference && r.tokens.join() !== reference.join()) throw new Error('bench generate: cached and uncached greedy tokens differ');
      reference = r.tokens;
    }
    rows.push({ model: 'GPT 6L×384, block 256', decoding: label, newTokens: r.tokens.length, slides: r.slides, seconds: +s.toFixed(2), tokensPerSec: +(r.tokens.length / s).toFixed(1) });
    console.table([rows[rows.length - 1]]);
  }
  return rows;
}

async function t5(cfg: SessionConfig): Promise<Record<string, unknown>[]> {
  const tcfg = T5ConfigSchema.parse({ vocab_size: 512, d_model: 256, d_kv: 64, d_ff: 1024, num_layers: 4, num_heads: 4 });
  const w = initParams(t5Params(tcfg), 1);
  const src = Array.from({ length: 64 }, (_, i) => (i * 13 + 2) % 512);
  const rows: Record<string, unknown>[] = [];
  for (const kvCache of [true, false]) {
    const g = await T5Generator.create(tcfg, w, { kvCache, session: cfg });
    await g.generate(src, { maxNewTokens: 2 }); // warm-up
    const t0 = performance.now();
    const n = (await g.generate(src, { maxNewTokens: 64 })).length;
    const s = (performance.now() - t0) / 1000;
    await g.release();
    rows.push({ model: 'T5 4L×256, source 64', decoding: kvCache ? 'encoder once + KV cache' : 'no cache', newTokens: n, seconds: +s.toFixed(2), tokensPerSec: +(n / s).toFixed(1) });
    console.table([rows[rows.length - 1]]);
  }
  return rows;
}

async function main(): Promise<void> {
  const cfg: SessionConfig = { intraOpThreads: arg('--threads', 1) };
  fs.mkdirSync(OUT, { recursive: true });
  const rows = [...(await gpt(cfg, arg('--new', 768))), ...(await t5(cfg))];
  console.table(rows);
  fs.writeFileSync(path.join(OUT, 'generate.json'), JSON.stringify({ threads: cfg.intraOpThreads, rows }, null, 2));
}

void main();
