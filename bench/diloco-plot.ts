// Val loss per outer step of `bench/diloco-quality.ts` runs as one SVG (engine/report's chart).
//
//   npx tsx bench/diloco-plot.ts bench/out/a.json [b.json ...] --out bench/diloco-curves.svg

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { lineChartSvg, type CurveSeries } from '../engine/report/svg';

interface QualityRun {
  outer: string;
  W: number;
  H: number;
  compression: string;
  curve: { round: number; valLoss: number }[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];
const { values, positionals } = parseArgs({ allowPositionals: true, options: { out: { type: 'string', default: 'bench/diloco-curves.svg' }, title: { type: 'string' } } });
const runs = positionals.flatMap((f) => (JSON.parse(fs.readFileSync(f, 'utf8')) as { runs: QualityRun[] }).runs);
const series: CurveSeries[] = runs.map((r, i) => ({
  name: `W=${r.W} ${r.outer}${r.compression !== 'none' ? ` ${r.compression}` : ''}`,
  color: COLORS[i % COLORS.length]!,
  dashed: r.W === 1,
  points: r.curve.map((p) => ({ x: p.round, y: p.valLoss })),
}));
fs.writeFileSync(values.out, lineChartSvg(series, { title: values.title ?? `DiLoCo at equal tokens: val loss per outer step (H = ${runs[0]?.H})`, xLabel: 'outer step', yLabel: 'val loss' }) + '\n');
console.log(`wrote ${values.out}: ${series.map((s) => s.name).join(', ')}`);
