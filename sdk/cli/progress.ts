// Live progress of a pipeline run for `truthgpt run` and `truthgpt watch`: a cli-progress bar fed
// by the workflows' progress queries (stage, round/step, tokens/s, latest losses), then a summary
// table of the stages and variants with the run's Web UI link. Without a TTY (CI logs) it prints
// one line whenever the stage or round changes instead of redrawing. Also the spinner line of a
// first-time Temporal CLI (or versitygw) build during `up` / `demo`.

import { SingleBar } from 'cli-progress';
import { coverageText } from '../../engine/report';
import { formatBuildProgress, type CliBuildProgress } from '../../infra/temporal';
import { RunFailedError, type PipelineResult, type PipelineRun, type RunProgress } from '../index';

const fmtLoss = (xs: number[]) => (xs.length ? xs[xs.length - 1].toFixed(3) : '-');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ProgressLine {
  stage: string;
  round: string;
  step: number;
  steps: number;
  tokensPerSec: string;
  train: string;
  val: string;
  /** The activity that failed last and waits to be retried, with its attempt and error; '' when none. */
  retry: string;
}

/** What the bar shows, from one progress snapshot; tokens/s from tokens seen over the watch's time. */
export function progressLine(p: RunProgress, tokensPerSec: number | null): ProgressLine {
  // During the LoRA stage the bar follows the fine-tune child (chunks as rounds), else training.
  const inLora = p.pipeline?.stage === 'lora' && p.lora !== null;
  const t = inLora ? p.lora : p.training;
  const stage = (p.pipeline?.stage === 'train' || inLora) && t ? `${p.pipeline!.stage}:${t.stage}` : (p.pipeline?.stage ?? p.status.toLowerCase());
  return {
    stage: `${stage}${p.pipeline?.paused ? ' (paused)' : ''}`,
    round: t ? `${t.round}/${t.rounds}` : '-',
    step: t?.step ?? 0,
    steps: t?.steps ?? 1,
    tokensPerSec: tokensPerSec === null ? '-' : tokensPerSec.toFixed(0),
    train: t ? fmtLoss(t.recentTrainLoss) : '-',
    val: t ? fmtLoss(t.recentValLoss) : '-',
    retry: retryText(p),
  };
}

/** `retrying trainShard (attempt 3): <its last error>` for the most-tried retrying activity, or ''. */
function retryText(p: RunProgress): string {
  const worst = [...(p.retrying ?? [])].sort((a, b) => b.attempt - a.attempt)[0];
  if (!worst) return '';
  const msg = worst.lastFailure.split('\n')[0];
  return `retrying ${worst.activity} (attempt ${worst.attempt}): ${msg.length > 160 ? `${msg.slice(0, 160)}…` : msg}`;
}

/** Polls `run.progress()` until the run closes, drawing the bar on stderr; returns the last snapshot. */
export async function watchRun(run: PipelineRun, opts: { intervalMs?: number; stream?: NodeJS.WriteStream } = {}): Promise<RunProgress> {
  const stream = opts.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY);
  const bar = new SingleBar({
    stream,
    format: '{stage} |{bar}| round {round} step {value}/{total} | {tps} tok/s | train {train} val {val}{retry}',
    barsize: 24,
    hideCursor: tty,
    noTTYOutput: false,
  });
  let started = false;
  let lastKey = '';
  let first: { at: number; tokens: number } | null = null;
  let p: RunProgress;
  for (;;) {
    p = await run.progress();
    const t = p.training;
    if (t && t.tokensSeen > 0 && !first) first = { at: Date.now(), tokens: t.tokensSeen };
    // tokens/s over the rounds this watch has seen (tokens only move when a round commits).
    const tps = t && first && Date.now() > first.at && t.tokensSeen > first.tokens ? ((t.tokensSeen - first.tokens) * 1000) / (Date.now() - first.at) : null;
    const line = progressLine(p, tps);
    const payload = { stage: line.stage, round: line.round, tps: line.tokensPerSec, train: line.train, val: line.val, retry: line.retry ? ` | ${line.retry}` : '' };
    if (tty) {
      if (!started) bar.start(line.steps, line.step, payload);
      started = true;
      bar.setTotal(line.steps);
      bar.update(line.step, payload);
    } else {
      const key = `${line.stage} ${line.round} ${line.retry.replace(/\):.*/, ')')}`;
      if (key !== lastKey) {
        stream.write(`[${new Date().toISOString().slice(11, 19)}] ${line.stage}  round ${line.round}  step ${line.step}/${line.steps}  train ${line.train}  val ${line.val}  ${line.tokensPerSec} tok/s${line.retry ? `\n  ${line.retry}` : ''}\n`);
      }
      lastKey = key;
    }
    if (p.status !== 'RUNNING') break;
    await sleep(opts.intervalMs ?? 500);
  }
  if (started) bar.stop();
  return p;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * Progress of a first-time Temporal CLI (or versitygw) build (minutes) on a TTY: one redrawn line with a spinner,
 * the elapsed time, what go does and where its log is; cleared when the build ends. Without a TTY,
 * pass nothing to stackUp/ensureTemporalCli instead: they log a plain line every 30 s.
 */
export function cliBuildProgressLine(stream: NodeJS.WriteStream = process.stderr): (p: CliBuildProgress) => void {
  const bar = new SingleBar({ stream, format: '{spinner} {text}', hideCursor: true, clearOnComplete: true, linewrap: false, noTTYOutput: false });
  let started = false;
  let frame = 0;
  return (p) => {
    const payload = { spinner: SPINNER[frame++ % SPINNER.length], text: formatBuildProgress(p) };
    if (p.done) {
      if (started) bar.stop();
      started = false;
      return;
    }
    if (!started) bar.start(1, 0, payload);
    else bar.update(0, payload);
    started = true;
  };
}

/** Plain-text table: columns padded to their widest cell. */
export function table(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

/** The end-of-run summary: stages, variants, report, UI link. */
export function summarize(r: PipelineResult, uiUrl: string, bucket: string, opts: { links?: boolean } = {}): string {
  const stages = table([['stage', 'status', 'outcome'], ...r.stages.map((s) => [s.stage, s.status, s.summary])]);
  const variants = table([
    ['variant', 'method', 'val ppl', 'Δ ppl', 'p50 ms', 'tok/s', 'size', 'published'],
    ...r.variants.map((v) => [v.name, v.method, v.ppl.toFixed(3), `${v.pplDeltaPct >= 0 ? '+' : ''}${v.pplDeltaPct.toFixed(2)}%`, v.p50Ms.toFixed(2), v.tokensPerSec.toFixed(0), `${(v.sizeBytes / 1024).toFixed(0)} KiB`, v.published ? 'yes' : `no: ${v.rejectedReason ?? ''}`]),
  ]);
  const t = r.training;
  const pct = (x: number | null) => (x === null ? '-' : `${(100 * x).toFixed(2)}%`);
  // A classifier's variants: accuracy against fp32's, over every validation document.
  const classifier = r.classifierVariants?.length
    ? table([
        ['variant', 'method', 'val accuracy', 'fp32 accuracy', 'macro F1', 'documents', 'size', 'published'],
        ...r.classifierVariants.map((v) => [v.name, v.method, pct(v.accuracy), pct(v.fp32Accuracy), v.macroF1?.toFixed(3) ?? '-', String(v.examples), `${(v.bytes / 1024).toFixed(0)} KiB`, v.published ? 'yes' : `no: ${v.rejectedReason ?? ''}`]),
      ])
    : null;
  // A T5 seq2seq model's variants: exact match against fp32's, target perplexity beside.
  const t5 = r.t5Variants?.length
    ? table([
        ['variant', 'method', 'val exact match', 'fp32 exact match', 'val ppl', 'fp32 ppl', 'examples', 'size', 'published'],
        ...r.t5Variants.map((v) => [v.name, v.method, pct(v.exactMatch), pct(v.fp32ExactMatch), v.perplexity?.toFixed(3) ?? '-', v.fp32Perplexity?.toFixed(3) ?? '-', String(v.examples), `${(v.bytes / 1024).toFixed(0)} KiB`, v.published ? 'yes' : `no: ${v.rejectedReason ?? ''}`]),
      ])
    : null;
  return [
    `${r.workflowId}: ${t.rounds} rounds, ${t.steps} steps per worker, ${t.tokensSeen} tokens, best val loss ${t.bestValLoss?.toFixed(4) ?? '-'}, ${(r.wallMs / 1000).toFixed(1)} s${t.resumedFrom ? ` (resumed ${t.resumedFrom.runId} at round ${t.resumedFrom.round})` : ''}`,
    '',
    stages,
    '',
    classifier ?? t5 ?? variants,
    ...(r.evaluation ? [`val ppl over ${coverageText(r.evaluation)}`] : []),
    ...(opts.links === false
      ? []
      : [
          '',
          `model     ${r.lora ? r.lora.merged.prefix : t.checkpoint.prefix}  (truthgpt export … --format hf --out DIR)`,
          ...(r.lora ? [`adapter   ${r.lora.adapterPrefix}`] : []),
          ...(r.reportKey ? [`report    s3://${bucket}/${r.reportKey}`] : []),
          `Web UI    ${uiUrl}`,
        ]),
  ].join('\n');
}

/** Waits for the result after watching; a failed run becomes a one-line message and exit code 1. */
export async function resultOrExit(run: PipelineRun): Promise<PipelineResult | null> {
  try {
    return await run.result();
  } catch (err) {
    if (!(err instanceof RunFailedError)) throw err;
    const fix = err.status === 'CANCELLED' || err.status === 'FAILED' || err.status === 'TERMINATED' ? `; continue it from its last checkpoint with \`truthgpt retry ${err.workflowId}\`` : '';
    console.error(`truthgpt: ${err.message}${err.type ? ` [${err.type}]` : ''}${fix}`);
    console.error(`  ${run.uiUrl}`);
    process.exitCode = 1;
    return null;
  }
}
