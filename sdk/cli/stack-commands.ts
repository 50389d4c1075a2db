// `truthgpt up | status | down`: the local stack. Flags override the matching env vars, so a test
// or a second developer stack can live beside the default one.

import type { Command } from 'commander';
import { loadConfig, type Config } from '../../infra/config';
import { stackDown, stackUp } from '../../infra/stack';
import { formatStatus, stackStatus } from '../../infra/stack-health';
import { cliBuildProgressLine } from './progress';

export interface StackFlags {
  stateDir?: string;
  temporalPort?: string;
  uiPort?: string;
  s3Port?: string;
  bind?: string;
}

/** Adds the flags that choose which local stack a command talks to. */
export function withStackFlags(cmd: Command): Command {
  return cmd
    .option('--state-dir <dir>', 'state folder of the local stack (env TRUTHGPT_STATE_DIR, default ./.truthgpt)')
    .option('--temporal-port <port>', 'Temporal frontend port (env TRUTHGPT_TEMPORAL_PORT, default 7233)')
    .option('--ui-port <port>', 'Temporal Web UI port (env TRUTHGPT_UI_PORT, default frontend port + 1000)')
    .option('--s3-port <port>', 'S3 server port (env TRUTHGPT_S3_PORT, default 4568)')
    .option('--bind <address>', 'where the local Temporal and S3 servers listen: 127.0.0.1 (default, this machine only) or 0.0.0.0 (every interface, so that workers on other hosts reach them; README "Add a host to a running stack") (env TRUTHGPT_BIND_HOST)');
}

/** Config from env, with the flags applied as if they were env vars (same validation, same messages). */
export function configFromFlags(flags: StackFlags): Config {
  const env: Record<string, string | undefined> = { ...process.env };
  if (flags.stateDir !== undefined) env.TRUTHGPT_STATE_DIR = flags.stateDir;
  if (flags.temporalPort !== undefined) env.TRUTHGPT_TEMPORAL_PORT = flags.temporalPort;
  if (flags.uiPort !== undefined) env.TRUTHGPT_UI_PORT = flags.uiPort;
  if (flags.s3Port !== undefined) env.TRUTHGPT_S3_PORT = flags.s3Port;
  if (flags.bind !== undefined) env.TRUTHGPT_BIND_HOST = flags.bind;
  return loadConfig(env);
}

const say = (line: string) => console.error(line);

/**
 * `up` then a status table; used by `up` and by `demo` when the stack is not healthy. A first-time
 * Temporal CLI (or versitygw) build shows a spinner line on a TTY, and a plain line every 30 s otherwise.
 */
export async function bringUp(config: Config, timeoutSeconds = 180, opts: { workers?: boolean } = {}): Promise<void> {
  const t0 = Date.now();
  const onCliBuildProgress = process.stderr.isTTY ? cliBuildProgressLine(process.stderr) : undefined;
  const status = await stackUp(config, { log: say, timeoutMs: timeoutSeconds * 1000, onCliBuildProgress, workers: opts.workers });
  console.log(formatStatus(status));
  say(`stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s; state in ${status.stateFile}`);
  if (opts.workers === false) say('no workers on this host (--no-workers): start `truthgpt worker --pool gpu|cpu` on the worker hosts (README, "Add a host to a running stack")');
}

export function registerStackCommands(program: Command): void {
  withStackFlags(program.command('up'))
    .description('start the local stack (Temporal dev server + Web UI, S3 server, supervised workers) and wait until healthy')
    .option('--timeout <seconds>', 'how long each part may take to answer once started (a first-time Temporal CLI or versitygw build does not count)', '180')
    .option('--no-workers', 'start Temporal and S3 only, no supervised workers: the workers run on other hosts (`truthgpt worker`)')
    .action(async (flags: StackFlags & { timeout: string; workers: boolean }) => {
      await bringUp(configFromFlags(flags), Number(flags.timeout), { workers: flags.workers });
    });

  withStackFlags(program.command('status'))
    .description('check every part of the stack for real; exits 1 naming the parts that are down')
    .option('--json', 'print the status as JSON')
    .action(async (flags: StackFlags & { json?: boolean }) => {
      const status = await stackStatus(configFromFlags(flags));
      console.log(flags.json ? JSON.stringify(status, null, 2) : formatStatus(status));
      if (!status.healthy) {
        if (flags.json) say(`down: ${status.down.join(', ')}`);
        process.exitCode = 1;
      }
    });

  withStackFlags(program.command('down'))
    .description('stop the stack (supervisor first, then S3 and Temporal); data stays in the state folder')
    .action(async (flags: StackFlags) => {
      const config = configFromFlags(flags);
      const stopped = await stackDown(config, { log: say });
      console.log(stopped.length ? `stopped: ${stopped.join(', ')}` : `nothing was running (state folder ${config.stack.stateDir})`);
    });
}
