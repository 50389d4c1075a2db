// `npm run fuzz -- --n N [--seed S] [--only I] [--verbose]`: feeds N generated bad inputs
// (test/fuzz/corpus.ts) to every entry point and counts what happened. Each case runs in a worker
// process (test/fuzz/worker.ts) under a deadline: a case that does not answer in time is a hang,
// and the worker is replaced. Prints a table by kind, every case that was not a clear error, and
// the last line
//   N bad inputs: C clear errors, X crashes, H hangs, A accepted
// Exits 1 unless every case was a clear error.

import { fork, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import type { CaseResult, Outcome } from './worker';

/** Seconds a case may take: the 50 MB spec file takes a few on a loaded 2-core machine. */
const DEADLINE_S = 30;

export interface FuzzSummary {
  results: CaseResult[];
  counts: Record<Outcome, number>;
  line: string;
}

class Worker {
  private child: ChildProcess | null = null;
  private ready: Promise<void> | null = null;

  private start(): Promise<void> {
    // The CLI must never reach a real stack: any connection it tries fails at once.
    const env = { ...process.env, TEMPORAL_ADDRESS: '127.0.0.1:1', TRUTHGPT_S3_ENDPOINT: 'http://127.0.0.1:1', TRUTHGPT_DEBUG: '', NODE_OPTIONS: '' };
    const child = fork(path.join(__dirname, 'worker.ts'), [], { execArgv: ['--import', 'tsx'], env, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    this.child = child;
    return new Promise((resolve, reject) => {
      child.once('message', (m) => (m === 'ready' ? resolve() : reject(new Error(`fuzz worker said ${JSON.stringify(m)}`))));
      child.once('exit', (code) => reject(new Error(`fuzz worker exited (${code}) before it was ready`)));
    });
  }

  async run(seed: number, i: number): Promise<CaseResult | Outcome> {
    this.ready ??= this.start();
    await this.ready;
    const child = this.child!;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        cleanup();
        this.kill();
        resolve('hang');
      }, DEADLINE_S * 1000);
      const onMessage = (m: CaseResult) => {
        if (m.i !== i) return;
        cleanup();
        resolve(m);
      };
      const onExit = () => {
        cleanup();
        this.child = null;
        this.ready = null;
        resolve('crash');
      };
      const cleanup = () => {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
      child.send({ seed, i });
    });
  }

  kill(): void {
    this.child?.kill('SIGKILL');
    this.child = null;
    this.ready = null;
  }

  stop(): void {
    if (this.child?.connected) this.child.send('exit');
    this.child = null;
  }
}

/**
 * Runs cases [0, n) of `seed` (or only `only`), calling `onCase` after each.
 * @example const s = await runFuzz(50, 1); console.log(s.line)
 */
export async function runFuzz(n: number, seed: number, o: { only?: number; onCase?: (r: CaseResult) => void } = {}): Promise<FuzzSummary> {
  const { fuzzCase } = await import('./corpus');
  const worker = new Worker();
  const results: CaseResult[] = [];
  try {
    for (const i of o.only !== undefined ? [o.only] : Array.from({ length: n }, (_, k) => k)) {
      const r = await worker.run(seed, i);
      const c = typeof r === 'string' ? fuzzCase(seed, i) : null;
      const result = typeof r === 'string' ? { i, kind: c!.kind, name: c!.name, outcome: r, message: r === 'hang' ? `no answer in ${DEADLINE_S} s` : 'the worker process died' } : r;
      results.push(result);
      o.onCase?.(result);
    }
  } finally {
    worker.stop();
  }
  const counts: Record<Outcome, number> = { clear: 0, crash: 0, hang: 0, accepted: 0 };
  for (const r of results) counts[r.outcome]++;
  const line = `${results.length} bad inputs: ${counts.clear} clear errors, ${counts.crash} crashes, ${counts.hang} hangs, ${counts.accepted} accepted`;
  return { results, counts, line };
}

function table(results: CaseResult[]): string {
  const kinds = [...new Set(results.map((r) => r.kind))];
  const rows = kinds.map((k) => {
    const of = results.filter((r) => r.kind === k);
    const n = (o: Outcome) => of.filter((r) => r.outcome === o).length;
    return [k, of.length, n('clear'), n('crash'), n('hang'), n('accepted')];
  });
  const head = ['kind', 'cases', 'clear', 'crash', 'hang', 'accepted'];
  return [head, ...rows].map((r) => r.map((c, j) => (j === 0 ? String(c).padEnd(12) : String(c).padStart(10))).join('')).join('\n');
}

async function main(): Promise<void> {
  const int = (v: string) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('a non-negative integer');
    return n;
  };
  const opts = new Command('fuzz')
    .option('--n <n>', 'number of cases', int, 500)
    .option('--seed <s>', 'corpus seed', int, 1)
    .option('--only <i>', 'run only case i (to reproduce one)', int)
    .option('--verbose', 'print every case')
    .parse(process.argv)
    .opts<{ n: number; seed: number; only?: number; verbose?: boolean }>();
  const t0 = Date.now();
  const s = await runFuzz(opts.n, opts.seed, {
    only: opts.only,
    onCase: (r) => {
      if (opts.verbose || r.outcome !== 'clear') console.log(`#${r.i} ${r.kind} ${r.outcome}: ${r.name}\n    ${r.message.replace(/\n/g, '\n    ')}`);
      else if (r.i % 50 === 49) console.error(`fuzz: ${r.i + 1} cases, ${Math.round((Date.now() - t0) / 1000)} s`);
    },
  });
  console.log(`\n${table(s.results)}\n\nseed ${opts.seed}, ${Math.round((Date.now() - t0) / 1000)} s\n${s.line}`);
  if (s.counts.clear !== s.results.length) process.exitCode = 1;
}

if (require.main === module) void main();
