// An S3-compatible server on loopback, backed by a directory (s3rver), for the local stack and
// for tests. Production points the store at a real S3 endpoint instead; nothing else changes.
//
// Run standalone (the local stack supervises it as a child process):
//   tsx infra/s3server.ts --dir .truthgpt/s3 --port 9000 --bucket truthgpt
// It prints one line `s3 ready endpoint=<url> port=<n> bucket=<b> dir=<abs path>` and serves
// until SIGTERM or SIGINT.

import { mkdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import S3rver from 's3rver';
import { validateBucketName } from './keys';
import { installS3rverCompat, recoverTornWrites } from './s3server-compat';

/** s3rver accepts this single access key pair; any region name works. */
export const LOCAL_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3ServerOptions {
  /** Directory holding the buckets; created if missing. */
  dir: string;
  /** 0 picks a free port. */
  port: number;
  host?: string;
  /** Created at start if it does not exist yet. */
  bucket: string;
}

export interface S3Server {
  endpoint: string;
  port: number;
  host: string;
  bucket: string;
  dir: string;
  /** s3rver only: files of PUTs that a killed server left unfinished, removed before serving (s3server-compat.ts). */
  recovered?: string[];
  close(): Promise<void>;
}

function listen(server: http.Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      if (err.code === 'EADDRINUSE') {
        reject(new Error(`S3 server: port ${port} on ${host} is already in use (EADDRINUSE); pick another port or pass 0 for a free one`));
      } else if (err.code === 'EACCES') {
        reject(new Error(`S3 server: no permission to listen on port ${port} on ${host} (EACCES)`));
      } else {
        reject(new Error(`S3 server: cannot listen on ${host}:${port}: ${err.message}`));
      }
    };
    const onListening = () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/**
 * Starts s3rver on `host:port` serving `dir`, with `bucket` created.
 *
 * We own the http.Server rather than calling s3rver's run(): its listen() never rejects, so a
 * taken port would surface as an unhandled 'error' event that kills the process.
 *
 * @example const s3 = await startS3Server({ dir: '/tmp/s3', port: 0, bucket: 'truthgpt' });
 */
export async function startS3Server(options: S3ServerOptions): Promise<S3Server> {
  const host = options.host ?? '127.0.0.1';
  const bucket = validateBucketName(options.bucket);
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new Error(`S3 server: port must be an integer in 0..65535, got ${options.port}`);
  }
  const dir = path.resolve(options.dir);
  mkdirSync(dir, { recursive: true });
  const recovered = recoverTornWrites(dir);

  const app = new S3rver({
    directory: dir,
    silent: true,
    configureBuckets: [{ name: bucket }],
  });
  await app.configureBuckets();
  installS3rverCompat(app);
  const server = http.createServer(app.callback());
  // Lets s3rver's own close() work if anyone reaches for it.
  app.httpServer = server;
  const address = await listen(server, options.port, host);
  const urlHost = host.includes(':') ? `[${host}]` : host;

  let closed: Promise<void> | undefined;
  return {
    endpoint: `http://${urlHost}:${address.port}`,
    port: address.port,
    host,
    bucket,
    dir,
    recovered,
    close() {
      closed ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // SDK clients keep connections alive; without this close() waits out their idle timeout.
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      dir: { type: 'string' },
      port: { type: 'string', default: '9000' },
      host: { type: 'string', default: '127.0.0.1' },
      bucket: { type: 'string', default: 'truthgpt' },
    },
    strict: true,
  });
  if (!values.dir) throw new Error('S3 server: --dir is required (the directory that holds the buckets)');
  const port = Number(values.port);
  if (!/^\d+$/.test(values.port ?? '')) throw new Error(`S3 server: --port must be a number, got ${JSON.stringify(values.port)}`);

  const s3 = await startS3Server({ dir: values.dir, port, host: values.host, bucket: values.bucket! });
  for (const f of s3.recovered ?? []) process.stderr.write(`S3 server: removed ${path.relative(s3.dir, f)}, left by a PUT that never finished\n`);
  process.stdout.write(`s3 ready endpoint=${s3.endpoint} port=${s3.port} bucket=${s3.bucket} dir=${s3.dir}\n`);

  const stop = (signal: NodeJS.Signals) => {
    s3.close().then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`S3 server: error while stopping on ${signal}: ${err.message}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  });
}
