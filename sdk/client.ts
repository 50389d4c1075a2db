// The client side of TruthGPT: a Temporal client configured from infra/config, nothing else.

import { Client, Connection } from '@temporalio/client';
import { temporalConnectionOptions, type Config } from '../infra/config';

/**
 * Connects to the Temporal frontend named by the config (local dev server, a cluster, or Cloud).
 * Close it with `client.connection.close()`.
 * @example const client = await connectTemporal(loadConfig());
 */
export async function connectTemporal(config: Config): Promise<Client> {
  const connection = await Connection.connect({ ...temporalConnectionOptions(config), connectTimeout: 5000 });
  return new Client({ connection, namespace: config.temporal.namespace });
}
