// `truthgpt report ID [--out file.html] [--json]`: the run report written by postTrainingWorkflow,
// fetched from S3 by run id (printed as text, saved as HTML, or printed as JSON).
// `truthgpt generate --model REF "prompt"`: decodes with a published/rejected model, its
// model.onnx key, or a training checkpoint (exported on the fly), and prints the text.

import type { Command } from 'commander';
import fs from 'node:fs';
import { postKeys } from '../../artifacts/keys';
import { REPORT_HTML, REPORT_JSON, resolveModel, resolveT5, tokenizerFor, type ResolvedT5 } from '../../artifacts/models';
import { Decoder } from '../../engine/eval';
import { T5Generator } from '../../engine/eval/generate-t5';
import type { Tokenizer } from '../../engine/data/tokenizer';
import { t5DecodeInfo } from '../../engine/models/export-t5-cached';
import { decoderInfo } from '../../engine/models/export';
import { renderFamilyReportText, renderReportText, type FamilyReport, type RunReport } from '../../engine/report';
import { NotFoundError, type ArtifactStore } from '../../infra/store';
import { withStore } from '../store';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';
import { runIdArgument } from './arguments';
import { UsageError } from './usage-error';

/** A failure with a vocabulary type (MissingArtifact, InvalidInput, ...) is a user's mistake here: one line. */
export function asUsage(err: unknown): unknown {
  const e = err as { type?: string; message?: string };
  if (err instanceof NotFoundError || (typeof e?.type === 'string' && ['MissingArtifact', 'InvalidInput', 'CorruptCheckpoint', 'InvalidConfig'].includes(e.type))) {
    return new UsageError(e.message ?? String(err));
  }
  return err;
}

/**
 * The stored report of a run: its HTML and its JSON.
 * @example const { report, html } = await fetchReport(store, 'brown-1')
 */
export async function fetchReport(store: ArtifactStore, runId: string): Promise<{ report: RunReport | FamilyReport; html: string; prefix: string }> {
  const prefix = postKeys.report(runId);
  if (!(await store.readManifest(prefix))) {
    throw new UsageError(`run ${runId} has no report: nothing committed under s3://${store.bucket}/${prefix} (has its postTraining stage finished?)`);
  }
  const [json, html] = await Promise.all([store.getVerified(prefix, REPORT_JSON), store.getVerified(prefix, REPORT_HTML)]);
  return { report: JSON.parse(json.toString('utf8')) as RunReport | FamilyReport, html: html.toString('utf8'), prefix };
}

export interface GenerateOptions {
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  tokenizer?: string;
  threads: number;
}

/**
 * Continues `prompt` with the model at `ref` for `maxNewTokens` tokens (fewer only at the
 * tokenizer's end-of-text): past the model's block_size the context slides (engine/eval/generate.ts),
 * and a prompt longer than block_size is cropped to its last block_size tokens (`promptCropped`
 * counts the dropped ones). Returns the new text and the decoding speed.
 * @example const { text } = await generateText(store, 'runs/brown-1/models/int8', 'The ', { maxNewTokens: 32, temperature: 0, topK: 0, topP: 1, seed: 0, threads: 1 })
 */
export async function generateText(store: ArtifactStore, ref: string, prompt: string, o: GenerateOptions) {
  const t5 = await resolveT5(store, ref);
  if (t5) return generateT5Text(t5, await tokenizerFor(store, t5, o.tokenizer), prompt, o);
  const model = await resolveModel(store, ref);
  const tok = await tokenizerFor(store, model, o.tokenizer);
  const ids = await tok.encode(prompt);
  if (ids.length === 0) throw new UsageError('generate: the prompt is empty');
  const d = await Decoder.create(model.bytes, decoderInfo(model.config, model.kvCache), { intraOpThreads: o.threads });
  try {
    const t0 = performance.now();
    const r = await d.decode(ids, { maxNewTokens: o.maxNewTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, stopToken: tok.eot });
    const ms = performance.now() - t0;
    const out = r.tokens;
    return {
      model: model.source,
      method: model.method,
      prompt,
      text: await tok.decode(out.filter((t) => t !== tok.eot)),
      tokens: out.length,
      tokensPerSec: out.length / (ms / 1000),
      blockSize: model.config.block_size,
      promptTokens: ids.length,
      promptCropped: r.promptCropped,
      slides: r.slides,
      ids: out,
    };
  } finally {
    await d.release();
  }
}

/**
 * T5: the prompt is the source (ending in `</s>`, as Hugging Face's tokenizer adds it), encoded
 * once; the decoder writes up to maxNewTokens tokens and stops at `</s>`. T5's positions are
 * relative, so there is no block_size to slide past.
 */
async function generateT5Text(t5: ResolvedT5, tok: Tokenizer, prompt: string, o: GenerateOptions) {
  const ids = await tok.encode(prompt);
  if (ids.length === 0) throw new UsageError('generate: the prompt is empty');
  const eos = t5.eos ?? tok.eot;
  const src = ids[ids.length - 1] === eos ? ids : [...ids, eos];
  const g = await T5Generator.create(t5.config, t5.weights, { session: { intraOpThreads: o.threads } });
  try {
    const t0 = performance.now();
    const out = await g.generate(src, { maxNewTokens: o.maxNewTokens, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, stopToken: eos });
    const ms = performance.now() - t0;
    const pad = t5DecodeInfo(t5.config).decoderStartTokenId;
    return {
      model: t5.source,
      method: 't5',
      prompt,
      text: await tok.decode(out.filter((t) => t !== eos && t !== pad)),
      tokens: out.length,
      tokensPerSec: out.length / (ms / 1000),
      blockSize: null,
      promptTokens: src.length,
      promptCropped: 0,
      slides: 0,
      ids: out,
    };
  } finally {
    await g.release();
  }
}

function num(name: string, min: number, max: number, integer: boolean) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new UsageError(`${name}: expected ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got "${v}"`);
    }
    return n;
  };
}

export function registerReportCommands(program: Command): void {
  withStackFlags(program.command('report'))
    .description('fetch the run report (loss curves, fp32 vs quantized table, samples, config) from S3 by run id')
    .argument('<id>', 'run id (the pipeline or postTrainingWorkflow runId)', runIdArgument('run id'))
    .option('--out <file>', 'write the self-contained HTML report to this file')
    .option('--json', 'print the report data as JSON')
    .action(async (id: string, flags: StackFlags & { out?: string; json?: boolean }) => {
      const config = configFromFlags(flags);
      const { report, html, prefix } = await withStore(config, (s) => fetchReport(s, id));
      if (flags.out) {
        fs.writeFileSync(flags.out, html);
        console.error(`wrote ${flags.out} (${html.length} bytes) from s3://${config.s3.bucket}/${prefix}/${REPORT_HTML}`);
      }
      if (flags.json) console.log(JSON.stringify(report, null, 2));
      // A classifier's or a seq2seq run's report (engine/report/family.ts) says which task it tells.
      else if (!flags.out) console.log(`${'task' in report ? renderFamilyReportText(report) : renderReportText(report)}\n\nHTML: s3://${config.s3.bucket}/${prefix}/${REPORT_HTML} (save it with --out report.html)`);
    });

  withStackFlags(program.command('generate'))
    .description('continue a prompt with a stored model (exported, quantized, or a training checkpoint) and print the text')
    .argument('<prompt>', 'text to continue')
    .requiredOption('--model <ref>', 'S3 key or prefix: runs/<id>/models/<name>, its model.onnx, or a checkpoint such as runs/<id>/global/r000003')
    .option('--max-new-tokens <n>', 'tokens to generate (past block_size the context slides)', num('--max-new-tokens', 1, 1 << 20, true), 64)
    .option('--temperature <t>', '0 = greedy', num('--temperature', 0, 100, false), 0)
    .option('--top-k <k>', 'keep the k most likely tokens (0 = all)', num('--top-k', 0, 1 << 30, true), 0)
    .option('--top-p <p>', 'nucleus sampling mass', num('--top-p', Number.MIN_VALUE, 1, false), 1)
    .option('--seed <s>', 'sampling seed', num('--seed', -(2 ** 31), 2 ** 31 - 1, true), 0)
    .option('--tokenizer <t>', "byte | gpt2 | S3 key of a dataset's tokenizer.json (default: the model's own)")
    .option('--threads <n>', 'ORT intra-op threads', num('--threads', 1, 256, true), 1)
    .option('--json', 'print {model, prompt, text, tokens, tokensPerSec, blockSize, promptTokens, promptCropped, slides, ids} as JSON (blockSize null for T5)')
    .action(async (prompt: string, flags: StackFlags & GenerateOptions & { model: string; json?: boolean }) => {
      const config = configFromFlags(flags);
      const r = await withStore(config, (s) => generateText(s, flags.model, prompt, flags)).catch((err: unknown) => {
        throw asUsage(err);
      });
      if (flags.json) console.log(JSON.stringify(r, null, 2));
      else {
        console.log(r.prompt + r.text);
        if (r.promptCropped) console.error(`(the prompt is ${r.promptTokens} tokens, longer than the model's block_size ${r.blockSize}: it saw only the last ${r.blockSize})`);
        const slid = r.slides ? `; the context slid ${r.slides} time${r.slides > 1 ? 's' : ''} past block_size ${r.blockSize}` : '';
        console.error(`(${r.model}, ${r.method}: ${r.tokens} tokens at ${r.tokensPerSec.toFixed(1)} tokens/s${slid})`);
      }
    });
}
