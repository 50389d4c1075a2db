// Starting the stack's processes: TypeScript entry points run by this Node with tsx's require hook
// (no build step, so the stack works right after `npm ci`), output appended to a log file.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..');

/** node + tsx hook + a repo-relative .ts entry point. */
export function tsCommand(entry: string, args: string[] = []): { command: string; args: string[] } {
  return { command: process.execPath, args: ['--require', require.resolve('tsx/cjs'), path.join(REPO_ROOT, entry), ...args] };
}

export interface SpawnLoggedOptions {
  command: string;
  args: string[];
  log: string;
  env: NodeJS.ProcessEnv;
  /** A detached process survives the CLI that started it (own session, no controlling terminal). */
  detached: boolean;
}

/**
 * The AWS SDK's own switch for its multi-line notice, on Node < 22, that its releases from January
 * 2027 need Node 22 (README, "Node version"). The stack's processes get it unless the env says otherwise.
 */
export const AWS_NODE_NOTICE_OFF = { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } as const;

export function spawnLogged(opts: SpawnLoggedOptions): ChildProcess {
  fs.mkdirSync(path.dirname(opts.log), { recursive: true });
  const fd = fs.openSync(opts.log, 'a');
  fs.writeSync(fd, `\n=== ${new Date().toISOString()} start: ${opts.command} ${opts.args.join(' ')}\n`);
  try {
    const child = spawn(opts.command, opts.args, {
      cwd: REPO_ROOT,
      env: { ...AWS_NODE_NOTICE_OFF, ...opts.env },
      detached: opts.detached,
      stdio: ['ignore', fd, fd],
    });
    if (opts.detached) child.unref();
    return child;
  } finally {
    fs.closeSync(fd);
  }
}

/** The last lines of a log, for error messages that say why a process died. */
export function logTail(file: string, lines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return `(no log at ${file})`;
  }
}
