// The campaign's outputs: the table by fault kind (what the command prints), and the report files
// under --out: campaign.json (everything), campaign.svg (outcomes by fault kind) and campaign.html.

import fs from 'node:fs';
import path from 'node:path';
import type { CampaignReport } from './campaign';

const secs = (ms: number | null) => (ms === null ? '—' : `${(ms / 1000).toFixed(1)} s`);

export function formatTable(r: CampaignReport): string {
  const head = ['fault', 'runs', 'hit', 'completed identical', 'failed named', 'lost', 'mismatched', 'unnamed', 'hung', 'mean recovery'];
  const rows = r.table.map((k) => [k.kind, k.runs, k.hit, k.identical, k.named, k.lost, k.mismatched, k.unnamed, k.hung, secs(k.meanRecoveryMs)].map(String));
  const t = r.totals;
  rows.push(['all', t.runs, r.runs.filter((x) => x.hit).length, t.identical, t.named, t.lost, t.mismatched, t.unnamed, t.hung, ''].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmt = (row: string[]) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [fmt(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(fmt)].join('\n');
}

const COLORS: Record<string, string> = { identical: '#2e7d32', named: '#1565c0', lost: '#c62828', mismatched: '#ef6c00', unnamed: '#6a1b9a', hung: '#424242' };

/** A stacked bar per fault kind: how its runs ended. */
export function chartSvg(r: CampaignReport): string {
  const rows = r.table.filter((k) => k.runs > 0);
  const max = Math.max(1, ...rows.map((k) => k.runs));
  const barW = 420;
  const rowH = 24;
  const left = 130;
  const height = rows.length * rowH + 50;
  const parts: string[] = [];
  rows.forEach((k, i) => {
    const y = 10 + i * rowH;
    parts.push(`<text x="${left - 6}" y="${y + 15}" text-anchor="end">${k.kind}</text>`);
    let x = left;
    for (const v of ['identical', 'named', 'lost', 'mismatched', 'unnamed', 'hung'] as const) {
      const w = (k[v] / max) * barW;
      if (w > 0) parts.push(`<rect x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${COLORS[v]}"><title>${k.kind}: ${k[v]} ${v}</title></rect>`);
      x += w;
    }
    parts.push(`<text x="${x + 6}" y="${y + 15}">${k.runs}</text>`);
  });
  const ly = rows.length * rowH + 30;
  let lx = left;
  for (const [v, c] of Object.entries(COLORS)) {
    parts.push(`<rect x="${lx}" y="${ly - 10}" width="10" height="10" fill="${c}"/><text x="${lx + 14}" y="${ly}">${v}</text>`);
    lx += 90;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${left + barW + 120}" height="${height}" font-family="sans-serif" font-size="12">${parts.join('')}</svg>\n`;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function writeReport(r: CampaignReport, outDir: string): { json: string; svg: string; html: string } {
  fs.mkdirSync(outDir, { recursive: true });
  const json = path.join(outDir, 'campaign.json');
  const svg = path.join(outDir, 'campaign.svg');
  const html = path.join(outDir, 'campaign.html');
  fs.writeFileSync(json, JSON.stringify(r, null, 2) + '\n');
  const chart = chartSvg(r);
  fs.writeFileSync(svg, chart);
  const bad = r.runs.filter((x) => x.verdict !== 'identical' && x.verdict !== 'named');
  fs.writeFileSync(
    html,
    `<!doctype html><meta charset="utf-8"><title>fault campaign seed ${r.seed}</title>
<h1>Fault campaign: ${esc(r.line)}</h1>
<p>seed ${r.seed}, ${(r.wallMs / 60000).toFixed(1)} min, ${esc(r.machine.cpu)} × ${r.machine.cores}, started ${r.startedAt}; ${r.ledger.manifests} committed manifests (${r.ledger.files} files, ${r.ledger.bytes} bytes) re-read at the end.</p>
${chart}
<pre>${esc(formatTable(r))}</pre>
${bad.length ? `<h2>Runs outside the contract</h2><ul>${bad.map((x) => `<li>${esc(`${x.runId} ${x.kind}: ${x.verdict}: ${x.why}`)}</li>`).join('')}</ul>` : ''}
`,
  );
  return { json, svg, html };
}
