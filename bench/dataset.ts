// prepareDataset on a large corpus: throughput and peak memory (issue 4: "memory stays flat on a
// 1 GB corpus"; issue 12: "at least 50 MB/s of text on 2 cores, for byte and BPE tokenizers").
// Builds the corpus from the Brown text (so it is real English, not random bytes), as one file or
// a folder of files, then tokenizes it into shards while sampling RSS. Reports wall-clock MB/s and
// MB per CPU-second of this process (all its threads, from process.cpuUsage), which depends less
// on what else loads a shared machine; the load average is recorded before and after.
//
//   npx tsx bench/dataset.ts [--gb 1] [--layout file|folder] [--tokenizer byte|bpe] [--shards 4]

import { mkdirSync, mkdtempSync, openSync, writeSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { readBrown } from '../engine/data/corpus';
import { prepareDataset } from '../engine/data/dataset';

interface Options {
  gb: string;
  layout: 'file' | 'folder';
  tokenizer: 'byte' | 'bpe';
  shards: string;
  keep?: boolean;
}

/** Writes `bytes` of Brown text (repeated, each copy numbered so documents differ). */
function makeCorpus(dir: string, bytes: number, layout: Options['layout']): string {
  const brown = [...readBrown()].map((d) => d.text).join('\n');
  const unit = Buffer.from(brown);
  const root = join(dir, 'corpus');
  mkdirSync(root, { recursive: true });
  const perFile = layout === 'file' ? bytes : 16 << 20;
  let written = 0;
  let copy = 0;
  for (let f = 0; written < bytes; f++) {
    const fd = openSync(join(root, layout === 'file' ? 'corpus.txt' : `part-${String(f).padStart(4, '0')}.txt`), 'w');
    let inFile = 0;
    while (inFile < perFile && written < bytes) {
      const header = Buffer.from(`\n== copy ${copy++} ==\n`);
      writeSync(fd, header);
      writeSync(fd, unit);
      inFile += header.length + unit.length;
      written += header.length + unit.length;
    }
    closeSync(fd);
  }
  return layout === 'file' ? join(root, 'corpus.txt') : root;
}

function vmHwmMiB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main(o: Options): Promise<void> {
  const bytes = Math.round(Number(o.gb) * 2 ** 30);
  const dir = mkdtempSync(join(tmpdir(), 'truthgpt-bench-dataset-'));
  try {
    let t0 = Date.now();
    const corpus = makeCorpus(dir, bytes, o.layout);
    const writeS = (Date.now() - t0) / 1000;
    const rssBefore = process.memoryUsage().rss / 2 ** 20;
    const samples: { mb: number; rssMiB: number }[] = [];
    let lastSample = 0;
    let firstDocS = NaN; // BPE: the tokenizer's training comes before the first document
    let firstDocCpuS = NaN;
    const loadBefore = loadavg();
    const cpu0 = process.cpuUsage();
    t0 = Date.now();
    const spec = {
      name: 'bench',
      corpus: { kind: 'text' as const, path: corpus },
      tokenizer: o.tokenizer === 'bpe' ? { kind: 'bpe' as const, vocabSize: 4096 } : { kind: 'byte' as const },
      shards: Number(o.shards),
      valFraction: 0.01,
      bpeTrainChars: 20_000_000,
    };
    const m = await prepareDataset(spec, join(dir, 'out'), ({ tokens }) => {
      if (Number.isNaN(firstDocS)) {
        firstDocS = (Date.now() - t0) / 1000;
        const c = process.cpuUsage(cpu0);
        firstDocCpuS = (c.user + c.system) / 1e6;
      }
      if (tokens - lastSample >= 32 << 20) {
        lastSample = tokens;
        samples.push({ mb: tokens / 2 ** 20, rssMiB: process.memoryUsage().rss / 2 ** 20 });
      }
    });
    const seconds = (Date.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const cpuS = (cpu.user + cpu.system) / 1e6;
    const loadAfter = loadavg();
    const peak = vmHwmMiB();
    const flags = (/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(' ');
    const result = {
      date: new Date().toISOString(),
      machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, simd: flags.filter((f) => /^(avx|sse4|fma|f16c)/.test(f)).join(' ') },
      loadavgBefore: loadBefore,
      loadavgAfter: loadAfter,
      corpusBytes: bytes,
      layout: o.layout,
      tokenizer: m.tokenizer.id,
      shards: m.splits.train.length,
      documents: m.documents,
      tokens: m.tokens,
      writeCorpusS: writeS,
      prepareS: seconds,
      firstDocumentS: firstDocS,
      firstDocumentCpuS: firstDocCpuS,
      cpuS,
      /** Tokenizing alone: CPU after the first document (the first document's own is not counted). */
      encodeDecimalMBPerCpuS: bytes / 1e6 / (cpuS - firstDocCpuS),
      mbPerS: bytes / 2 ** 20 / seconds,
      decimalMBPerS: bytes / 1e6 / seconds,
      decimalMBPerCpuS: bytes / 1e6 / cpuS,
      rssBeforeMiB: rssBefore,
      peakRssMiB: peak,
      rssSamples: samples,
    };
    console.table([
      {
        corpus: `${(bytes / 2 ** 30).toFixed(2)} GiB ${o.layout}`,
        tokenizer: m.tokenizer.id,
        tokens: m.tokens,
        'MB/s': result.decimalMBPerS.toFixed(1),
        'MB/CPU-s': result.decimalMBPerCpuS.toFixed(1),
        'MB/CPU-s after 1st doc': result.encodeDecimalMBPerCpuS.toFixed(1),
        'first doc (s)': firstDocS.toFixed(1),
        load: `${loadBefore[0].toFixed(1)}→${loadAfter[0].toFixed(1)}`,
        'RSS before (MiB)': rssBefore.toFixed(0),
        'RSS min..max during (MiB)': `${Math.min(...samples.map((s) => s.rssMiB)).toFixed(0)}..${Math.max(...samples.map((s) => s.rssMiB)).toFixed(0)}`,
        'peak RSS (MiB)': peak.toFixed(0),
      },
    ]);
    mkdirSync(join(__dirname, 'out'), { recursive: true });
    const out = join(__dirname, 'out', `dataset-${o.layout}-${o.tokenizer}-${Date.now()}.json`);
    writeFileSync(out, JSON.stringify(result, null, 2));
    console.log(`wrote ${out}`);
  } finally {
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  }
}

new Command('bench-dataset')
  .option('--gb <n>', 'corpus size in GiB', '1')
  .option('--layout <layout>', 'file (one big file) | folder (16 MiB files)', 'file')
  .option('--tokenizer <kind>', 'byte | bpe (4096, trained on the first 20M chars)', 'byte')
  .option('--shards <n>', 'shards per split', '4')
  .option('--keep', 'keep the temp corpus and shards')
  .action((o: Options) => main(o))
  .parseAsync(process.argv)
  .catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
