// Configuration from the environment, validated once at the edge (docs/ARCHITECTURE.md: schemas at every
// boundary). Every default points at the local stack, so `npm start` needs no env at all; pointing
// TEMPORAL_* / TRUTHGPT_S3_* elsewhere is how the same code runs against Temporal Cloud and AWS S3.

import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { DEFAULT_WORKER_MEMORY_GB } from '../spec/limits';
import type { S3Settings } from './store';

export type { S3Settings };

/**
 * s3rver's built-in account (infra/s3server.ts), also versitygw's root account in the local stack
 * (infra/versitygw.ts); only used when S3 is the local stack's own server.
 */
const LOCAL_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off', ''], { message: 'expected true or false' })
  .transform((v) => (v === '' ? undefined : ['true', '1', 'yes', 'on'].includes(v)));

const port = z.coerce
  .number({ message: 'expected a port number' })
  .int({ message: 'expected an integer port' })
  .min(1, { message: 'port must be 1..65535' })
  .max(65535, { message: 'port must be 1..65535' });

const optionalText = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));

/** Keys are the env var names, so zod's error paths name the variable the user must fix. */
const EnvSchema = z.object({
  TEMPORAL_ADDRESS: optionalText.refine((v) => v === undefined || /^[^\s:/]+:\d{1,5}$/.test(v), {
    message: 'expected host:port, e.g. 127.0.0.1:7233 or my-ns.a1b2c.tmprl.cloud:7233',
  }),
  TEMPORAL_NAMESPACE: optionalText,
  TEMPORAL_TLS: bool.optional(),
  TEMPORAL_TLS_CERT_PATH: optionalText,
  TEMPORAL_TLS_KEY_PATH: optionalText,
  TEMPORAL_TLS_CA_PATH: optionalText,
  TEMPORAL_TLS_SERVER_NAME: optionalText,
  TEMPORAL_API_KEY: optionalText,
  TRUTHGPT_S3_ENDPOINT: z
    .string()
    .optional()
    .refine((v) => v === undefined || v === '' || v === 'aws' || /^https?:\/\/[^\s]+$/.test(v), {
      message: 'expected an http(s):// URL, or "aws" for the AWS default endpoint of the region',
    }),
  TRUTHGPT_S3_BUCKET: optionalText.refine((v) => v === undefined || /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(v), {
    message: 'expected an S3 bucket name (3-63 chars: lowercase letters, digits, dots, hyphens)',
  }),
  TRUTHGPT_S3_REGION: optionalText,
  TRUTHGPT_S3_ACCESS_KEY_ID: optionalText,
  TRUTHGPT_S3_SECRET_ACCESS_KEY: optionalText,
  TRUTHGPT_S3_SESSION_TOKEN: optionalText,
  TRUTHGPT_S3_FORCE_PATH_STYLE: bool.optional(),
  TRUTHGPT_EP: z.enum(['cpu', 'cuda'], { message: 'expected cpu or cuda' }).optional(),
  TRUTHGPT_DEVICE_ID: z.coerce.number({ message: 'expected a device index' }).int().min(0).optional(),
  // A CPU worker runs precision fp16/bf16 steps as an emulation (engine/train/precision.ts): for verifying numerics, never for speed.
  TRUTHGPT_HALF_EMULATION: bool.optional(),
  TRUTHGPT_WORKER_MEMORY_GB: optionalText.pipe(z.coerce.number<string | undefined>({ message: 'expected a size in GiB, e.g. 16' }).positive({ message: 'expected a size in GiB, e.g. 16' }).optional()),
  TRUTHGPT_STATE_DIR: optionalText,
  TRUTHGPT_TEMPORAL_PORT: port.optional(),
  TRUTHGPT_UI_PORT: port.optional(),
  TRUTHGPT_S3_PORT: port.optional(),
  TRUTHGPT_S3_SERVER: z.enum(['s3rver', 'versitygw'], { message: 'expected s3rver or versitygw' }).optional(),
  // One interface's address is refused: the Temporal dev server (CLI v1.5.1) binds its internal
  // services there too but dials them at 127.0.0.1, so it starts and then never answers a task queue.
  TRUTHGPT_BIND_HOST: optionalText.refine((v) => v === undefined || v === '127.0.0.1' || v === '0.0.0.0', {
    message:
      'expected 127.0.0.1 (the default: this machine only) or 0.0.0.0 (every interface, so that workers on other hosts reach the local Temporal and S3); ' +
      "one interface's address is not possible: the Temporal dev server then dials its own internal services at 127.0.0.1 and never answers",
  }),
});

/** The S3 server `up` starts when TRUTHGPT_S3_ENDPOINT is unset (README, "Local S3 server"). */
export type LocalS3Server = 's3rver' | 'versitygw';

export interface TlsSettings {
  certPath?: string;
  keyPath?: string;
  caPath?: string;
  serverName?: string;
}

export interface Config {
  temporal: {
    address: string;
    namespace: string;
    /** null: plaintext (local dev server). */
    tls: TlsSettings | null;
    apiKey?: string;
  };
  s3: S3Settings;
  /** workerMemoryGb: what one training step may need (spec/limits.ts; default DEFAULT_WORKER_MEMORY_GB). */
  runtime: { ep: 'cpu' | 'cuda'; deviceId: number; workerMemoryGb: number; halfEmulation: boolean };
  stack: {
    /** Where this machine's clients (CLI, the stack's own workers) reach the local servers. */
    host: string;
    /**
     * Where the local Temporal dev server (frontend and Web UI) and S3 server listen
     * (TRUTHGPT_BIND_HOST, `up --bind`): 127.0.0.1, or 0.0.0.0 when other hosts' workers must reach them.
     */
    bindHost: string;
    stateDir: string;
    temporalPort: number;
    uiPort: number;
    s3Port: number;
    /** True when TEMPORAL_ADDRESS / TRUTHGPT_S3_ENDPOINT point at the local stack. */
    localTemporal: boolean;
    localS3: boolean;
    /** Which server `up` starts for the local S3 (TRUTHGPT_S3_SERVER). */
    s3Server: LocalS3Server;
  };
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The one env var (or pair) a problem is about, plus what to do. */
function fail(message: string): never {
  throw new ConfigError(`invalid configuration: ${message}`);
}

/**
 * Reads and validates the configuration.
 * @example const config = loadConfig(); // local stack defaults
 * @example loadConfig({ TEMPORAL_ADDRESS: 'ns.acct.tmprl.cloud:7233', TEMPORAL_API_KEY: key })
 */
export function loadConfig(env: Record<string, string | undefined> = process.env, cwd = process.cwd()): Config {
  const known = Object.fromEntries(Object.keys(EnvSchema.shape).map((k) => [k, env[k]]));
  const parsed = EnvSchema.safeParse(known);
  if (!parsed.success) {
    const msgs = parsed.error.issues.map((i) => `${i.path.join('.')}=${JSON.stringify(env[String(i.path[0])])}: ${i.message}`);
    fail(msgs.join('; '));
  }
  const e = parsed.data;
  const bindHost = e.TRUTHGPT_BIND_HOST ?? '127.0.0.1';
  // Servers on every interface are reached from this machine through loopback.
  const host = '127.0.0.1';
  const temporalPort = e.TRUTHGPT_TEMPORAL_PORT ?? 7233;
  const uiPort = e.TRUTHGPT_UI_PORT ?? temporalPort + 1000;
  const s3Port = e.TRUTHGPT_S3_PORT ?? 4568;
  if (uiPort > 65535) fail(`TRUTHGPT_UI_PORT: the default (TRUTHGPT_TEMPORAL_PORT + 1000 = ${uiPort}) is not a port; set it`);
  const ports = { TRUTHGPT_TEMPORAL_PORT: temporalPort, TRUTHGPT_UI_PORT: uiPort, TRUTHGPT_S3_PORT: s3Port };
  const seen = new Map<number, string>();
  for (const [name, p] of Object.entries(ports)) {
    if (seen.has(p)) fail(`${name} and ${seen.get(p)} are both ${p}; the local stack needs distinct ports`);
    seen.set(p, name);
  }

  const address = e.TEMPORAL_ADDRESS ?? `${host}:${temporalPort}`;
  const localTemporal = e.TEMPORAL_ADDRESS === undefined;
  const certPath = e.TEMPORAL_TLS_CERT_PATH;
  const keyPath = e.TEMPORAL_TLS_KEY_PATH;
  if ((certPath === undefined) !== (keyPath === undefined)) {
    fail('TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together (mTLS needs both the certificate and its key)');
  }
  for (const [name, p] of [
    ['TEMPORAL_TLS_CERT_PATH', certPath],
    ['TEMPORAL_TLS_KEY_PATH', keyPath],
    ['TEMPORAL_TLS_CA_PATH', e.TEMPORAL_TLS_CA_PATH],
  ] as const) {
    if (p !== undefined && !fs.existsSync(p)) fail(`${name}=${p}: no such file`);
  }
  // Temporal Cloud's API-key auth and mTLS both need TLS; only an explicit TEMPORAL_TLS=false turns it off.
  const wantsTls = e.TEMPORAL_TLS ?? (certPath !== undefined || e.TEMPORAL_API_KEY !== undefined || e.TEMPORAL_TLS_CA_PATH !== undefined);
  const tls: TlsSettings | null = wantsTls
    ? { certPath, keyPath, caPath: e.TEMPORAL_TLS_CA_PATH, serverName: e.TEMPORAL_TLS_SERVER_NAME }
    : null;

  const rawEndpoint = e.TRUTHGPT_S3_ENDPOINT;
  const localS3 = rawEndpoint === undefined;
  const endpoint = localS3 ? `http://${host}:${s3Port}` : rawEndpoint === '' || rawEndpoint === 'aws' ? undefined : rawEndpoint;
  // Checked as the user set them, before the local server's default fills in a missing half.
  if ((e.TRUTHGPT_S3_ACCESS_KEY_ID === undefined) !== (e.TRUTHGPT_S3_SECRET_ACCESS_KEY === undefined)) {
    const missing = e.TRUTHGPT_S3_ACCESS_KEY_ID === undefined ? 'TRUTHGPT_S3_ACCESS_KEY_ID' : 'TRUTHGPT_S3_SECRET_ACCESS_KEY';
    fail(`TRUTHGPT_S3_ACCESS_KEY_ID and TRUTHGPT_S3_SECRET_ACCESS_KEY must be set together (${missing} is not set)`);
  }
  if (e.TRUTHGPT_S3_SESSION_TOKEN !== undefined && e.TRUTHGPT_S3_ACCESS_KEY_ID === undefined) {
    fail('TRUTHGPT_S3_SESSION_TOKEN is set without TRUTHGPT_S3_ACCESS_KEY_ID and TRUTHGPT_S3_SECRET_ACCESS_KEY (temporary credentials are all three)');
  }
  const accessKeyId = e.TRUTHGPT_S3_ACCESS_KEY_ID ?? (localS3 ? LOCAL_S3_CREDENTIALS.accessKeyId : undefined);
  const secretAccessKey = e.TRUTHGPT_S3_SECRET_ACCESS_KEY ?? (localS3 ? LOCAL_S3_CREDENTIALS.secretAccessKey : undefined);

  return {
    temporal: { address, namespace: e.TEMPORAL_NAMESPACE ?? 'default', tls, apiKey: e.TEMPORAL_API_KEY },
    s3: {
      endpoint,
      region: e.TRUTHGPT_S3_REGION ?? 'us-east-1',
      bucket: e.TRUTHGPT_S3_BUCKET ?? 'truthgpt',
      accessKeyId,
      secretAccessKey,
      sessionToken: e.TRUTHGPT_S3_SESSION_TOKEN,
      // MinIO, Ceph and s3rver need path-style; AWS prefers virtual-hosted style.
      forcePathStyle: e.TRUTHGPT_S3_FORCE_PATH_STYLE ?? endpoint !== undefined,
    },
    runtime: { ep: e.TRUTHGPT_EP ?? 'cpu', deviceId: e.TRUTHGPT_DEVICE_ID ?? 0, workerMemoryGb: e.TRUTHGPT_WORKER_MEMORY_GB ?? DEFAULT_WORKER_MEMORY_GB, halfEmulation: e.TRUTHGPT_HALF_EMULATION ?? false },
    stack: {
      host,
      bindHost,
      stateDir: path.resolve(cwd, e.TRUTHGPT_STATE_DIR ?? '.truthgpt'),
      temporalPort,
      uiPort,
      s3Port,
      localTemporal,
      localS3,
      s3Server: e.TRUTHGPT_S3_SERVER ?? 's3rver',
    },
  };
}

/** Settings for infra/store.ts's ArtifactStore. */
export function s3Settings(config: Config): S3Settings {
  return { ...config.s3 };
}

export interface TemporalConnectionOptions {
  address: string;
  /** false: plain TCP, said explicitly (the SDKs turn TLS on for an API key unless told not to). */
  tls?:
    | {
        serverNameOverride?: string;
        serverRootCACertificate?: Buffer;
        clientCertPair?: { crt: Buffer; key: Buffer };
      }
    | false;
  apiKey?: string;
  metadata?: Record<string, string>;
}

/**
 * Options accepted by both `Connection.connect` (client) and `NativeConnection.connect` (worker).
 * Certificate files are read here, so a missing file fails before any connection attempt.
 */
export function temporalConnectionOptions(config: Config): TemporalConnectionOptions {
  const t = config.temporal;
  // TEMPORAL_TLS=false must mean plain TCP even with an API key, which both SDK connections
  // would otherwise take as a reason to turn TLS on.
  const opts: TemporalConnectionOptions = { address: t.address, tls: false };
  if (t.tls) {
    const read = (name: string, p: string) => {
      try {
        return fs.readFileSync(p);
      } catch (err) {
        throw new ConfigError(`invalid configuration: ${name}=${p}: ${(err as Error).message}`);
      }
    };
    opts.tls = {
      serverNameOverride: t.tls.serverName,
      serverRootCACertificate: t.tls.caPath ? read('TEMPORAL_TLS_CA_PATH', t.tls.caPath) : undefined,
      clientCertPair:
        t.tls.certPath && t.tls.keyPath
          ? { crt: read('TEMPORAL_TLS_CERT_PATH', t.tls.certPath), key: read('TEMPORAL_TLS_KEY_PATH', t.tls.keyPath) }
          : undefined,
    };
  }
  if (t.apiKey) {
    opts.apiKey = t.apiKey;
    // Temporal Cloud routes API-key requests by this header.
    opts.metadata = { 'temporal-namespace': t.namespace };
  }
  return opts;
}

/** The env a child process (worker, supervisor) needs to see the same configuration. */
export function configEnv(config: Config): Record<string, string> {
  const env: Record<string, string> = {
    TEMPORAL_ADDRESS: config.temporal.address,
    TEMPORAL_NAMESPACE: config.temporal.namespace,
    TRUTHGPT_S3_BUCKET: config.s3.bucket,
    TRUTHGPT_S3_REGION: config.s3.region,
    TRUTHGPT_S3_FORCE_PATH_STYLE: String(config.s3.forcePathStyle),
    TRUTHGPT_STATE_DIR: config.stack.stateDir,
    TRUTHGPT_TEMPORAL_PORT: String(config.stack.temporalPort),
    TRUTHGPT_UI_PORT: String(config.stack.uiPort),
    TRUTHGPT_S3_PORT: String(config.stack.s3Port),
    TRUTHGPT_BIND_HOST: config.stack.bindHost,
    TRUTHGPT_EP: config.runtime.ep,
    TRUTHGPT_DEVICE_ID: String(config.runtime.deviceId),
    TRUTHGPT_WORKER_MEMORY_GB: String(config.runtime.workerMemoryGb),
  };
  if (config.runtime.halfEmulation) env.TRUTHGPT_HALF_EMULATION = 'true';
  // Local endpoints stay implicit so a child derives the same defaults (and local credentials).
  if (!config.stack.localS3) env.TRUTHGPT_S3_ENDPOINT = config.s3.endpoint ?? 'aws';
  if (config.stack.localTemporal) delete (env as Partial<typeof env>).TEMPORAL_ADDRESS;
  return env;
}

/** Web UI link of one workflow run (local dev server UI). */
export function workflowUiUrl(config: Config, workflowId: string, runId?: string): string {
  const base = `http://${config.stack.host}:${config.stack.uiPort}/namespaces/${encodeURIComponent(config.temporal.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return runId ? `${base}/${encodeURIComponent(runId)}/history` : base;
}
