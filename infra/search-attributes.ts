// Registers our search attributes: as `start-dev` flags for the local dev server, and through the
// operator service for any other cluster (self-hosted; Temporal Cloud uses `tcld` or its UI).

import type { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { SEARCH_ATTRIBUTES } from '../spec/temporal-names';

/** The dev server spells types in PascalCase (`KeywordList`), the SDK in SCREAMING_CASE. */
const cliTypeName = (t: string) =>
  t
    .split('_')
    .map((w) => w.charAt(0) + w.slice(1).toLowerCase())
    .join('');

/** `--search-attribute Name=Type` pairs for `temporal server start-dev`. */
export function devServerSearchAttributeFlags(): string[] {
  return SEARCH_ATTRIBUTES.flatMap((k) => ['--search-attribute', `${k.name}=${cliTypeName(k.type)}`]);
}

/** Names of our attributes the namespace does not know yet. */
export async function missingSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const res = await connection.operatorService.listSearchAttributes({ namespace });
  const known = new Set(Object.keys(res.customAttributes ?? {}));
  return SEARCH_ATTRIBUTES.map((k) => k.name).filter((n) => !known.has(n));
}

/** Adds the missing attributes on a self-hosted cluster; a no-op when all exist. */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const missing = new Set(await missingSearchAttributes(connection, namespace));
  if (missing.size === 0) return [];
  const searchAttributes = Object.fromEntries(
    SEARCH_ATTRIBUTES.filter((k) => missing.has(k.name)).map((k) => [k.name, temporal.api.enums.v1.IndexedValueType[`INDEXED_VALUE_TYPE_${k.type}`]]),
  );
  await connection.operatorService.addSearchAttributes({ namespace, searchAttributes });
  return [...missing];
}
