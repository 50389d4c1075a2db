// The run report for a terminal: the same story as the HTML page in plain text (headline numbers,
// loss per round, the eval table, samples), for `truthgpt report ID`.

import { coverageText, trainedShare, type RunReport } from './html';
import { fmt } from './svg';

const pad = (s: string, n: number, right = false) => (right ? s.padStart(n) : s.padEnd(n));

/** Columns padded to their widest cell; numbers right-aligned. */
function table(head: string[], rows: string[][], rightFrom = 1): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => pad(c, widths[i], i >= rightFrom)).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Labels in one column, values in the next. */
function keyValues(rows: [string, string][]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${pad(k, width)}  ${v}`).join('\n');
}

export function renderReportText(r: RunReport): string {
  const out: string[] = [];
  const first = r.valHistory[0];
  const last = r.valHistory[r.valHistory.length - 1];
  out.push(`TruthGPT run ${r.runId}  (report ${r.createdAt})`);
  out.push(`model      ${r.model.family} ${r.model.params.toLocaleString('en-US')} params${r.model.from ? ` from ${r.model.from}` : ''}  ${Object.entries(r.model.config).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`);
  out.push(`dataset    ${r.dataset.prefix}${r.lora ? ' (LoRA; evaluated on it)' : ''}  tokenizer ${r.dataset.tokenizer}  train ${r.dataset.trainTokens} / val ${r.dataset.valTokens} tokens`);
  out.push(`checkpoint ${r.checkpoint}`);
  if (first && last) out.push(`val loss   ${fmt(first.loss)} (round ${first.round}) → ${fmt(last.loss)} (round ${last.round}), perplexity ${fmt(last.perplexity)}`);
  const l = r.lora;
  if (l) {
    out.push(`lora       then LoRA-tuned on ${l.datasetPrefix}: val loss ${fmt(l.valLossBefore)} → ${fmt(l.valLossAfter)}, ${(l.trainableFraction * 100).toFixed(2)}% of parameters trained; the variants below are the merged model`);
  }
  out.push('', l ? `Loss per round (pretraining on ${l.pretrainDatasetPrefix})` : 'Loss per round');
  const rounds = [...new Set([...r.trainHistory.map((p) => p.round), ...r.valHistory.map((p) => p.round)])].sort((a, b) => a - b);
  out.push(
    table(
      ['round', 'train loss', 'val loss', 'val ppl'],
      rounds.map((round) => {
        const t = r.trainHistory.find((p) => p.round === round);
        const v = r.valHistory.find((p) => p.round === round);
        return [String(round), t ? fmt(t.loss, 5) : '-', v ? fmt(v.loss, 5) : '-', v ? fmt(v.perplexity, 5) : '-'];
      }),
    ),
  );
  if (l) {
    out.push('', 'LoRA fine-tune (adapters on the frozen base, then merged into it)');
    out.push(
      keyValues([
        ['base checkpoint', l.baseCheckpoint],
        ['dataset', l.datasetPrefix],
        ['steps', String(l.steps)],
        ['val loss', `${fmt(l.valLossBefore, 5)} → ${fmt(l.valLossAfter, 5)}`],
        ['val perplexity', `${fmt(l.perplexityBefore, 5)} → ${fmt(l.perplexityAfter, 5)}`],
        ['trainable', trainedShare(l)],
        ['adapter', l.adapterKey],
      ]),
    );
  }
  const e = r.evaluation;
  out.push('', `Variants (ppl over ${coverageText(e)}; latency per ${e.batchSize}×${e.contextLength} batch on ${e.device})`);
  out.push(
    table(
      ['variant', 'method', 'bytes', 'val ppl', 'Δ ppl', 'bound', 'p50 ms', 'p95 ms', 'tokens/s', 'published'],
      r.variants.map((v) => [
        v.name,
        v.method,
        String(v.sizeBytes),
        fmt(v.ppl, 6),
        v.method === 'fp32' ? '-' : `${v.pplDeltaPct >= 0 ? '+' : ''}${v.pplDeltaPct.toFixed(2)}%`,
        v.maxPplIncrease === null ? '-' : `${(v.maxPplIncrease * 100).toFixed(2)}%`,
        v.p50Ms.toFixed(2),
        v.p95Ms.toFixed(2),
        String(Math.round(v.tokensPerSec)),
        v.published ? 'yes' : 'NO',
      ]),
      2,
    ),
  );
  for (const v of r.variants.filter((x) => !x.published)) out.push(`  ${v.name} not published: ${v.rejectedReason ?? 'rejected'}`);
  if (r.samples.length) {
    out.push('', 'Samples');
    for (const s of r.samples) out.push(`[${s.variant}, ${s.settings}] ${JSON.stringify(s.prompt + s.text)}`);
  }
  return out.join('\n');
}
