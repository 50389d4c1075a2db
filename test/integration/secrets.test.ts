// Credentials never leave the config (issue 15): with recognizable fake values for the S3 key pair
// (a real versitygw gateway that accepts exactly them) and the Temporal API key (sent as a bearer
// header; the dev server, without TLS, ignores it), a pipeline runs to the end, another fails, and
// the CLI's errors for a wrong secret are rendered. Then everything those runs wrote is searched for
// each secret: every event of every workflow history with its payloads decoded, every workflow's
// memo and search attributes, every object in the bucket, everything printed to stdout and stderr,
// and the error messages.
// (TLS key files are not covered: the dev server speaks no TLS, so they cannot be loaded here.)

import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import { generateText } from '../../sdk/cli/report-commands';
import { describeCliError } from '../../sdk/cli/errors';
import { loadConfig, s3Settings, type Config } from '../../infra/config';
import { ArtifactStore } from '../../infra/store';
import type { S3Server } from '../../infra/s3server';
import { startVersitygw } from '../../infra/versitygw';
import { TruthGPT, RunFailedError, type PipelineSpecInput } from '../../sdk';
import { createPoolWorker, type PoolWorker } from '../../workers/worker';
import { withTemporal, type TemporalFixture } from '../helpers/temporal';

const SECRETS = {
  accessKeyId: 'TGFAKEACCESSKEY7Q3Z',
  secretAccessKey: 'tgFakeSecret/Value+8c1e5d0b9a7f',
  apiKey: 'tg-fake-temporal-api-key-4b6d2e',
};
const BUCKET = 'truthgpt-secrets';

let temporal: TemporalFixture;
let s3: S3Server;
let dir: string;
let config: Config;
let workers: PoolWorker[] = [];
let running: Promise<void>[] = [];
let printed = '';
const restore: (() => void)[] = [];

/** Everything written to stdout and stderr from here on (the workers' and the SDK's logs too). */
function capture(stream: NodeJS.WriteStream): void {
  const write = stream.write.bind(stream);
  stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    printed += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof stream.write;
  restore.push(() => (stream.write = write));
}

beforeAll(async () => {
  capture(process.stdout);
  capture(process.stderr);
  // Every log line of the workers, at the most verbose level the SDK has.
  Runtime.install({ logger: new DefaultLogger('DEBUG', (entry) => void (printed += `${entry.level} ${entry.message} ${JSON.stringify(entry.meta ?? {})}\n`)) });
  dir = await mkdtemp(path.join(os.tmpdir(), 'truthgpt-secrets-'));
  [temporal, s3] = await Promise.all([withTemporal(), startVersitygw({ dir: path.join(dir, 's3'), port: 0, bucket: BUCKET, credentials: SECRETS })]);
  config = loadConfig({
    TEMPORAL_ADDRESS: `127.0.0.1:${temporal.port}`,
    TEMPORAL_API_KEY: SECRETS.apiKey,
    TEMPORAL_TLS: 'false',
    TRUTHGPT_S3_ENDPOINT: s3.endpoint,
    TRUTHGPT_S3_BUCKET: BUCKET,
    TRUTHGPT_S3_ACCESS_KEY_ID: SECRETS.accessKeyId,
    TRUTHGPT_S3_SECRET_ACCESS_KEY: SECRETS.secretAccessKey,
    TRUTHGPT_STATE_DIR: dir,
  });
  workers = await Promise.all([createPoolWorker(config, 'workflows'), createPoolWorker(config, 'cpu'), createPoolWorker(config, 'gpu')]);
  running = workers.map((w) => w.run());
}, 300_000);

afterAll(async () => {
  for (const w of workers) if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
  await Promise.allSettled(running);
  await Promise.allSettled([temporal?.close(), s3?.close()]);
  for (const r of restore) r();
  await rm(dir, { recursive: true, force: true });
});

const spec = (over: Partial<PipelineSpecInput> = {}): PipelineSpecInput => ({
  name: 'secrets',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  training: { workers: 1, rounds: 1, innerSteps: 5, batchSize: 4, contextLength: 32, evalBatches: 2 },
  quantization: [{ method: 'int8-dynamic', maxPplIncrease: 0.5 }],
  evaluation: { batches: 2, speedRuns: 1, warmup: 0, calibrationBatches: 1, samples: { prompts: ['The '], maxNewTokens: 8 } },
  ...over,
});

/**
 * JSON of `value` with every payload's data decoded as UTF-8 text: byte arrays, and the base64
 * strings that a history's JSON form holds under `data`.
 */
function searchable(value: unknown): string {
  return JSON.stringify(value, (k, v: unknown) => {
    if (v instanceof Uint8Array) return Buffer.from(v).toString('utf8');
    if (k === 'data' && typeof v === 'string') return Buffer.from(v, 'base64').toString('utf8');
    return v;
  });
}

/** The places (by name) whose text contains any of the secrets. */
function leaks(where: string, text: string): string[] {
  return Object.entries(SECRETS)
    .filter(([, s]) => text.includes(s) || text.includes(Buffer.from(s).toString('base64')))
    .map(([name]) => `${name} in ${where}`);
}

test('no credential appears in histories, memos, search attributes, stored objects, logs or error messages', async () => {
  const tg = await TruthGPT.connect({ config });
  try {
    const ok = await (await tg.startPipeline(spec())).result();
    expect(ok.variants.length).toBe(2);
    // A run that fails: its failure chain lands in the histories too.
    const failed = await (await tg.startPipeline(spec({ name: 'secrets-fail', dataset: { name: 'missing', corpus: { kind: 'text', path: path.join(dir, 'no-such-corpus.txt') } } }))).result().catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(RunFailedError);

    const found: string[] = [];
    // The CLI's errors when the secret is wrong (S3 refuses the signature) and when it is right but the model is missing.
    const wrong = new ArtifactStore({ ...s3Settings(config), secretAccessKey: `${SECRETS.secretAccessKey}-wrong` });
    const messages: string[] = [];
    for (const store of [wrong, new ArtifactStore(s3Settings(config))]) {
      try {
        await generateText(store, 'runs/nobody/models/int8', 'The ', { maxNewTokens: 4, temperature: 0, topK: 0, topP: 1, seed: 0, threads: 1 });
      } catch (err) {
        messages.push(describeCliError(err, {}), (err as Error).stack ?? '');
      } finally {
        store.close();
      }
    }
    expect(messages[0]).toMatch(/S3 refused the request signature|S3 does not know this access key|denied/);
    found.push(...leaks('CLI error messages', messages.join('\n')));

    // Every workflow: its history (payloads decoded), memo and search attributes.
    const ids: string[] = [];
    for await (const w of tg.client.workflow.list()) ids.push(w.workflowId);
    expect(ids.length).toBeGreaterThanOrEqual(5); // the pipelines, the first one's train and post children, the failed one's train child
    let histories = '';
    for (const id of ids) {
      const h = tg.client.workflow.getHandle(id);
      const history = searchable(await h.fetchHistory());
      histories += history;
      found.push(...leaks(`history of ${id}`, history));
      const d = await h.describe();
      found.push(...leaks(`memo and search attributes of ${id}`, searchable({ memo: d.memo, sa: d.searchAttributes, typed: d.typedSearchAttributes })));
    }

    // The search sees inside payloads (the spec's dataset name is in them) and would see a secret there.
    expect(histories).toContain('brown-humor');
    expect(leaks('a probe', `…"${SECRETS.secretAccessKey}"…`)).toEqual(['secretAccessKey in a probe']);

    // Every object in the bucket.
    const store = new ArtifactStore(s3Settings(config));
    try {
      const objects = await store.list('');
      expect(objects.length).toBeGreaterThan(20);
      for (const o of objects) found.push(...leaks(`s3://${BUCKET}/${o.key}`, (await store.get(o.key)).toString('latin1')));
    } finally {
      store.close();
    }

    // Everything printed, the workers' logs included.
    expect(printed.length).toBeGreaterThan(0);
    found.push(...leaks('stdout/stderr and worker logs', printed));
    expect(found).toEqual([]);
  } finally {
    await tg.close();
  }
}, 600_000);
