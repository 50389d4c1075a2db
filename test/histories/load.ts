// Loads a JSON workflow history (the format `temporal workflow show -o json` writes) into the
// History object Worker.runReplayHistory takes. Same as @temporalio/common's historyFromJSON, but
// with the protobufjs copy that @temporalio/proto itself resolves: this install holds two copies
// of protobufjs 8 (under common and under proto, because onnx-proto's older one sits at the root),
// and historyFromJSON's `instanceof Type` check fails across them ("type must be a Type").

import type { temporal } from '@temporalio/proto';
import path from 'node:path';

type History = temporal.api.history.v1.IHistory;

const protoDir = path.dirname(require.resolve('@temporalio/proto/package.json'));
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { fromJson } = require(require.resolve('protobufjs/ext/protojson', { paths: [protoDir] })) as { fromJson(type: unknown, json: unknown, opts?: object): History | null };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { patchProtobufRoot } = require('@temporalio/proto/lib/patch-protobuf-root') as { patchProtobufRoot<T>(root: T): T & { lookupType(name: string): unknown } };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const historyType = patchProtobufRoot(require('@temporalio/proto')).lookupType('temporal.api.history.v1.History');

/** A history from its JSON; throws naming `what` when it is not one. */
export function historyFromJson(json: unknown, what: string): History {
  if (typeof json !== 'object' || json === null || !Array.isArray((json as { events?: unknown }).events)) throw new TypeError(`${what}: not a workflow history (no events array)`);
  const h = fromJson(historyType, json, { ignoreUnknownFields: true });
  if (!h) throw new TypeError(`${what}: not a workflow history`);
  return h;
}
