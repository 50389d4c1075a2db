// Val loss per outer step of `bench/diloco-quality.ts` runs as one SVG (engine/report's chart).
//
//   npx tsx bench/diloco-plot.ts bench/out/a.json [b.log ...] --out bench/diloco-curves.svg
//
// A .log is the quality bench's stdout (one JSON line per outer step), for runs stopped early.

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { lineChartSvg, type CurveSeries } from '../engine/report/svg';

interface QualityRun {
  outer: string;
  /** Inner lr schedule (absent in results written before it was recorded: constant). */
  schedule?: string;
  W: number;
  /** Absent in results written before seeds were recorded: 0. */
  seed?: number;
  H: number;
  compression: string;
  curve: { round: number; valLoss: number }[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];
const { values, positionals } = parseArgs({ allowPositionals: true, options: { out: { type: 'string', default: 'bench/diloco-curves.svg' }, title: { type: 'string' } } });
interface StepLine {
  outer: string;
  schedule?: string;
  W: number;
  seed?: number;
  round: number;
  valLoss: number;
}

function fromLog(text: string): QualityRun[] {
  const runs = new Map<string, QualityRun>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    const p = JSON.parse(line) as StepLine;
    const key = `${p.outer} ${p.schedule ?? ''} ${p.W} ${p.seed ?? 0}`;
    if (!runs.has(key)) runs.set(key, { outer: p.outer, schedule: p.schedule, W: p.W, seed: p.seed, H: NaN, compression: 'none', curve: [] });
    runs.get(key)!.curve.push({ round: p.round, valLoss: p.valLoss });
  }
  return [...runs.values()];
}

const runs = positionals.flatMap((f) => (f.endsWith('.log') ? fromLog(fs.readFileSync(f, 'utf8')) : (JSON.parse(fs.readFileSync(f, 'utf8')) as { runs: QualityRun[] }).runs));
const series: CurveSeries[] = runs.map((r, i) => ({
  name: `W=${r.W} ${r.outer}${r.schedule && r.schedule !== 'constant' ? ` inner ${r.schedule}` : ''}${r.compression !== 'none' ? ` ${r.compression}` : ''}${r.seed ? ` seed ${r.seed}` : ''}`,
  color: COLORS[i % COLORS.length]!,
  dashed: r.W === 1,
  points: r.curve.map((p) => ({ x: p.round, y: p.valLoss })),
}));
fs.writeFileSync(values.out, lineChartSvg(series, { title: values.title ?? `DiLoCo at equal tokens: val loss per outer step (H = ${runs.find((r) => Number.isFinite(r.H))?.H ?? '?'})`, xLabel: 'outer step', yLabel: 'val loss' }) + '\n');
console.log(`wrote ${values.out}: ${series.map((s) => s.name).join(', ')}`);

// The same curves as a markdown table for bench/RESULTS.md: val loss per outer step, each run
// against the first run in the arguments (put the W = 1 baseline first).
const base = runs[0];
const at = (r: QualityRun, round: number) => r.curve.find((p) => p.round === round)?.valLoss;
const rounds = [...new Set(runs.flatMap((r) => r.curve.map((p) => p.round)))].filter((x) => x > 0).sort((a, b) => a - b);
const lines = [`| outer step | ${series.map((s) => s.name).join(' | ')} |`, `|---|${series.map(() => '---:').join('|')}|`];
for (const round of rounds) {
  const b = base ? at(base, round) : undefined;
  const cells = runs.map((r, i) => {
    const v = at(r, round);
    if (v === undefined) return '';
    return i === 0 || b === undefined ? v.toFixed(4) : `${v.toFixed(4)} (${v >= b ? '+' : ''}${((100 * (v - b)) / b).toFixed(1)} %)`;
  });
  lines.push(`| ${round} | ${cells.join(' | ')} |`);
}
console.log(lines.join('\n'));
