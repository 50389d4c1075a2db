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

/**
 * The CLI's path, building it with `go install` into the cache when nothing else is found.
 * Concurrent callers (parallel test files, two clones) share one build through a lock file.
 */
export async function ensureTemporalCli(env: Env = process.env, log: (line: string) => void = () => {}): Promise<string> {
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
      while (pidAlive(owner) && !isExecutable(target)) await sleep(2000);
      if (isExecutable(target)) return target;
    }
  }
  try {
    if (isExecutable(target)) return target;
    log(`building the Temporal CLI ${TEMPORAL_CLI_VERSION} with ${go} (a few minutes, once; log: ${buildLog})`);
    const out = fs.openSync(buildLog, 'w');
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(go, ['install', `${TEMPORAL_CLI_MODULE}@${TEMPORAL_CLI_VERSION}`], {
        env: { ...env, GOBIN: binDir, CGO_ENABLED: env.CGO_ENABLED ?? '0' } as NodeJS.ProcessEnv,
        stdio: ['ignore', out, out],
      });
      child.once('error', reject);
      child.once('exit', (c) => resolve(c ?? 1));
    });
    fs.closeSync(out);
    if (code !== 0 || !isExecutable(target)) {
      const tail = fs.readFileSync(buildLog, 'utf8').split('\n').slice(-15).join('\n');
      throw new TemporalCliNotFound(`building the Temporal CLI failed (exit ${code}); last lines of ${buildLog}:\n${tail}\n${howToGetOne(env)}`);
    }
    return target;
  } finally {
    fs.rmSync(lock, { force: true });
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
