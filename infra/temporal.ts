// Finds (or builds once) the Temporal CLI, whose `server start-dev` is our local Temporal cluster
// with the Web UI. The build is slow (minutes), so it lands in a cache outside the repo that every
// clone, test run and CI job on the machine reuses.
//
//   npx tsx infra/temporal.ts ensure   → prints the binary's path (builds it if needed)

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** v1.5.1 is the newest tag without `replace` directives, so `go install …@version` works. */
export const TEMPORAL_CLI_VERSION = 'v1.5.1';
export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal';

type Env = Record<string, string | undefined>;

/** ~/.cache/truthgpt unless TRUTHGPT_CACHE_DIR or XDG_CACHE_HOME say otherwise. */
export function cacheDir(env: Env = process.env): string {
  if (env.TRUTHGPT_CACHE_DIR) return path.resolve(env.TRUTHGPT_CACHE_DIR);
  const base = env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache');
  return path.join(base, 'truthgpt');
}

export const cachedCliPath = (env: Env = process.env) => path.join(cacheDir(env), 'bin', 'temporal');

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function onPath(name: string, env: Env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

export class TemporalCliNotFound extends Error {
  override name = 'TemporalCliNotFound';
}

/** The CLI without building: TEMPORAL_CLI_PATH, then PATH, then the cache; undefined if none. */
export function findTemporalCli(env: Env = process.env): string | undefined {
  if (env.TEMPORAL_CLI_PATH) {
    if (!isExecutable(env.TEMPORAL_CLI_PATH)) {
      throw new TemporalCliNotFound(`TEMPORAL_CLI_PATH=${env.TEMPORAL_CLI_PATH} is not an executable file`);
    }
    return env.TEMPORAL_CLI_PATH;
  }
  return onPath('temporal', env) ?? (isExecutable(cachedCliPath(env)) ? cachedCliPath(env) : undefined);
}

const howToGetOne = (env: Env) =>
  `Install one of: the Temporal CLI (https://docs.temporal.io/cli, then put \`temporal\` on PATH or set TEMPORAL_CLI_PATH), ` +
  `or Go >= 1.25 so TruthGPT can build it into ${cachedCliPath(env)} with ` +
  `\`GOBIN=${path.dirname(cachedCliPath(env))} go install ${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}\`.`;

/** Where a first-time build stands, from `go install -v`'s log (one line per package it compiles). */
export interface CliBuildProgress {
  /** Since the build started (for a build another process runs, since it took the lock). */
  elapsedMs: number;
  /** What go does now: `downloading modules`, `compiling <package>`, `linking the binary`. */
  activity: string;
  /** Packages compiled so far (cached ones are not compiled again, so not counted). */
  packages: number;
  buildLog: string;
  /** The pid of another process whose build this one waits for. */
  builderPid?: number;
  /** Set on the last call, when the build has ended (successfully or not). */
  done: boolean;
}

export interface EnsureOptions {
  /**
   * Called about every `progressIntervalMs` while go builds, and once more with `done` when it ends.
   * Without it, the `log` callback gets a plain progress line every 30 s.
   */
  onProgress?: (p: CliBuildProgress) => void;
  progressIntervalMs?: number;
}

/** `2m05s`, `45s`. */
export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** One line for a person watching: what is built, for how long, what go does, where the log is. */
export function formatBuildProgress(p: CliBuildProgress): string {
  const who = p.builderPid ? ` (by pid ${p.builderPid})` : '';
  return `building the Temporal CLI ${TEMPORAL_CLI_VERSION}${who}: ${formatElapsed(p.elapsedMs)}, ${p.packages} packages compiled, ${p.activity} (log: ${p.buildLog})`;
}

/** Reads the build log so far: how many packages `go install -v` compiled, and what it does now. */
export function buildLogProgress(text: string): { packages: number; activity: string } {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const compiled = lines.filter((l) => !l.startsWith('go: ') && !l.startsWith('#') && /^[\w.-]+(\/[\w.~-]+)*$/.test(l));
  const last = lines[lines.length - 1];
  // Nothing listed yet: go resolves modules, or, with every package cached, only links.
  let activity = 'resolving modules or linking cached packages';
  if (last?.startsWith('go: downloading')) activity = 'downloading modules';
  // -v prints a package when its compile starts; after the main package only the link is left.
  else if (last === TEMPORAL_CLI_MODULE) activity = 'linking the binary';
  else if (last && compiled.length) activity = `compiling ${compiled[compiled.length - 1]}`;
  return { packages: compiled.length, activity };
}

/** Reports a running build until the returned `stop` is called: every interval to `onProgress`, else every 30 s to `log`. */
function watchBuild(buildLog: string, startedAt: number, log: (line: string) => void, opts: EnsureOptions, builderPid?: number): (done: boolean) => void {
  const snapshot = (done: boolean): CliBuildProgress => {
    let text = '';
    try {
      text = fs.readFileSync(buildLog, 'utf8');
    } catch {
      // not written yet
    }
    return { elapsedMs: Date.now() - startedAt, ...buildLogProgress(text), buildLog, builderPid, done };
  };
  const report = opts.onProgress ?? ((p: CliBuildProgress) => !p.done && log(formatBuildProgress(p)));
  const interval = opts.progressIntervalMs ?? (opts.onProgress ? 500 : 30_000);
  const timer = setInterval(() => report(snapshot(false)), interval);
  if (opts.onProgress) report(snapshot(false));
  return (done) => {
    clearInterval(timer);
    if (done) report(snapshot(true));
  };
}

/**
 * The CLI's path, building it with `go install` into the cache when nothing else is found.
 * Concurrent callers (parallel test files, two clones) share one build through a lock file.
 * A build takes minutes (about 7 on 2 cores with cold Go caches), so it reports progress: see
 * EnsureOptions.
 */
export async function ensureTemporalCli(env: Env = process.env, log: (line: string) => void = () => {}, opts: EnsureOptions = {}): Promise<string> {
  const found = findTemporalCli(env);
  if (found) return found;
  const go = onPath('go', env);
  if (!go) throw new TemporalCliNotFound(`No Temporal CLI found and no Go toolchain to build it. ${howToGetOne(env)}`);

  const target = cachedCliPath(env);
  const binDir = path.dirname(target);
  fs.mkdirSync(binDir, { recursive: true });
  const lock = path.join(binDir, '.temporal-build.lock');
  const buildLog = path.join(cacheDir(env), 'temporal-build.log');
  for (;;) {
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      // Someone else is building; a lock whose owner died is stale.
      const owner = Number(fs.readFileSync(lock, 'utf8'));
      if (!owner || !pidAlive(owner)) {
        fs.rmSync(lock, { force: true });
        continue;
      }
      log(`waiting for the Temporal CLI build of pid ${owner} (log: ${buildLog})`);
      const stop = watchBuild(buildLog, lockTime(lock), log, opts, owner);
      try {
        while (pidAlive(owner) && !isExecutable(target)) await sleep(2000);
      } finally {
        stop(true);
      }
      if (isExecutable(target)) return target;
    }
  }
  try {
    if (isExecutable(target)) return target;
    const startedAt = Date.now();
    log(`building the Temporal CLI ${TEMPORAL_CLI_VERSION} with ${go} (once; minutes: about 7 on 2 cores with cold Go caches; log: ${buildLog})`);
    const out = fs.openSync(buildLog, 'w');
    const stop = watchBuild(buildLog, startedAt, log, opts);
    let code: number;
    try {
      code = await new Promise<number>((resolve, reject) => {
        // -v: one line per compiled package, which is what the progress reports read.
        const child = spawn(go, ['install', '-v', `${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}`], {
          env: { ...env, GOBIN: binDir, CGO_ENABLED: env.CGO_ENABLED ?? '0' } as NodeJS.ProcessEnv,
          stdio: ['ignore', out, out],
        });
        child.once('error', reject);
        child.once('exit', (c) => resolve(c ?? 1));
      });
    } finally {
      fs.closeSync(out);
      stop(true);
    }
    if (code !== 0 || !isExecutable(target)) {
      const tail = fs.readFileSync(buildLog, 'utf8').split('\n').slice(-15).join('\n');
      throw new TemporalCliNotFound(`building the Temporal CLI failed (exit ${code}); last lines of ${buildLog}:\n${tail}\n${howToGetOne(env)}`);
    }
    log(`built the Temporal CLI in ${formatElapsed(Date.now() - startedAt)}: ${target}`);
    return target;
  } finally {
    fs.rmSync(lock, { force: true });
  }
}

/** When the lock (so the build it guards) was taken; now if it is gone. */
function lockTime(lock: string): number {
  try {
    return fs.statSync(lock).mtimeMs;
  } catch {
    return Date.now();
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `temporal --version` output, for status and error messages. */
export function temporalCliVersion(cli: string): string {
  return execFileSync(cli, ['--version'], { encoding: 'utf8' }).trim();
}

if (require.main === module) {
  const cmd = process.argv[2];
  if (cmd !== 'ensure') {
    console.error('usage: tsx infra/temporal.ts ensure   (prints the Temporal CLI path, building it if needed)');
    process.exit(2);
  }
  ensureTemporalCli(process.env, (line) => console.error(line)).then(
    (p) => console.log(p),
    (err) => {
      console.error((err as Error).message);
      process.exit(1);
    },
  );
}
