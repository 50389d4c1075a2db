// versitygw (Apache-2.0), a production S3 gateway, on loopback over a POSIX folder: the other local
// S3 server beside s3rver (infra/s3server.ts). Unlike s3rver it is a real S3 implementation: it
// honours `If-None-Match: *` on PutObject (atomically, under a per-key publish lock), which the
// store's commits rely on (infra/store-manifest.ts). It is a Go binary, built once with
// `go install` into the same cache as the Temporal CLI (infra/go-tool.ts).
//
//   npx tsx infra/versitygw.ts ensure   → prints the binary's path (builds it if needed)
//
// Each bucket is a folder under the root; object metadata (our x-amz-meta-sha256 among it) lives in
// the files' extended attributes, so the root must be on a filesystem with user xattrs (ext4, xfs,
// btrfs, tmpfs on Linux >= 6.6).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ensureGoTool, ensureMain, findGoTool, type EnsureOptions, type GoTool } from './go-tool';
import { validateBucketName } from './keys';
import { freePort, isPortFree } from './ports';
import type { S3Server } from './s3server';
import { ArtifactStore } from './store';

export const VERSITYGW_VERSION = 'v1.8.0';
export const VERSITYGW_MODULE = 'github.com/versity/versitygw/cmd/versitygw';
/** The GET path versitygw answers 200 on once it serves (its `--health` flag). */
export const VERSITYGW_HEALTH_PATH = '/health';

type Env = Record<string, string | undefined>;

export class VersitygwNotFound extends Error {
  override name = 'VersitygwNotFound';
}

export const VERSITYGW: GoTool = {
  name: 'versitygw',
  title: 'versitygw',
  binary: 'versitygw',
  module: VERSITYGW_MODULE,
  version: VERSITYGW_VERSION,
  pathVar: 'VERSITYGW_PATH',
  otherwise: 'versitygw (a release binary from https://github.com/versity/versitygw/releases, then put `versitygw` on PATH or set VERSITYGW_PATH)',
  minGo: '1.25',
  coldBuild: 'about 2-3 on 2 cores with cold Go caches',
  notFound: (message) => new VersitygwNotFound(message),
};

/** versitygw without building: VERSITYGW_PATH, then PATH, then the cache; undefined if none. */
export const findVersitygw = (env: Env = process.env): string | undefined => findGoTool(VERSITYGW, env);

/** versitygw's path, building it with `go install` into the cache when nothing else is found. */
export const ensureVersitygw = (env: Env = process.env, log: (line: string) => void = () => {}, opts: EnsureOptions = {}): Promise<string> =>
  ensureGoTool(VERSITYGW, env, log, opts);

export interface VersitygwOptions {
  /** The POSIX root: one folder per bucket; created if missing. */
  dir: string;
  host: string;
  port: number;
  /** The gateway's root account, which every request signs with. */
  credentials: { accessKeyId: string; secretAccessKey: string };
  region: string;
}

/**
 * The command that serves `dir` on host:port. The root credentials go through the environment
 * (versitygw's ROOT_ACCESS_KEY_ID / ROOT_SECRET_ACCESS_KEY), so they do not show in `ps`.
 */
export function versitygwCommand(bin: string, o: VersitygwOptions): { command: string; args: string[]; env: Env } {
  const urlHost = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    command: bin,
    args: ['--port', `${urlHost}:${o.port}`, '--region', o.region, '--health', VERSITYGW_HEALTH_PATH, '--quiet', 'posix', path.resolve(o.dir)],
    env: { ROOT_ACCESS_KEY_ID: o.credentials.accessKeyId, ROOT_SECRET_ACCESS_KEY: o.credentials.secretAccessKey },
  };
}

export const versitygwEndpoint = (host: string, port: number) => `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

/** One health probe: ok when versitygw answers 200 on its health path. */
export async function versitygwHealthy(endpoint: string, timeoutMs = 2000): Promise<{ ok: boolean; detail: string }> {
  const url = `${endpoint}${VERSITYGW_HEALTH_PATH}`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status === 200 ? { ok: true, detail: `${url} answers 200` } : { ok: false, detail: `${url} answered HTTP ${res.status}` };
  } catch (err) {
    const e = err as Error & { cause?: Error };
    return { ok: false, detail: `${url} unreachable: ${(e.cause ?? e).message}` };
  }
}

export interface StartVersitygwOptions {
  /** POSIX root; created if missing. */
  dir: string;
  /** 0 picks a free port. */
  port: number;
  host?: string;
  /** Created once the gateway answers, if it does not exist yet. */
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  region?: string;
  /** The binary; default: found or built like `ensureVersitygw`. */
  bin?: string;
  /** How long it may take to answer its health check. Default 30 s. */
  timeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts versitygw as a child of this process (tests; the stack starts it detached, infra/stack.ts),
 * waits until its health check answers and creates `bucket`.
 *
 * @example const s3 = await startVersitygw({ dir: 'tmp/vgw', port: 0, bucket: 'truthgpt', credentials });
 */
export async function startVersitygw(options: StartVersitygwOptions): Promise<S3Server> {
  const host = options.host ?? '127.0.0.1';
  const bucket = validateBucketName(options.bucket);
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new Error(`versitygw: port must be an integer in 0..65535, got ${options.port}`);
  }
  const port = options.port === 0 ? await freePort(host) : options.port;
  if (options.port !== 0 && !(await isPortFree(port, host))) {
    throw new Error(`versitygw: port ${port} on ${host} is already in use; pick another port or pass 0 for a free one`);
  }
  const dir = path.resolve(options.dir);
  mkdirSync(dir, { recursive: true });
  const bin = options.bin ?? (await ensureVersitygw());
  const region = options.region ?? 'us-east-1';
  const cmd = versitygwCommand(bin, { dir, host, port, credentials: options.credentials, region });

  const child: ChildProcess = spawn(cmd.command, cmd.args, { env: { ...process.env, ...cmd.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitCode = code ?? (signal ? -1 : null);
      resolve();
    });
    child.once('error', (err) => {
      output += `\n${err.message}`;
      exitCode = -1;
      resolve();
    });
  });

  const endpoint = versitygwEndpoint(host, port);
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  for (;;) {
    const h = await versitygwHealthy(endpoint, 1000);
    if (h.ok) break;
    if (exitCode !== undefined) throw new Error(`versitygw exited during start (code ${exitCode}): ${h.detail}\n${output.trim()}`);
    if (Date.now() >= deadline) {
      child.kill('SIGKILL');
      throw new Error(`versitygw did not answer within ${(options.timeoutMs ?? 30_000) / 1000} s: ${h.detail}\n${output.trim()}`);
    }
    await sleep(100);
  }

  const close = async () => {
    if (exitCode === undefined) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
  };
  const store = new ArtifactStore({ endpoint, region, bucket, ...options.credentials, forcePathStyle: true });
  try {
    await store.ensureBucket();
  } catch (err) {
    await close();
    throw err;
  } finally {
    store.close();
  }

  let closed: Promise<void> | undefined;
  return { endpoint, port, host, bucket, dir, close: () => (closed ??= close()) };
}

if (require.main === module) ensureMain(VERSITYGW, 'infra/versitygw.ts');
