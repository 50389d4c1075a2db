// A real Temporal dev server, a real S3 server and the three workers (workflows, cpu, gpu roles)
// running in this process (with the code the worker processes run): what every workflow
// integration test stands on.

import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import { loadConfig, type Config } from '../../infra/config';
import { createPoolWorker, type PoolWorker } from '../../workers/worker';
import { withS3, type S3Fixture } from './s3';
import { withTemporal, type TemporalFixture } from './temporal';

export interface InProcessStack {
  temporal: TemporalFixture;
  s3: S3Fixture;
  /** Config pointing at these servers, as the CLI and workers would load it. */
  config: Config;
  workers: PoolWorker[];
  close(): Promise<void>;
}

let runtimeInstalled = false;

/**
 * Starts servers and the workflows, cpu and gpu workers; `close()` stops workers first, then the
 * servers. `env`: more worker settings (e.g. TRUTHGPT_HALF_EMULATION), as the environment gives them.
 */
export async function withInProcessStack(opts: { bucket: string; logLevel?: LogLevel; env?: Record<string, string> }): Promise<InProcessStack> {
  if (!runtimeInstalled) {
    Runtime.install({ logger: new DefaultLogger(opts.logLevel ?? 'WARN') });
    runtimeInstalled = true;
  }
  const [temporal, s3] = await Promise.all([withTemporal(), withS3({ bucket: opts.bucket })]);
  const config = loadConfig({
    TRUTHGPT_TEMPORAL_PORT: String(temporal.port),
    TRUTHGPT_UI_PORT: String(temporal.uiPort),
    TRUTHGPT_S3_PORT: String(s3.server.port),
    TRUTHGPT_S3_BUCKET: opts.bucket,
    TRUTHGPT_STATE_DIR: s3.dir,
    ...opts.env,
  });
  const workers = await Promise.all([createPoolWorker(config, 'workflows'), createPoolWorker(config, 'cpu'), createPoolWorker(config, 'gpu')]);
  const running = workers.map((w) => w.run());
  return {
    temporal,
    s3,
    config,
    workers,
    async close() {
      for (const w of workers) if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
      await Promise.allSettled(running);
      await Promise.allSettled([temporal.close(), s3.close()]);
    },
  };
}
