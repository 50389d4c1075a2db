// `npm run faults -- --n N [--seed S] [--out DIR] [--kinds a,b] [--deadline SECONDS] [--keep]`:
// N tiny pipelines on a fresh local stack, one fault each (campaign.ts). Prints a line per run,
// the table by fault kind and, last, exactly
//   N runs: A completed identical, B failed with a named cause, L lost, M mismatched
// Writes campaign.json, campaign.svg and campaign.html under --out. Exits 1 when a run was lost,
// mismatched, hung or failed without a named cause, or a committed artifact was lost or changed.

import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { runCampaign } from './campaign';
import { FAULT_KINDS, type FaultKind } from './faults';
import { formatTable, writeReport } from './report';

const int = (what: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${what}: expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return n;
};

const kindsOf = (v: string): FaultKind[] => {
  const ks = v.split(',').map((s) => s.trim());
  for (const k of ks) if (!(FAULT_KINDS as readonly string[]).includes(k)) throw new InvalidArgumentError(`--kinds: unknown fault ${JSON.stringify(k)}; one of ${FAULT_KINDS.join(', ')}`);
  return ks as FaultKind[];
};

async function main(): Promise<void> {
  // The AWS SDK's own switch for its Node-version notice (README, "Node version").
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const program = new Command('npm run faults --')
    .description('Runs N tiny pipelines on a fresh local stack with one injected fault each and checks that nothing was lost or changed.')
    .requiredOption('--n <runs>', 'number of faulted runs', int('--n', 1))
    .option('--seed <seed>', 'seed of the draws (fault kind, variant, moment)', int('--seed', 0), 1)
    .option('--out <dir>', 'folder for campaign.json, campaign.svg, campaign.html', 'test-output/faults')
    .option('--kinds <list>', `comma-separated fault kinds (default all: ${FAULT_KINDS.join(', ')})`, kindsOf)
    .option('--deadline <seconds>', 'per-run deadline; a run past it is terminated and counted as hung', int('--deadline', 30), 720)
    .option('--budget <minutes>', 'start no new run after this many minutes; the runs done are checked and reported', int('--budget', 1))
    .option('--keep', 'keep the stack state folder (logs, data) even when everything passed')
    .showHelpAfterError();
  program.parse();
  const o = program.opts<{ n: number; seed: number; out: string; kinds?: FaultKind[]; deadline: number; budget?: number; keep?: boolean }>();
  const out = path.resolve(o.out);
  fs.mkdirSync(out, { recursive: true });
  // One line per finished run as it happens, so a long campaign shows where it is.
  const progress = path.join(out, 'runs.jsonl');
  fs.writeFileSync(progress, '');
  const report = await runCampaign({
    n: o.n,
    seed: o.seed,
    kinds: o.kinds,
    runDeadlineMs: o.deadline * 1000,
    keepState: o.keep,
    budgetMs: o.budget === undefined ? undefined : o.budget * 60_000,
    onRun: (r) => fs.appendFileSync(progress, JSON.stringify(r) + '\n'),
  });
  const files = writeReport(report, out);
  process.stdout.write(`\n${formatTable(report)}\n\n`);
  process.stdout.write(`seed ${report.seed}; ${(report.wallMs / 60000).toFixed(1)} min; ledger: ${report.ledger.manifests} manifests, ${report.ledger.files} files re-read, ${report.ledger.problems.length} problems\n`);
  for (const s of report.skipped) process.stdout.write(`skipped ${s.kind}: ${s.why}\n`);
  for (const p of report.ledger.problems) process.stdout.write(`ledger: ${p.kind} ${p.detail} (run ${p.runId})\n`);
  const err = (report as { error?: string }).error;
  if (err) process.stdout.write(`the campaign stopped early: ${err}\n`);
  if (report.budget) process.stdout.write(`${report.budget}\n`);
  if (report.stateDir) process.stdout.write(`state folder kept: ${report.stateDir}\n`);
  process.stdout.write(`report: ${files.json}, ${files.html}\n`);
  process.stdout.write(`${report.line}\n`);
  process.exitCode = report.ok ? 0 : 1;
}

main().catch((err: Error) => {
  process.stderr.write(`faults: ${err.stack ?? err.message}\n`);
  process.exit(2);
});
