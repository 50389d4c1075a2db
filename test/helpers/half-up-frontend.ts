// A Temporal frontend that is half up, as one is while it starts or restarts: it accepts gRPC
// connections and answers GetSystemInfo (so `Connection.connect` succeeds), but every other call
// fails UNAVAILABLE, which the client's default interceptor retries with backoff. A real dev server
// passes through this state for a moment only; this one stays in it, so the behaviour of a status
// check against it can be tested without racing a restart.

import * as grpc from '@grpc/grpc-js';
import { temporal } from '@temporalio/proto';

export interface HalfUpFrontend {
  address: string;
  /** Calls answered UNAVAILABLE so far, by method name. */
  refused: Map<string, number>;
  close(): Promise<void>;
}

const SERVICE = 'temporal.api.workflowservice.v1.WorkflowService';
const raw = (b: Buffer) => b;

export async function startHalfUpFrontend(): Promise<HalfUpFrontend> {
  const server = new grpc.Server();
  const refused = new Map<string, number>();
  const unary = (name: string, handle: grpc.handleUnaryCall<Buffer, Buffer>) => {
    server.register(`/${SERVICE}/${name}`, handle, raw, raw, 'unary');
  };
  unary('GetSystemInfo', (_call, cb) => {
    cb(null, Buffer.from(temporal.api.workflowservice.v1.GetSystemInfoResponse.encode({ serverVersion: 'half-up' }).finish()));
  });
  for (const name of ['DescribeNamespace', 'DescribeTaskQueue']) {
    unary(name, (_call, cb) => {
      refused.set(name, (refused.get(name) ?? 0) + 1);
      cb({ code: grpc.status.UNAVAILABLE, details: 'frontend is starting' });
    });
  }
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    address: `127.0.0.1:${port}`,
    refused,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}
