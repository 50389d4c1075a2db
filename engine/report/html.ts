// The run report: one self-contained HTML page (inline CSS and SVG, no scripts, no external
// files) that tells a person what was trained, how the loss went, how each quantized variant
// compares with fp32, which were refused and why, and what the models write. The same RunReport
// object is stored as JSON beside it for machines.

import type { LoraMetrics } from '../finetune/base';
import { escapeXml as esc, fmt, lineChartSvg, lossCurvesSvg, type CurveSeries } from './svg';

/** One model of the comparison (fp32 or a quantized variant), as a run's result lists it. */
export interface VariantSummary {
  name: string;
  /** 'fp32' or the quantization method. */
  method: string;
  key: string;
  sha256: string;
  sizeBytes: number;
  ppl: number;
  /** (ppl − fp32 ppl) / fp32 ppl × 100; 0 for fp32 itself. */
  pplDeltaPct: number;
  p50Ms: number;
  p95Ms: number;
  tokensPerSec: number;
  published: boolean;
  rejectedReason?: string;
}

/** A row of the report's table: the summary, and how the variant was gated and built. */
export interface ReportVariant extends VariantSummary {
  /** The bound the variant was held to, as a fraction (null for fp32). */
  maxPplIncrease: number | null;
  peakRssBytes?: number;
  /** Linears quantized / kept float (null for fp32). */
  quantizedNodes?: number | null;
  skippedNodes?: number | null;
  /** Weight bytes before / after quantization. */
  compression?: number | null;
}

export interface ReportSample {
  variant: string;
  prompt: string;
  text: string;
  settings: string;
}

/**
 * The LoRA stage of a pipeline that ran one. Then `checkpoint` is the base with these adapters
 * merged, `dataset` is the LoRA dataset, and every variant is (a quantization of) the merged model,
 * while the loss curves still describe pretraining.
 */
export interface ReportLora extends LoraMetrics {
  /** The dataset the adapters trained and were evaluated on. */
  datasetPrefix: string;
  /** The pretrained checkpoint the adapters were trained on (left frozen). */
  baseCheckpoint: string;
  /** The dataset pretraining ran on, so a reader can tell the two apart. */
  pretrainDatasetPrefix: string;
  adapterKey: string;
}

/** "2,048 of 53,120 (3.86%)": how much of the model the adapters trained. */
export const trainedShare = (l: ReportLora) => `${l.trainable.toLocaleString('en-US')} of ${l.total.toLocaleString('en-US')} (${(l.trainableFraction * 100).toFixed(2)}%)`;

export interface RunReport {
  runId: string;
  createdAt: string;
  /** `from`: the stored model the run started from (`model.from`), absent for a model trained from its seeded init. */
  model: { family: string; params: number; config: Record<string, unknown>; from?: string | null };
  dataset: { prefix: string; tokenizer: string; trainTokens: number; valTokens: number; documents: number };
  checkpoint: string;
  /**
   * `shardLoss`: each worker's mean train loss of the round, by shard; `pseudoGradNorm`: the norm of
   * the round's outer-step input. Both absent in reports written before they were recorded.
   */
  trainHistory: { round: number; loss: number; shardLoss?: number[]; pseudoGradNorm?: number }[];
  valHistory: { round: number; step: number; loss: number; perplexity: number }[];
  /**
   * How evaluation was done, in words a reader needs to trust the table. `splitTokens` (target
   * tokens of the whole validation split) and `batchCap` (evaluation.batches, null for the whole
   * split) are absent in reports written before they were recorded.
   */
  evaluation: { batches: number; batchSize: number; contextLength: number; tokens: number; splitTokens?: number; batchCap?: number | null; speedRuns: number; device: string };
  variants: ReportVariant[];
  samples: ReportSample[];
  /** The run's configuration as given (training spec, post-training spec). */
  config: Record<string, unknown>;
  /** Absent when no LoRA stage ran (reports written before LoRA existed have none either). */
  lora?: ReportLora;
}

/**
 * What the perplexity figures cover, in words: "all 88,890 target tokens of the validation split"
 * or, under a cap, "4,096 of the validation split's 88,890 target tokens (4.61%, evaluation.batches 8)".
 */
export function coverageText(e: Pick<RunReport['evaluation'], 'tokens' | 'splitTokens' | 'batchCap'>): string {
  const n = (x: number) => x.toLocaleString('en-US');
  if (e.splitTokens === undefined) return `${n(e.tokens)} validation tokens (share of the split not recorded)`;
  if (e.tokens >= e.splitTokens) return `all ${n(e.tokens)} target tokens of the validation split`;
  const cap = e.batchCap ? `, evaluation.batches ${e.batchCap}` : '';
  return `${n(e.tokens)} of the validation split's ${n(e.splitTokens)} target tokens (${((100 * e.tokens) / e.splitTokens).toFixed(2)}%${cap})`;
}

const bytes = (n: number) => (n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(2)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const pct = (v: number) => `${v >= 0 ? '+' : ''}${v.toFixed(2)}%`;

function kvTable(rows: [string, string][]): string {
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`;
}

/** Nested config as dotted keys, so a reader scans one flat table. */
export function flatten(obj: unknown, prefix = ''): [string, string][] {
  if (obj === null || typeof obj !== 'object') return [[prefix || '(value)', JSON.stringify(obj) ?? 'undefined']];
  if (Array.isArray(obj) && obj.every((v) => v === null || typeof v !== 'object')) return [[prefix, JSON.stringify(obj)]];
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object') out.push(...flatten(v, key));
    else out.push([key, typeof v === 'string' ? v : JSON.stringify(v)]);
  }
  return out;
}

/**
 * What the training curve's validation losses cover: the training spec's first `evalBatches`
 * batches (the same ones every time), so a reader does not take them for the whole split.
 */
function trainingEvalScope(r: RunReport): string {
  const t = r.config.training as { evalBatches?: unknown; batchSize?: unknown; contextLength?: unknown } | undefined;
  if (typeof t?.evalBatches !== 'number' || typeof t.batchSize !== 'number' || typeof t.contextLength !== 'number') return '';
  const tokens = t.evalBatches * t.batchSize * t.contextLength;
  return ` (on the first ${t.evalBatches} validation batches, at most ${tokens.toLocaleString('en-US')} tokens, the same each time; the table below scores the models on ${coverageText(r.evaluation)})`;
}

function headline(r: RunReport): string {
  const last = r.valHistory[r.valHistory.length - 1];
  const first = r.valHistory[0];
  const fp32 = r.variants.find((v) => v.method === 'fp32');
  const published = r.variants.filter((v) => v.method !== 'fp32' && v.published);
  const rejected = r.variants.filter((v) => !v.published);
  const parts: string[] = [];
  const what = `A ${esc(r.model.family.toUpperCase())} of ${r.model.params.toLocaleString('en-US')} parameters`;
  if (!r.model.from) parts.push(`${what} was trained for ${r.trainHistory.length} rounds.`);
  else if (r.trainHistory.length === 0) parts.push(`${what} was taken as stored in <b>${esc(r.model.from)}</b>, without further pretraining.`);
  else parts.push(`${what} was taken from <b>${esc(r.model.from)}</b> and trained for ${r.trainHistory.length} more rounds.`);
  if (first && last) {
    parts.push(`Validation loss went from ${fmt(first.loss)} (round ${first.round}) to ${fmt(last.loss)} (round ${last.round}), perplexity ${fmt(last.perplexity)}${trainingEvalScope(r)}.`);
  }
  const l = r.lora;
  if (l) {
    parts.push(
      `It was then LoRA-tuned on <b>${esc(l.datasetPrefix)}</b> for ${l.steps} steps: validation loss ${fmt(l.valLossBefore)} → ${fmt(l.valLossAfter)}, ` +
        `${(l.trainableFraction * 100).toFixed(2)}% of parameters trained; the variants below are the merged model.`,
    );
  }
  if (fp32) {
    const best = [...published].sort((a, b) => b.tokensPerSec - a.tokensPerSec)[0];
    const smallest = [...published].sort((a, b) => a.sizeBytes - b.sizeBytes)[0];
    const describe = (v: ReportVariant) =>
      `<b>${esc(v.name)}</b> (${esc(v.method)}): ${(v.tokensPerSec / fp32.tokensPerSec).toFixed(2)}× the fp32 tokens/s, ` +
      `${(fp32.sizeBytes / v.sizeBytes).toFixed(2)}× smaller, perplexity ${pct(v.pplDeltaPct)}.`;
    if (best && best.tokensPerSec > fp32.tokensPerSec) parts.push(`Fastest published variant: ${describe(best)}`);
    else if (smallest) parts.push(`No published variant ran faster than fp32 here; the smallest is ${describe(smallest)}`);
  }
  if (rejected.length) parts.push(`<span class="bad">Not published: ${rejected.map((v) => esc(v.name)).join(', ')}</span> (see the table).`);
  return `<p class="lead">${parts.join(' ')}</p>`;
}

function variantTable(r: RunReport): string {
  const head = ['variant', 'method', 'size', 'compression', 'val ppl', 'Δ ppl vs fp32', 'bound', 'latency p50', 'latency p95', 'tokens/s', 'published'];
  const fp32 = r.variants.find((v) => v.method === 'fp32');
  const rows = r.variants.map((v) => {
    const cls = v.published ? '' : ' class="rejected"';
    const cells = [
      esc(v.name),
      esc(v.method),
      `${bytes(v.sizeBytes)}${fp32 && v !== fp32 ? ` <span class="dim">(${(fp32.sizeBytes / v.sizeBytes).toFixed(2)}× smaller)</span>` : ''}`,
      v.compression ? `${v.compression.toFixed(2)}× weights` : '—',
      fmt(v.ppl, 6),
      v.method === 'fp32' ? '—' : pct(v.pplDeltaPct),
      v.maxPplIncrease === null ? '—' : `≤ ${(v.maxPplIncrease * 100).toFixed(2)}%`,
      `${v.p50Ms.toFixed(2)} ms`,
      `${v.p95Ms.toFixed(2)} ms`,
      `${Math.round(v.tokensPerSec).toLocaleString('en-US')}${fp32 && v !== fp32 ? ` <span class="dim">(${(v.tokensPerSec / fp32.tokensPerSec).toFixed(2)}×)</span>` : ''}`,
      v.published ? 'yes' : `<b>no</b>: ${esc(v.rejectedReason ?? 'rejected')}`,
    ];
    return `<tr${cls} data-variant="${esc(v.name)}">${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  const e = r.evaluation;
  return (
    `<table class="grid"><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table>` +
    `<p class="dim">Perplexity is token-weighted over ${esc(coverageText(e))}: ${e.batches} batches of up to ${e.batchSize} non-overlapping windows of ${e.contextLength} tokens${e.splitTokens !== undefined && e.tokens >= e.splitTokens ? ' (the last one as long as the tokens left)' : ''}, every variant on the same ones. ` +
    `Latency is one forward pass over a ${e.batchSize} × ${e.contextLength} batch, ${e.speedRuns} timed runs after warm-up, on ${esc(e.device)}; ` +
    `tokens/s = batch tokens / mean latency. Size is the ONNX file as stored. A variant is published only when its perplexity rise stays within its bound.</p>`
  );
}

function artifacts(r: RunReport): string {
  const rows = r.variants.map((v) => `<tr><td>${esc(v.name)}</td><td><code>${esc(v.key)}</code></td><td><code>${esc(v.sha256)}</code></td></tr>`);
  return `<table class="grid"><thead><tr><th>variant</th><th>key</th><th>sha256</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** Samples side by side: one row per variant and prompt, one column per setting (greedy, seeded). */
function samples(r: RunReport): string {
  if (!r.samples.length) return '<p class="dim">No samples were generated.</p>';
  const rows = new Map<string, ReportSample[]>();
  for (const s of r.samples) {
    const key = JSON.stringify([s.variant, s.prompt]);
    rows.set(key, [...(rows.get(key) ?? []), s]);
  }
  const cell = (s: ReportSample) =>
    `<div class="sample" data-variant="${esc(s.variant)}"><div class="dim">${esc(s.variant)} · ${esc(s.settings)}</div>` +
    `<pre><span class="prompt">${esc(s.prompt)}</span>${esc(s.text)}</pre></div>`;
  return [...rows.values()].map((row) => `<div class="samples-row">${row.map(cell).join('')}</div>`).join('');
}

/** What the adapters did, and which model the rest of the page measures. */
function loraSection(l: ReportLora): string {
  return (
    `<p>Adapters were trained on the frozen pretrained checkpoint and then folded into it; the evaluation, the variants and the samples below ` +
    `are that merged model, measured on the LoRA dataset. The loss curves above are pretraining's, on <code>${esc(l.pretrainDatasetPrefix)}</code>.</p>` +
    kvTable([
      ['dataset', l.datasetPrefix],
      ['base checkpoint', l.baseCheckpoint],
      ['steps', String(l.steps)],
      ['val loss', `${fmt(l.valLossBefore, 5)} → ${fmt(l.valLossAfter, 5)}`],
      ['val perplexity', `${fmt(l.perplexityBefore, 5)} → ${fmt(l.perplexityAfter, 5)}`],
      ['trainable parameters', trainedShare(l)],
      ['adapter', l.adapterKey],
    ])
  );
}

function historyTable(r: RunReport): string {
  const rounds = [...new Set([...r.trainHistory.map((p) => p.round), ...r.valHistory.map((p) => p.round)])].sort((a, b) => a - b);
  const rows = rounds.map((round) => {
    const t = r.trainHistory.find((p) => p.round === round);
    const v = r.valHistory.find((p) => p.round === round);
    return `<tr><td>${round}</td><td>${t ? fmt(t.loss, 5) : '—'}</td><td>${v ? fmt(v.loss, 5) : '—'}</td><td>${v ? fmt(v.perplexity, 5) : '—'}</td></tr>`;
  });
  return `<details><summary>Loss per round as numbers</summary><table class="grid"><thead><tr><th>round</th><th>train loss</th><th>val loss</th><th>val ppl</th></tr></thead><tbody>${rows.join('')}</tbody></table></details>`;
}

const SHARD_COLORS = ['#1f77b4', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#bcbd22'];

/**
 * A DiLoCo run with more than one worker: each shard's train loss per round beside the global
 * model's validation loss after each outer step, so a reader sees whether the workers drift apart
 * and whether the outer steps still pay; the pseudo-gradient norms as numbers. Empty otherwise.
 */
function workersSection(r: RunReport): string {
  const W = Math.max(0, ...r.trainHistory.map((p) => p.shardLoss?.length ?? 0));
  if (W < 2) return '';
  const series: CurveSeries[] = Array.from({ length: W }, (_, k) => ({
    name: `shard ${k} train loss (mean of round)`,
    color: SHARD_COLORS[k % SHARD_COLORS.length],
    points: r.trainHistory.flatMap((p) => (p.shardLoss && p.shardLoss.length > k ? [{ x: p.round, y: p.shardLoss[k] }] : [])),
  }));
  series.push({ name: 'validation loss after the outer step', color: '#d62728', dashed: true, points: r.valHistory.map((p) => ({ x: p.round, y: p.loss })) });
  const chart = lineChartSvg(series, { title: `DiLoCo: ${W} workers and the outer steps`, xLabel: 'round (outer step)', yLabel: 'cross-entropy (nats / token)' });
  const rows = r.trainHistory.map((p) => {
    const v = r.valHistory.find((x) => x.round === p.round);
    const s = p.shardLoss ?? [];
    const spread = s.length ? Math.max(...s) - Math.min(...s) : NaN;
    const cells = [String(p.round), ...Array.from({ length: W }, (_, k) => (s[k] !== undefined ? fmt(s[k], 5) : '—')), s.length ? fmt(spread, 3) : '—', p.pseudoGradNorm !== undefined ? fmt(p.pseudoGradNorm, 4) : '—', v ? fmt(v.loss, 5) : '—'];
    return `<tr>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  const head = ['round', ...Array.from({ length: W }, (_, k) => `shard ${k} train`), 'spread', 'pseudo-gradient norm', 'val loss'];
  return (
    `<h2>DiLoCo workers and outer steps</h2>\n` +
    `<p>Each of the ${W} workers ran the round's inner steps on its own shard from the same global weights; the outer optimizer then stepped the global model along the mean of their deltas (the pseudo-gradient). Validation loss is the global model's after each outer step.</p>\n` +
    `${chart}\n` +
    `<details><summary>Per shard and outer step as numbers</summary><table class="grid workers"><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${rows.join('')}</tbody></table></details>\n`
  );
}

const CSS = `
body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.lead{font-size:15px}.dim{color:#666;font-size:12px}.bad{color:#b00020}
table{border-collapse:collapse;font-size:13px}table.grid th,table.grid td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.grid th{background:#f5f5f5}table.grid td:first-child,table.grid td:nth-child(2),table.grid td:last-child{text-align:left}
tr.rejected td{background:#fdecee}table.kv th{text-align:left;padding:2px 12px 2px 0;font-weight:normal;color:#555}
table.kv td{font-family:Menlo,Consolas,monospace}pre{background:#f7f7f7;padding:8px;white-space:pre-wrap;border-radius:4px}
.prompt{background:#fff3b0}code{font-size:12px}
.samples-row{display:flex;gap:12px}.samples-row .sample{flex:1;min-width:0}
`;

/** The whole report page. Pure: same report in, same bytes out. */
export function renderReportHtml(r: RunReport): string {
  const model = flatten(r.model.config);
  const d = r.dataset;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TruthGPT run ${esc(r.runId)}</title><style>${CSS}</style></head>
<body>
<h1>TruthGPT run <code>${esc(r.runId)}</code></h1>
<div class="dim">report written ${esc(r.createdAt)} · checkpoint <code>${esc(r.checkpoint)}</code></div>
${headline(r)}
<h2>Model and data</h2>
${kvTable([
  ['family', r.model.family],
  ...(r.model.from ? [['started from', r.model.from] as [string, string]] : []),
  ['parameters', r.model.params.toLocaleString('en-US')],
  ...model,
  [r.lora ? 'dataset (LoRA, evaluation)' : 'dataset', d.prefix],
  ...(r.lora ? ([['pretraining dataset', r.lora.pretrainDatasetPrefix]] as [string, string][]) : []),
  ['tokenizer', d.tokenizer],
  ['train / val tokens', `${d.trainTokens.toLocaleString('en-US')} / ${d.valTokens.toLocaleString('en-US')}`],
  ['documents', d.documents.toLocaleString('en-US')],
])}
<h2>Loss curves${r.lora ? ' (pretraining)' : ''}</h2>
${lossCurvesSvg({ train: r.trainHistory, val: r.valHistory })}
${historyTable(r)}
${workersSection(r)}${r.lora ? `<h2>LoRA fine-tune</h2>\n${loraSection(r.lora)}\n` : ''}<h2>Evaluation: fp32 and quantized variants side by side</h2>
<p class="coverage">Validation perplexity over ${esc(coverageText(r.evaluation))}.</p>
${variantTable(r)}
<h2>Generation samples</h2>
${samples(r)}
<h2>Artifacts</h2>
${artifacts(r)}
<h2>Configuration</h2>
${kvTable(flatten(r.config))}
</body></html>
`;
}
