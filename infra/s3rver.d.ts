// s3rver ships no type declarations; this covers the part of its API that infra/s3server.ts uses.
declare module 's3rver' {
  import type { AddressInfo } from 'node:net';
  import type { RequestListener, Server } from 'node:http';

  interface S3rverOptions {
    address?: string;
    port?: number;
    silent?: boolean;
    directory?: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    configureBuckets?: { name: string; configs?: (string | Buffer)[] }[];
  }

  class S3rver {
    constructor(options?: S3rverOptions);
    run(): Promise<AddressInfo>;
    /** Creates the buckets named in options.configureBuckets directly on disk. */
    configureBuckets(): Promise<unknown>;
    /** The Koa request handler, for serving from an http.Server we own. */
    callback(): RequestListener;
    close(): Promise<void>;
    httpServer?: Server;
    /** Koa's middleware stack, in order: logger, XML encoder, mount interop, vhost, router. */
    middleware: ((ctx: any, next: () => Promise<void>) => Promise<void> | void)[];
    on(event: 'error', listener: (err: Error) => void): this;
  }

  export = S3rver;
}
