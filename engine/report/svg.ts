// Loss curves as a self-contained SVG: train and validation loss per round on shared axes, with
// tick labels, axis titles and a legend, so the picture reads on its own when pasted anywhere.
// Every point is also a <circle> carrying its values (data-x, data-y) and a <title> tooltip, which
// keeps the figure inspectable and lets tests find the plotted numbers.

export interface CurvePoint {
  x: number;
  y: number;
}

export interface CurveSeries {
  name: string;
  points: CurvePoint[];
  color: string;
  /** Dashed line (e.g. validation) to tell series apart in greyscale too. */
  dashed?: boolean;
}

export interface ChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
}

/** Escapes text for SVG/HTML element content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Axis ticks at 1, 2 or 5 × 10^k, about `target` of them, covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, target = 5): number[] {
  if (!(hi > lo)) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    return niceTicks(lo - pad, hi + pad, target);
  }
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const first = Math.floor(lo / step) * step;
  const ticks: number[] = [];
  for (let v = first; v <= hi + step * 0.5; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < hi) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

/** A number for a tick or tooltip: short, without float noise. */
export function fmt(v: number, digits = 4): string {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) >= 1e6 || Math.abs(v) < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(digits)));
}

/**
 * Renders series as a line chart. Non-finite points are left out (a NaN loss would otherwise wreck
 * the scale); a series with no finite point still gets its legend entry, marked "(no data)".
 */
export function lineChartSvg(series: CurveSeries[], opts: ChartOptions = {}): string {
  const W = opts.width ?? 720;
  const H = opts.height ?? 380;
  const m = { top: opts.title ? 44 : 20, right: 24, bottom: 56, left: 72 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const clean = series.map((s) => ({ ...s, points: s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)) }));
  const all = clean.flatMap((s) => s.points);
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y);
  const xTicks = all.length ? niceTicks(Math.min(...xs), Math.max(...xs), 8) : [0, 1];
  const yTicks = all.length ? niceTicks(Math.min(...ys), Math.max(...ys), 6) : [0, 1];
  // Integer x data (rounds) gets integer ticks only.
  const xInt = xs.every((x) => Number.isInteger(x));
  const xT = xInt ? xTicks.filter((t) => Number.isInteger(t)) : xTicks;
  const [x0, x1] = [xT[0], xT[xT.length - 1] === xT[0] ? xT[0] + 1 : xT[xT.length - 1]];
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const px = (v: number) => v.toFixed(1);

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12" role="img">`);
  if (opts.title) out.push(`<title>${escapeXml(opts.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`);
  if (opts.title) out.push(`<text x="${W / 2}" y="26" text-anchor="middle" font-size="16" font-weight="bold" fill="#222">${escapeXml(opts.title)}</text>`);
  // Grid and ticks.
  for (const t of yTicks) {
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${px(sy(t))}" y2="${px(sy(t))}" stroke="#e4e4e4"/>`);
    out.push(`<text class="ytick" x="${m.left - 8}" y="${px(sy(t) + 4)}" text-anchor="end" fill="#444">${fmt(t)}</text>`);
  }
  for (const t of xT) {
    out.push(`<line x1="${px(sx(t))}" x2="${px(sx(t))}" y1="${m.top}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<text class="xtick" x="${px(sx(t))}" y="${m.top + ph + 18}" text-anchor="middle" fill="#444">${fmt(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  if (opts.xLabel) out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle" font-size="13" fill="#222">${escapeXml(opts.xLabel)}</text>`);
  if (opts.yLabel) {
    out.push(`<text x="18" y="${m.top + ph / 2}" text-anchor="middle" font-size="13" fill="#222" transform="rotate(-90 18 ${m.top + ph / 2})">${escapeXml(opts.yLabel)}</text>`);
  }
  // Series.
  for (const s of clean) {
    const name = escapeXml(s.name);
    out.push(`<g class="series" data-series="${name}">`);
    if (s.points.length > 1) {
      const d = s.points.map((p) => `${px(sx(p.x))},${px(sy(p.y))}`).join(' ');
      out.push(`<polyline points="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    }
    for (const p of s.points) {
      out.push(
        `<circle cx="${px(sx(p.x))}" cy="${px(sy(p.y))}" r="3.5" fill="${s.color}" data-x="${p.x}" data-y="${p.y}"><title>${name}: ${fmt(p.x)} → ${fmt(p.y, 5)}</title></circle>`,
      );
    }
    out.push('</g>');
  }
  // Legend, top right inside the plot (losses fall, so that corner is usually empty).
  const lw = 14 + Math.max(...clean.map((s) => (s.name.length + (s.points.length ? 0 : 10)) * 7), 40) + 30;
  const lx = m.left + pw - lw - 8;
  out.push(`<g class="legend"><rect x="${lx}" y="${m.top + 8}" width="${lw}" height="${clean.length * 20 + 8}" fill="#ffffff" fill-opacity="0.9" stroke="#ccc"/>`);
  clean.forEach((s, i) => {
    const y = m.top + 24 + i * 20;
    out.push(`<line x1="${lx + 8}" x2="${lx + 32}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(`<text x="${lx + 38}" y="${y}" fill="#222">${escapeXml(s.name)}${s.points.length ? '' : ' (no data)'}</text>`);
  });
  out.push('</g></svg>');
  return out.join('\n');
}

export interface LossHistory {
  /** Mean train loss of each round, at the round it ended (1..R). */
  train: { round: number; loss: number }[];
  /** Validation loss after each evaluated round (0 = before training). */
  val: { round: number; loss: number }[];
}

/** The run's train and validation loss per round. */
export function lossCurvesSvg(h: LossHistory, opts: ChartOptions = {}): string {
  return lineChartSvg(
    [
      { name: 'train loss (mean of round)', color: '#1f77b4', points: h.train.map((p) => ({ x: p.round, y: p.loss })) },
      { name: 'validation loss', color: '#d62728', dashed: true, points: h.val.map((p) => ({ x: p.round, y: p.loss })) },
    ],
    { title: 'Loss per round', xLabel: 'round', yLabel: 'cross-entropy (nats / token)', ...opts },
  );
}
