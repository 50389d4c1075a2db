// The run report of a BERT or T5 run: one self-contained HTML page (inline CSS and SVG, no scripts)
// in the GPT report's style (html.ts). What a reader needs differs: a classifier is told by its
// accuracy and macro F1 over every validation document, a seq2seq model by its target loss and the
// exact match of its greedy answers, a pretraining run (BERT mlm, T5 span-corruption) by its
// validation perplexity (masked tokens; span-corruption targets). The page holds the loss curves,
// the metric per round, the LoRA stage when one ran, and the evaluation table (fp32 and each
// quantized variant, with its gate; none for pretraining). The same FamilyReport is stored as JSON beside it.

import { flatten } from './html';
import { escapeXml as esc, fmt, lineChartSvg, lossCurvesSvg } from './svg';

export type FamilyReportTask = 'classification' | 'seq2seq' | 'mlm' | 'span-corruption';

/** BERT mlm and T5 span-corruption: told by validation perplexity, with no score, LoRA or variants. */
export const isPretrainingTask = (t: FamilyReportTask): t is 'mlm' | 'span-corruption' => t === 'mlm' || t === 'span-corruption';

/** A row of the evaluation table: fp32 or a quantized variant, scored on the same examples. */
export interface FamilyReportVariant {
  name: string;
  /** 'fp32' or the quantization method. */
  method: string;
  /** Accuracy (classification) or exact match (seq2seq), as a fraction. */
  score: number;
  /** Macro F1 (classification; null when refused). */
  macroF1: number | null;
  /** Target perplexity over every val example (seq2seq; null when refused). */
  perplexity: number | null;
  /** fp32's score − this variant's (0 for fp32). */
  drop: number;
  /** The gate: maxAccuracyDrop or maxExactMatchDrop (null for fp32). */
  bound: number | null;
  /** Answers or predicted classes that differ from fp32's (null for fp32 or when refused). */
  flips: number | null;
  /** Bytes of the served ONNX model(s) (null when no variant was built, so none was measured). */
  bytes: number | null;
  published: boolean;
  rejectedReason: string | null;
  prefix: string | null;
}

/** The LoRA stage of the run: what trained, how its loss went, what the merged model scores. */
export interface FamilyReportLora {
  r: number;
  alpha: number;
  targetModules: string[];
  trainable: number;
  total: number;
  steps: number;
  /** Train loss per chunk: the chunk's first and last step (step = the chunk's last step). */
  chunkLoss: { step: number; first: number; last: number }[];
  /** The merged model on the validation split, beside the model the adapters trained on. */
  before: { loss: number; score: number; macroF1: number | null };
  after: { loss: number; score: number; macroF1: number | null };
  adapterPrefix: string;
  mergedCheckpoint: string;
}

export interface FamilyReport {
  runId: string;
  createdAt: string;
  task: FamilyReportTask;
  model: { family: string; params: number; config: Record<string, unknown>; from?: string | null };
  dataset: { prefix: string; trainTokens: number; valTokens: number; documents: number };
  /** The checkpoint the evaluation table scores (the merged LoRA model when there was a LoRA stage). */
  checkpoint: string;
  trainHistory: { round: number; loss: number }[];
  /** Per evaluated round: loss, perplexity, and accuracy + macro F1 (classification) or exact match (seq2seq) over `examples` (score null and examples 0 for mlm / span-corruption). */
  valHistory: { round: number; loss: number; perplexity: number; score: number | null; macroF1: number | null; examples: number }[];
  lora: FamilyReportLora | null;
  variants: FamilyReportVariant[];
  config: Record<string, unknown>;
}

const pctOf = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
const scoreName = (t: FamilyReportTask) => (t === 'classification' ? 'accuracy' : 'exact match');
const n = (x: number) => x.toLocaleString('en-US');

function kvTable(rows: [string, string][]): string {
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`;
}

/** What a pretraining run's perplexity is over. */
const pplName = (t: 'mlm' | 'span-corruption') => (t === 'mlm' ? 'masked-token perplexity' : 'span-corruption target perplexity');

function headlineText(r: FamilyReport): string {
  const [first, last] = [r.valHistory[0], r.valHistory[r.valHistory.length - 1]];
  if (isPretrainingTask(r.task)) return first && last ? `Validation ${pplName(r.task)} ${fmt(first.perplexity)} → ${fmt(last.perplexity)}, loss ${fmt(first.loss)} → ${fmt(last.loss)} (${r.valHistory.length - 1} rounds).` : '';
  const what = scoreName(r.task);
  const parts: string[] = [];
  if (first && last) parts.push(`Validation ${what} ${pctOf(first.score)} → ${pctOf(last.score)} over ${n(last.examples)} ${r.task === 'classification' ? 'documents' : 'examples'}, loss ${fmt(first.loss)} → ${fmt(last.loss)} (${r.valHistory.length - 1} rounds).`);
  if (r.lora) parts.push(`LoRA r=${r.lora.r}: ${what} ${pctOf(r.lora.before.score)} → ${pctOf(r.lora.after.score)}, loss ${fmt(r.lora.before.loss)} → ${fmt(r.lora.after.loss)}.`);
  for (const v of r.variants.filter((x) => x.method !== 'fp32')) parts.push(v.published ? `${v.name} published: ${what} ${pctOf(v.score)} (drop ${(100 * v.drop).toFixed(2)} points).` : `${v.name} refused: ${v.rejectedReason}.`);
  return parts.join(' ');
}

const headline = (r: FamilyReport) => `<p class="headline">${esc(headlineText(r))}</p>`;

function metricChart(r: FamilyReport): string {
  if (isPretrainingTask(r.task)) return lineChartSvg([{ name: `validation ${pplName(r.task)}`, color: '#2ca02c', points: r.valHistory.map((v) => ({ x: v.round, y: v.perplexity })) }], { title: 'Validation perplexity per round', xLabel: 'round', yLabel: 'perplexity' });
  const series = [{ name: `validation ${scoreName(r.task)}`, color: '#2ca02c', points: r.valHistory.map((v) => ({ x: v.round, y: v.score ?? NaN })) }];
  if (r.task === 'classification') series.push({ name: 'validation macro F1', color: '#9467bd', points: r.valHistory.filter((v) => v.macroF1 !== null).map((v) => ({ x: v.round, y: v.macroF1! })) });
  return lineChartSvg(series, { title: `${r.task === 'classification' ? 'Accuracy and macro F1' : 'Exact match'} per round`, xLabel: 'round', yLabel: 'fraction' });
}

function historyTable(r: FamilyReport): string {
  if (isPretrainingTask(r.task)) {
    const train = new Map(r.trainHistory.map((p) => [p.round, p.loss]));
    const rows = r.valHistory.map((v) => `<tr><td>${v.round}</td><td>${train.has(v.round) ? fmt(train.get(v.round)!) : '-'}</td><td>${fmt(v.loss)}</td><td>${fmt(v.perplexity)}</td></tr>`);
    return `<table class="grid"><tr><th>round</th><th>train loss</th><th>val loss</th><th>val ppl</th></tr>${rows.join('')}</table>`;
  }
  const f1 = r.task === 'classification';
  const head = `<tr><th>round</th><th>val loss</th><th>val ppl</th><th>${scoreName(r.task)}</th>${f1 ? '<th>macro F1</th>' : ''}<th>examples</th></tr>`;
  const rows = r.valHistory.map((v) => `<tr><td>${v.round}</td><td>${fmt(v.loss)}</td><td>${fmt(v.perplexity)}</td><td>${pctOf(v.score)}</td>${f1 ? `<td>${v.macroF1 === null ? '-' : fmt(v.macroF1)}</td>` : ''}<td>${n(v.examples)}</td></tr>`);
  return `<table class="grid">${head}${rows.join('')}</table>`;
}

function loraSection(r: FamilyReport, l: FamilyReportLora): string {
  const chart = lineChartSvg(
    [
      { name: 'train loss, first step of chunk', color: '#1f77b4', points: l.chunkLoss.map((c) => ({ x: c.step, y: c.first })) },
      { name: 'train loss, last step of chunk', color: '#d62728', dashed: true, points: l.chunkLoss.map((c) => ({ x: c.step, y: c.last })) },
    ],
    { title: 'LoRA train loss per chunk', xLabel: 'step', yLabel: 'cross-entropy (nats / token)' },
  );
  const f1 = r.task === 'classification';
  return `${kvTable([
    ['rank, alpha', `r=${l.r}, lora_alpha=${l.alpha}`],
    ['target modules', l.targetModules.join(', ')],
    ['trained parameters', `${n(l.trainable)} of ${n(l.total)} (${((100 * l.trainable) / l.total).toFixed(2)}%)`],
    ['steps', String(l.steps)],
    ['val loss before → after', `${fmt(l.before.loss)} → ${fmt(l.after.loss)}`],
    [`val ${scoreName(r.task)} before → after`, `${pctOf(l.before.score)} → ${pctOf(l.after.score)}`],
    ...(f1 ? ([['val macro F1 before → after', `${l.before.macroF1 === null ? '-' : fmt(l.before.macroF1)} → ${l.after.macroF1 === null ? '-' : fmt(l.after.macroF1)}`]] as [string, string][]) : []),
    ['adapter (PEFT files)', l.adapterPrefix],
    ['merged model', l.mergedCheckpoint],
  ])}\n${chart}`;
}

function variantTable(r: FamilyReport): string {
  const f1 = r.task === 'classification';
  const gate = f1 ? 'maxAccuracyDrop' : 'maxExactMatchDrop';
  const head = `<tr><th>variant</th><th>method</th><th>${scoreName(r.task)}</th>${f1 ? '<th>macro F1</th>' : '<th>target ppl</th>'}<th>drop (points)</th><th>${gate} (points)</th><th>flips</th><th>size</th><th>status</th></tr>`;
  const rows = r.variants.map((v) => {
    const second = f1 ? (v.macroF1 === null ? '-' : fmt(v.macroF1)) : v.perplexity === null ? '-' : fmt(v.perplexity);
    const status = v.published ? (v.method === 'fp32' ? 'reference' : 'published') : `refused: ${v.rejectedReason}`;
    return `<tr${v.published ? '' : ' class="rejected"'}><td>${esc(v.name)}</td><td>${esc(v.method)}</td><td>${pctOf(v.score)}</td><td>${second}</td><td>${(100 * v.drop).toFixed(2)}</td><td>${v.bound === null ? '-' : (100 * v.bound).toFixed(2)}</td><td>${v.flips ?? '-'}</td><td>${v.bytes === null ? '-' : `${(v.bytes / 1024).toFixed(1)} KiB`}</td><td>${esc(status)}</td></tr>`;
  });
  return `<table class="grid">${head}${rows.join('')}</table>`;
}

const CSS = `body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:980px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #eee;padding-bottom:4px}.dim{color:#777;font-size:13px}
.headline{background:#f3f8ff;border-left:4px solid #1f77b4;padding:8px 12px}
table{border-collapse:collapse;font-size:13px}table.grid th,table.grid td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.grid th{background:#f5f5f5}table.grid td:first-child,table.grid td:nth-child(2),table.grid td:last-child{text-align:left}
tr.rejected td{background:#fdecee}table.kv th{text-align:left;padding:2px 12px 2px 0;font-weight:normal;color:#555}
table.kv td{font-family:Menlo,Consolas,monospace}code{font-size:12px}
`;

/** What a pretraining run's validation figures cover, from the run's training settings (config.training). */
function pretrainingCoverage(r: FamilyReport): string {
  const t = (r.config.training ?? {}) as { evalBatches?: number; batchSize?: number; contextLength?: number };
  const rows = t.evalBatches !== undefined && t.batchSize !== undefined && t.contextLength !== undefined ? `the first ${t.evalBatches} val batches of ${t.batchSize} rows × ${t.contextLength} tokens` : 'the first evalBatches val batches';
  return r.task === 'mlm'
    ? `Masked-token perplexity: exp of the mean cross-entropy over the masked positions (15% of the tokens, seeded) of ${rows}.`
    : `Span-corruption target perplexity: exp of the decoder's mean cross-entropy over the target tokens (sentinels, the dropped spans, EOS) of ${rows} (seeded spans). No quantization or LoRA stage runs on a ${r.model.family} ${r.task} model yet.`;
}

/** The whole page. Pure: same report in, same bytes out. */
export function renderFamilyReportHtml(r: FamilyReport): string {
  const d = r.dataset;
  const examples = r.valHistory[r.valHistory.length - 1]?.examples ?? 0;
  const pre = isPretrainingTask(r.task);
  const scope = r.task === 'classification' ? `every validation document (${n(examples)})` : `the first ${n(examples)} validation examples (greedy answers, encoder once, decoder with its KV cache); loss and perplexity cover every validation example`;
  const coverage = pre ? pretrainingCoverage(r) : `${scoreName(r.task)} over ${scope}.`;
  const metricTitle = pre ? 'Validation perplexity' : r.task === 'classification' ? 'Accuracy and macro F1' : 'Exact match';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TruthGPT run ${esc(r.runId)}</title><style>${CSS}</style></head>
<body>
<h1>TruthGPT run <code>${esc(r.runId)}</code></h1>
<div class="dim">${esc(r.model.family)} ${esc(r.task)} · report written ${esc(r.createdAt)} · checkpoint <code>${esc(r.checkpoint)}</code></div>
${headline(r)}
<h2>Model and data</h2>
${kvTable([
  ['family, task', `${r.model.family} ${r.task}`],
  ...(r.model.from ? [['started from', r.model.from] as [string, string]] : []),
  ['parameters', n(r.model.params)],
  ...flatten(r.model.config),
  ['dataset', d.prefix],
  ['train / val tokens', `${n(d.trainTokens)} / ${n(d.valTokens)}`],
  ['documents', n(d.documents)],
])}
<h2>Loss curves</h2>
${lossCurvesSvg({ train: r.trainHistory, val: r.valHistory })}
<h2>${metricTitle}</h2>
<p class="coverage">${esc(coverage)}</p>
${metricChart(r)}
${historyTable(r)}
${r.lora ? `<h2>LoRA fine-tune</h2>\n${loraSection(r, r.lora)}\n` : ''}${pre ? '' : `<h2>Evaluation: fp32 and quantized variants side by side</h2>\n${variantTable(r)}\n`}<h2>Configuration</h2>
${kvTable(flatten(r.config))}
</body></html>
`;
}

/** The same story for a terminal (`truthgpt report <run>`): the headline, the metric per round, the table. */
export function renderFamilyReportText(r: FamilyReport): string {
  const what = scoreName(r.task);
  const f1 = r.task === 'classification';
  const lines = [`run ${r.runId} (${r.model.family} ${r.task}), checkpoint ${r.checkpoint}`, headlineText(r), ''];
  if (isPretrainingTask(r.task)) {
    const train = new Map(r.trainHistory.map((p) => [p.round, p.loss]));
    lines.push('round  train loss  val loss   val ppl');
    for (const v of r.valHistory) lines.push(`${String(v.round).padStart(5)}  ${(train.has(v.round) ? fmt(train.get(v.round)!) : '-').padStart(10)}  ${fmt(v.loss).padStart(8)}  ${fmt(v.perplexity).padStart(8)}`);
    return lines.join('\n');
  }
  lines.push(`round  val loss  ${what}${f1 ? '  macro F1' : ''}`);
  for (const v of r.valHistory) lines.push(`${String(v.round).padStart(5)}  ${fmt(v.loss).padStart(8)}  ${pctOf(v.score).padStart(what.length)}${f1 ? `  ${(v.macroF1 === null ? '-' : fmt(v.macroF1)).padStart(8)}` : ''}`);
  lines.push('');
  for (const v of r.variants) lines.push(`${v.name}: ${what} ${pctOf(v.score)}${f1 ? `, macro F1 ${v.macroF1 === null ? '-' : fmt(v.macroF1)}` : `, target ppl ${v.perplexity === null ? '-' : fmt(v.perplexity)}`}${v.method === 'fp32' ? '' : v.published ? `, drop ${(100 * v.drop).toFixed(2)} points (bound ${(100 * (v.bound ?? 0)).toFixed(2)}), published` : `, refused: ${v.rejectedReason}`}`);
  return lines.join('\n');
}
