// Tools we build from source with `go install` once and keep in a cache outside the repo that every
// clone, test run and CI job on the machine reuses: the Temporal CLI (infra/temporal.ts) and the
// versitygw S3 gateway (infra/versitygw.ts). A first build takes minutes, so it reports progress,
// and concurrent callers share one build through a lock file.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

type Env = Record<string, string | undefined>;

/** One go-installed tool. */
export interface GoTool {
  /** What people read: `Temporal CLI`, `versitygw`. */
  name: string;
  /** The same in a sentence, with its article: `the Temporal CLI`, `versitygw`. */
  title: string;
  /** The binary's file name, on PATH and in the cache's bin/. */
  binary: string;
  /** The main package `go install` builds. */
  module: string;
  version: string;
  /** The variable that names an explicit binary: `TEMPORAL_CLI_PATH`, `VERSITYGW_PATH`. */
  pathVar: string;
  /** How to get one without Go, for the error message. */
  otherwise: string;
  /** The Go its go.mod requires, for the error message. */
  minGo: string;
  /** A first build's cost for the log line, e.g. `about 7 on 2 cores with cold Go caches`. */
  coldBuild: string;
  /** Thrown when no binary is found and none can be built. */
  notFound: (message: string) => Error;
}

/** ~/.cache/truthgpt unless TRUTHGPT_CACHE_DIR or XDG_CACHE_HOME say otherwise. */
export function cacheDir(env: Env = process.env): string {
  if (env.TRUTHGPT_CACHE_DIR) return path.resolve(env.TRUTHGPT_CACHE_DIR);
  const base = env.XDG_CACHE_HOME ? path.resolve(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache');
  return path.join(base, 'truthgpt');
}

export const cachedToolPath = (tool: GoTool, env: Env = process.env) => path.join(cacheDir(env), 'bin', tool.binary);
export const toolBuildLog = (tool: GoTool, env: Env = process.env) => path.join(cacheDir(env), `${tool.binary}-build.log`);

export function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export function onPath(name: string, env: Env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

/** The tool without building: its path variable, then PATH, then the cache; undefined if none. */
export function findGoTool(tool: GoTool, env: Env = process.env): string | undefined {
  const explicit = env[tool.pathVar];
  if (explicit) {
    if (!isExecutable(explicit)) throw tool.notFound(`${tool.pathVar}=${explicit} is not an executable file`);
    return explicit;
  }
  const cached = cachedToolPath(tool, env);
  return onPath(tool.binary, env) ?? (isExecutable(cached) ? cached : undefined);
}

const howToGetOne = (tool: GoTool, env: Env) =>
  `Install one of: ${tool.otherwise}, ` +
  `or Go >= ${tool.minGo} so TruthGPT can build it into ${cachedToolPath(tool, env)} with ` +
  `\`GOBIN=${path.dirname(cachedToolPath(tool, env))} go install ${tool.module}@${tool.version}\`.`;

/** Where a first-time build stands, from `go install -v`'s log (one line per package it compiles). */
export interface GoBuildProgress {
  /** What is built, e.g. `the Temporal CLI v1.5.1`. */
  tool: string;
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
  onProgress?: (p: GoBuildProgress) => void;
  progressIntervalMs?: number;
}

/** `2m05s`, `45s`. */
export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** One line for a person watching: what is built, for how long, what go does, where the log is. */
export function formatBuildProgress(p: GoBuildProgress): string {
  const who = p.builderPid ? ` (by pid ${p.builderPid})` : '';
  return `building ${p.tool}${who}: ${formatElapsed(p.elapsedMs)}, ${p.packages} packages compiled, ${p.activity} (log: ${p.buildLog})`;
}

/** Reads the build log so far: how many packages `go install -v` compiled, and what it does now. */
export function buildLogProgress(text: string, mainModule: string): { packages: number; activity: string } {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const compiled = lines.filter((l) => !l.startsWith('go: ') && !l.startsWith('#') && /^[\w.-]+(\/[\w.~-]+)*$/.test(l));
  const last = lines[lines.length - 1];
  // Nothing listed yet: go resolves modules, or, with every package cached, only links.
  let activity = 'resolving modules or linking cached packages';
  if (last?.startsWith('go: downloading')) activity = 'downloading modules';
  // -v prints a package when its compile starts; after the main package only the link is left.
  else if (last === mainModule) activity = 'linking the binary';
  else if (last && compiled.length) activity = `compiling ${compiled[compiled.length - 1]}`;
  return { packages: compiled.length, activity };
}

/** Reports a running build until the returned `stop` is called: every interval to `onProgress`, else every 30 s to `log`. */
function watchBuild(tool: GoTool, buildLog: string, startedAt: number, log: (line: string) => void, opts: EnsureOptions, builderPid?: number): (done: boolean) => void {
  const snapshot = (done: boolean): GoBuildProgress => {
    let text = '';
    try {
      text = fs.readFileSync(buildLog, 'utf8');
    } catch {
      // not written yet
    }
    return { tool: `${tool.title} ${tool.version}`, elapsedMs: Date.now() - startedAt, ...buildLogProgress(text, tool.module), buildLog, builderPid, done };
  };
  const report = opts.onProgress ?? ((p: GoBuildProgress) => !p.done && log(formatBuildProgress(p)));
  const interval = opts.progressIntervalMs ?? (opts.onProgress ? 500 : 30_000);
  const timer = setInterval(() => report(snapshot(false)), interval);
  if (opts.onProgress) report(snapshot(false));
  return (done) => {
    clearInterval(timer);
    if (done) report(snapshot(true));
  };
}

/**
 * The tool's path, building it with `go install` into the cache when nothing else is found.
 * Concurrent callers (parallel test files, two clones) share one build through a lock file.
 */
export async function ensureGoTool(tool: GoTool, env: Env = process.env, log: (line: string) => void = () => {}, opts: EnsureOptions = {}): Promise<string> {
  const found = findGoTool(tool, env);
  if (found) return found;
  const go = onPath('go', env);
  if (!go) throw tool.notFound(`No ${tool.name} found and no Go toolchain to build it. ${howToGetOne(tool, env)}`);

  const target = cachedToolPath(tool, env);
  const binDir = path.dirname(target);
  fs.mkdirSync(binDir, { recursive: true });
  const lock = path.join(binDir, `.${tool.binary}-build.lock`);
  const buildLog = toolBuildLog(tool, env);
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
      log(`waiting for the ${tool.title} build of pid ${owner} (log: ${buildLog})`);
      const stop = watchBuild(tool, buildLog, lockTime(lock), log, opts, owner);
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
    log(`building ${tool.title} ${tool.version} with ${go} (once; minutes: ${tool.coldBuild}; log: ${buildLog})`);
    const out = fs.openSync(buildLog, 'w');
    const stop = watchBuild(tool, buildLog, startedAt, log, opts);
    let code: number;
    try {
      code = await new Promise<number>((resolve, reject) => {
        // -v: one line per compiled package, which is what the progress reports read.
        const child = spawn(go, ['install', '-v', `${tool.module}@${tool.version}`], {
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
      throw tool.notFound(`building ${tool.title} failed (exit ${code}); last lines of ${buildLog}:\n${tail}\n${howToGetOne(tool, env)}`);
    }
    log(`built ${tool.title} in ${formatElapsed(Date.now() - startedAt)}: ${target}`);
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

/** The `ensure` command of a tool's module: prints the binary's path, building it if needed. */
export function ensureMain(tool: GoTool, script: string): void {
  if (process.argv[2] !== 'ensure') {
    console.error(`usage: tsx ${script} ensure   (prints the ${tool.title} path, building it if needed)`);
    process.exit(2);
  }
  ensureGoTool(tool, process.env, (line) => console.error(line)).then(
    (p) => console.log(p),
    (err) => {
      console.error((err as Error).message);
      process.exit(1);
    },
  );
}
