// Hosts on one machine, isolated for real: Linux network namespaces joined by veth pairs to a
// bridge. Every namespace, link and address is made by the test and lives inside a namespace it
// created (nothing is added to the root namespace's interfaces: each veth pair is created in the
// server's namespace with its peer born in the host's). A process started in a host's namespace
// reaches only its own loopback and the test's private subnet: that is the whole network it has.
//
//   server namespace  <prefix>s   br0 10.213.K.1/24   (Temporal, S3: "the stack host")
//   host namespaces   <prefix>a   eth0 10.213.K.2/24   (joined to br0 through a veth pair)
//                     <prefix>b   eth0 10.213.K.3/24   ...
//
// Names carry the test process's pid (`tgh<pid><letter>`), so runs never collide, and a crashed
// earlier run's namespaces (their pid no longer alive) are found, emptied and deleted first.

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const PREFIX = 'tgh';
const NAME = /^tgh(\d+)[a-z]$/;

/** Why this machine cannot run namespace tests, or null when it can (root and the `ip` tool). */
export function netnsUnavailable(): string | null {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return `network namespaces need root (uid ${process.getuid?.()})`;
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'the `ip` tool (iproute2) is not installed';
  }
  return null;
}

/** CI (CI set, or TRUTHGPT_REQUIRE_NETNS=1 as .ci/run sets it) must run these tests, never skip them. */
export const netnsRequired = (env: NodeJS.ProcessEnv = process.env) => (env.CI !== undefined && env.CI !== '' && env.CI !== 'false') || env.TRUTHGPT_REQUIRE_NETNS === '1';

const ip = async (...args: string[]) => (await exec('ip', args)).stdout;

/** Pids of every process in namespace `ns` (empty when it has none or is gone). */
export async function netnsPids(ns: string): Promise<number[]> {
  try {
    return (await ip('netns', 'pids', ns)).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** SIGKILLs every process in `ns` until none is left: a host losing power. */
export async function killNetns(ns: string): Promise<number[]> {
  const killed = new Set<number>();
  for (let i = 0; i < 50; i++) {
    const pids = await netnsPids(ns);
    if (pids.length === 0) return [...killed];
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch {
        // already gone
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`processes in network namespace ${ns} survive SIGKILL: ${(await netnsPids(ns)).join(', ')}`);
}

async function deleteNetns(ns: string): Promise<void> {
  await killNetns(ns);
  await ip('netns', 'del', ns).catch(() => {});
}

const pidAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** Deletes the namespaces of earlier runs whose test process is gone (a crashed run). */
export async function cleanupLeftovers(): Promise<string[]> {
  const names = (await ip('netns', 'list')).split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
  const stale = names.filter((n) => {
    const m = NAME.exec(n);
    return m !== null && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  });
  for (const ns of stale) await deleteNetns(ns);
  return stale;
}

export interface NetHost {
  /** Network namespace name. */
  ns: string;
  /** Its one non-loopback address. */
  address: string;
}

export interface TestNetwork {
  server: NetHost;
  hosts: NetHost[];
  /** Starts `command args` inside `host`'s namespace (the pid is the command's: `ip netns exec` execs it). */
  spawnIn(host: NetHost, command: string, args: string[], opts: { env: NodeJS.ProcessEnv; cwd: string }): ChildProcess;
  /** Runs `command args` inside `host`'s namespace to completion. */
  execIn(host: NetHost, command: string, args: string[], opts: { env: NodeJS.ProcessEnv; cwd: string; timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Kills every process in every namespace and deletes them (with their links); safe to call twice. */
  teardown(): Promise<void>;
}

/**
 * Creates the server namespace and `hostCount` host namespaces on subnet 10.213.K.0/24, K from
 * the pid. On failure it removes what it made and rethrows.
 */
export async function createTestNetwork(hostCount: number): Promise<TestNetwork> {
  const id = `${PREFIX}${process.pid}`;
  const k = (process.pid % 250) + 1;
  const server: NetHost = { ns: `${id}s`, address: `10.213.${k}.1` };
  const hosts: NetHost[] = Array.from({ length: hostCount }, (_, i) => ({ ns: `${id}${String.fromCharCode(97 + i)}`, address: `10.213.${k}.${i + 2}` }));
  const made: string[] = [];
  const teardown = async () => {
    for (const ns of made.splice(0).reverse()) await deleteNetns(ns);
  };
  try {
    for (const h of [server, ...hosts]) {
      await ip('netns', 'add', h.ns);
      made.push(h.ns);
      await ip('-n', h.ns, 'link', 'set', 'lo', 'up');
    }
    await ip('-n', server.ns, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', server.ns, 'addr', 'add', `${server.address}/24`, 'dev', 'br0');
    await ip('-n', server.ns, 'link', 'set', 'br0', 'up');
    for (const [i, h] of hosts.entries()) {
      const port = `v${i}`;
      // Created in the server's namespace, its peer born in the host's: never in the root namespace.
      await ip('-n', server.ns, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns);
      await ip('-n', server.ns, 'link', 'set', port, 'master', 'br0');
      await ip('-n', server.ns, 'link', 'set', port, 'up');
      await ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0');
      await ip('-n', h.ns, 'link', 'set', 'eth0', 'up');
    }
  } catch (err) {
    await teardown();
    throw err;
  }
  return {
    server,
    hosts,
    spawnIn(host, command, args, opts) {
      return spawn('ip', ['netns', 'exec', host.ns, command, ...args], { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    },
    async execIn(host, command, args, opts) {
      try {
        const { stdout, stderr } = await exec('ip', ['netns', 'exec', host.ns, command, ...args], { env: opts.env, cwd: opts.cwd, timeout: opts.timeoutMs, maxBuffer: 64 << 20 });
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string; message: string };
        return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? e.message };
      }
    },
    teardown,
  };
}
