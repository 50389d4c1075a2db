// Finds (or builds once) the Temporal CLI, whose `server start-dev` is our local Temporal cluster
// with the Web UI. The build is slow (minutes), so it lands in the cache of go-installed tools
// (infra/go-tool.ts) that every clone, test run and CI job on the machine reuses.
//
//   npx tsx infra/temporal.ts ensure   → prints the binary's path (builds it if needed)

import { execFileSync } from 'node:child_process';
import {
  buildLogProgress as goBuildLogProgress,
  cachedToolPath,
  ensureGoTool,
  ensureMain,
  findGoTool,
  type EnsureOptions,
  type GoBuildProgress,
  type GoTool,
} from './go-tool';

export { cacheDir, formatBuildProgress, type EnsureOptions } from './go-tool';

/** v1.5.1 is the newest tag without `replace` directives, so `go install …@version` works. */
export const TEMPORAL_CLI_VERSION = 'v1.5.1';
export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal';

type Env = Record<string, string | undefined>;

export class TemporalCliNotFound extends Error {
  override name = 'TemporalCliNotFound';
}

export const TEMPORAL_CLI: GoTool = {
  name: 'Temporal CLI',
  title: 'the Temporal CLI',
  binary: 'temporal',
  module: TEMPORAL_CLI_MODULE,
  version: TEMPORAL_CLI_VERSION,
  pathVar: 'TEMPORAL_CLI_PATH',
  otherwise: 'the Temporal CLI (https://docs.temporal.io/cli, then put `temporal` on PATH or set TEMPORAL_CLI_PATH)',
  minGo: '1.25',
  coldBuild: 'about 7 on 2 cores with cold Go caches',
  notFound: (message) => new TemporalCliNotFound(message),
};

/** Where a first-time build stands (see GoBuildProgress). */
export type CliBuildProgress = GoBuildProgress;

export const cachedCliPath = (env: Env = process.env) => cachedToolPath(TEMPORAL_CLI, env);

/** The CLI without building: TEMPORAL_CLI_PATH, then PATH, then the cache; undefined if none. */
export const findTemporalCli = (env: Env = process.env): string | undefined => findGoTool(TEMPORAL_CLI, env);

/** Reads a Temporal CLI build log so far (see go-tool.ts's buildLogProgress). */
export const buildLogProgress = (text: string) => goBuildLogProgress(text, TEMPORAL_CLI_MODULE);

/**
 * The CLI's path, building it with `go install` into the cache when nothing else is found.
 * A build takes minutes (about 7 on 2 cores with cold Go caches), so it reports progress: see
 * EnsureOptions.
 */
export const ensureTemporalCli = (env: Env = process.env, log: (line: string) => void = () => {}, opts: EnsureOptions = {}): Promise<string> =>
  ensureGoTool(TEMPORAL_CLI, env, log, opts);

/** `temporal --version` output, for status and error messages. */
export function temporalCliVersion(cli: string): string {
  return execFileSync(cli, ['--version'], { encoding: 'utf8' }).trim();
}

if (require.main === module) ensureMain(TEMPORAL_CLI, 'infra/temporal.ts');

/**
 * One partition per task queue on the local dev server. With the server's default of four, a task
 * that waited in a queue's backlog (the second shard of a round on a GPU worker that runs one at a
 * time) reached the worker 0.6–1.9 s after it asked for work, against 0.1–0.17 s with one: 1.4–1.7 s
 * of a DiLoCo round's 4.7 s fixed cost at medium (bench/RESULTS.md, "Orchestration share at rounds
 * of tens of seconds"). A cluster of our own sets the same for the truthgpt queues (docs/deploy.md).
 */
export const DEV_SERVER_DYNAMIC_CONFIG = ['--dynamic-config-value', 'matching.numTaskqueueReadPartitions=1', '--dynamic-config-value', 'matching.numTaskqueueWritePartitions=1'];
