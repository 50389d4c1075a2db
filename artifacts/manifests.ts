// Listing committed manifests: what "the newest dataset under a prefix" and "the last fine-tune of
// a lineage" are built on.

import type { ArtifactStore, Manifest } from '../infra/store';
import { manifestPrefix } from './keys';

/** Every committed manifest directly or deeper under `prefix`, newest commit first (ties: by key). */
export async function manifestsUnder(store: ArtifactStore, prefix: string): Promise<Manifest[]> {
  const found: Manifest[] = [];
  for (const o of await store.list(prefix)) {
    const at = manifestPrefix(o.key);
    if (at === null) continue;
    const m = await store.readManifest(at);
    if (m) found.push(m);
  }
  return found.sort((a, b) => (a.committedAt === b.committedAt ? (a.prefix < b.prefix ? 1 : -1) : a.committedAt < b.committedAt ? 1 : -1));
}
