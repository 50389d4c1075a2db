// Runs fuzz cases for test/fuzz/main.ts in its own process (so a hang or a crash of one case can be
// told from the others): receives { seed, i } over IPC, runs case i through its real entry point,
// and answers with the outcome.
//
//   clear     refused with an error a user can act on: no stack trace, not the CLI's "looks like a
//             bug" fallback, naming the file / field / option / key it refused
//   crash     anything else that was thrown (TypeError, RangeError, an untyped error)
//   accepted  the entry point took the input (or passed it on to the network)
// A hang is the parent's verdict: no answer within its deadline.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CommanderError } from 'commander';
import { readSafetensors } from '../../engine/checkpoint/safetensors';
import { loadModel, serializeModel } from '../../engine/graph/onnx';
import { createSession } from '../../engine/runtime';
import { InvalidKeyError, validateKey, validatePrefix } from '../../infra/keys';
import { describeCliError } from '../../sdk/cli/errors';
import { buildProgram } from '../../sdk/cli/main';
import { fuzzCase, type FuzzCase } from './corpus';

export type Outcome = 'clear' | 'crash' | 'accepted' | 'hang';
export interface CaseResult {
  i: number;
  kind: FuzzCase['kind'];
  name: string;
  outcome: Outcome;
  message: string;
}

const STACK = /\n\s+at .+:\d+:\d+/;
const NETWORK = /Temporal is not reachable|ECONNREFUSED|connect E|not reachable at/;

/** Runs the CLI in this process; what it printed and how it ended. */
async function cli(args: string[]): Promise<{ threw: unknown; printed: string; exitCode: number }> {
  let printed = '';
  const write = (s: string) => void (printed += s);
  const [log, error, warn] = [console.log, console.error, console.warn];
  console.log = console.error = console.warn = (...a: unknown[]) => write(`${a.map(String).join(' ')}\n`);
  const before = process.exitCode;
  process.exitCode = 0;
  let threw: unknown = null;
  try {
    await buildProgram({ exitOverride: true, output: { writeOut: write, writeErr: write } }).parseAsync(['node', 'truthgpt', ...args]);
  } catch (err) {
    threw = err;
  } finally {
    [console.log, console.error, console.warn] = [log, error, warn];
  }
  const exitCode = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { threw, printed, exitCode };
}

function judgeCli(r: Awaited<ReturnType<typeof cli>>, mustName: string | null): { outcome: Outcome; message: string } {
  if (r.threw === null) {
    // Some commands report a failure by printing it and setting the exit code.
    if (r.exitCode !== 0 && r.printed.trim() && !STACK.test(r.printed)) return { outcome: NETWORK.test(r.printed) ? 'accepted' : 'clear', message: r.printed.trim() };
    return { outcome: 'accepted', message: r.printed.trim() || '(no output, exit 0)' };
  }
  if (r.threw instanceof CommanderError) return { outcome: 'clear', message: r.printed.trim() || r.threw.message };
  const message = describeCliError(r.threw, {});
  if (message.includes('looks like a bug') || STACK.test(message)) return { outcome: 'crash', message };
  if (NETWORK.test(message)) return { outcome: 'accepted', message };
  if (mustName !== null && !message.includes(mustName)) return { outcome: 'crash', message: `does not name ${mustName}: ${message}` };
  return { outcome: 'clear', message };
}

/** A thrown error from a file reader: clear when it is a plain Error naming `source`. */
function judgeThrown(err: unknown, source: string): { outcome: Outcome; message: string } {
  const e = err as Error;
  const message = e?.message ?? String(err);
  if (!(err instanceof Error) || ['TypeError', 'RangeError', 'ReferenceError', 'SyntaxError'].includes(e.name)) return { outcome: 'crash', message: `${e?.name}: ${message}` };
  if (!message.includes(source)) return { outcome: 'crash', message: `does not name ${source}: ${message}` };
  return { outcome: 'clear', message };
}

export async function runCase(seed: number, i: number, tmp: string): Promise<CaseResult> {
  const c = fuzzCase(seed, i);
  const done = (o: { outcome: Outcome; message: string }): CaseResult => ({ i, kind: c.kind, name: c.name, outcome: o.outcome, message: o.message.split('\n').slice(0, 4).join('\n').slice(0, 600) });
  switch (c.kind) {
    case 'spec': {
      const file = path.join(tmp, `case-${i}${c.file.ext}`);
      fs.writeFileSync(file, c.file.bytes);
      try {
        return done(judgeCli(await cli(c.command.map((a) => (a === '<file>' ? file : a))), file));
      } finally {
        fs.rmSync(file, { force: true });
      }
    }
    case 'cli':
      return done(judgeCli(await cli(c.args), null));
    case 'safetensors': {
      const source = 'fuzz.safetensors';
      try {
        readSafetensors(c.bytes, source);
        return done({ outcome: 'accepted', message: 'read without error' });
      } catch (err) {
        return done(judgeThrown(err, source));
      }
    }
    case 'onnx': {
      const dir = fs.mkdtempSync(path.join(tmp, 'onnx-'));
      const file = path.join(dir, 'model.onnx');
      fs.writeFileSync(file, c.bytes);
      if (c.external) fs.writeFileSync(path.join(dir, c.external.name), c.external.bytes);
      try {
        // What a fine-tune of an imported .onnx does with it: load, then open a session on it.
        const g = loadModel(file);
        // The session is opened on the loaded graph's bytes, so its errors are named here, as the
        // fine-tune's base loader names its key.
        const session = await createSession(serializeModel(g).model).catch((err: unknown) => {
          throw new Error(`${file}: ${(err as Error).message}`);
        });
        await session.release();
        return done({ outcome: 'accepted', message: 'loaded and opened a session' });
      } catch (err) {
        return done(judgeThrown(err, file));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
    case 'key':
      try {
        validateKey(c.key);
        validatePrefix(c.key);
        return done({ outcome: 'accepted', message: 'valid key' });
      } catch (err) {
        return done(err instanceof InvalidKeyError ? { outcome: 'clear', message: err.message } : judgeThrown(err, c.key));
      }
  }
}

if (require.main === module) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'truthgpt-fuzz-'));
  process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  process.on('message', (m: { seed: number; i: number } | 'exit') => {
    if (m === 'exit') process.exit(0);
    runCase(m.seed, m.i, tmp).then(
      (r) => process.send!(r),
      (err: unknown) => process.send!({ i: m.i, kind: 'spec', name: `case ${m.i}`, outcome: 'crash', message: `harness: ${(err as Error).stack ?? err}` } satisfies CaseResult),
    );
  });
  process.send!('ready');
}
