// The SDK's and the CLI's short-lived connection to the artifact store of a config.

import { s3Settings, type Config } from '../infra/config';
import { ArtifactStore } from '../infra/store';

/**
 * Runs `fn` with a store on `config`'s S3 settings, closed afterwards.
 * @example const report = await withStore(config, (s) => fetchReport(s, id))
 */
export async function withStore<T>(config: Config, fn: (s: ArtifactStore) => Promise<T>): Promise<T> {
  const store = new ArtifactStore(s3Settings(config));
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}
