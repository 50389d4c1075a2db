// A real Temporal dev server per test file: the same CLI binary the stack uses (infra/temporal.ts),
// on free loopback ports, in memory (no --db-filename), with our search attributes registered.

import { spawn, type ChildProcess } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { freePort } from '../../infra/ports';
import { devServerSearchAttributeFlags } from '../../infra/search-attributes';
import { DEV_SERVER_DYNAMIC_CONFIG, ensureTemporalCli } from '../../infra/temporal';

export interface TemporalFixture {
  address: string;
  port: number;
  uiPort: number;
  namespace: string;
  client: Client;
  /** For workers created in the test process. */
  nativeConnection(): Promise<NativeConnection>;
  close(): Promise<void>;
}

/**
 * Starts `temporal server start-dev` on free ports and waits until the frontend answers.
 * @example
 *   let temporal: TemporalFixture;
 *   beforeAll(async () => { temporal = await withTemporal(); });
 *   afterAll(() => temporal.close());
 */
export async function withTemporal(options: { headless?: boolean } = {}): Promise<TemporalFixture> {
  const cli = await ensureTemporalCli();
  const port = await freePort();
  const uiPort = await freePort();
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort), '--log-level', 'error', ...DEV_SERVER_DYNAMIC_CONFIG, ...devServerSearchAttributeFlags()];
  if (options.headless ?? true) args.push('--headless');
  const child: ChildProcess = spawn(cli, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const address = `127.0.0.1:${port}`;

  const deadline = Date.now() + 60_000;
  let connection: Connection | undefined;
  while (!connection) {
    if (child.exitCode !== null) throw new Error(`temporal dev server exited with ${child.exitCode}: ${stderr}`);
    try {
      const c = await Connection.connect({ address, connectTimeout: 1000 });
      await c.workflowService.getSystemInfo({});
      connection = c;
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`temporal dev server on ${address} did not answer within 60 s: ${(err as Error).message}\n${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const client = new Client({ connection, namespace: 'default' });
  const natives: NativeConnection[] = [];
  return {
    address,
    port,
    uiPort,
    namespace: 'default',
    client,
    async nativeConnection() {
      const nc = await NativeConnection.connect({ address });
      natives.push(nc);
      return nc;
    },
    async close() {
      for (const nc of natives) await nc.close().catch(() => {});
      await connection.close();
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
