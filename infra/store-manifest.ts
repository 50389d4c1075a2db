// Committing multi-file artifacts (checkpoints, dataset shards, reports) atomically.
//
// S3 has no transactions, so a prefix counts as written only once `<prefix>/MANIFEST.json`
// exists, and the manifest is always the last object written. A worker that dies halfway
// leaves files without a manifest, which readers treat as nothing at all; a retry simply
// writes everything again under the same keys.

import { Readable } from 'node:stream';
import { z } from 'zod';
import { folderOf, InvalidKeyError, joinKey } from './keys';
import { NotFoundError } from './store-errors';
import type { ArtifactStore } from './store';
import type { PutBody, PutResult } from './store-upload';

export const MANIFEST_NAME = 'MANIFEST.json';

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');

export const ManifestFileSchema = z.object({
  /** Name relative to the prefix, as given to commit(). */
  name: z.string().min(1),
  key: z.string().min(1),
  size: z.number().int().nonnegative(),
  sha256: Sha256,
});

export const ManifestSchema = z.object({
  version: z.literal(1),
  prefix: z.string().min(1),
  committedAt: z.string(),
  files: z.array(ManifestFileSchema),
  meta: z.record(z.string(), z.unknown()),
});

export type ManifestFile = z.infer<typeof ManifestFileSchema>;
export type Manifest = z.infer<typeof ManifestSchema>;

/**
 * What commit() accepts per file: bytes or a stream to upload, `{ path }` of a local file to
 * upload, or the PutResult of an object already written (checked against its metadata, not
 * re-uploaded).
 */
export type CommitFile = PutBody | { path: string } | PutResult;

export function manifestKeyOf(prefix: string): string {
  return joinKey(folderOf(prefix), MANIFEST_NAME);
}

async function writeOne(store: ArtifactStore, key: string, file: CommitFile): Promise<PutResult> {
  if (file instanceof Uint8Array || file instanceof Readable) return store.put(key, file);
  if ('path' in file) return store.putFile(key, file.path);
  // Already uploaded: make sure the object still is what the caller thinks it is.
  const info = await store.head(file.key);
  if (info.size !== file.size || info.sha256 !== file.sha256) {
    throw new Error(
      `commit: s3://${store.bucket}/${file.key} changed since it was written ` +
        `(size ${info.size} vs ${file.size}, sha256 ${info.sha256 ?? 'missing'} vs ${file.sha256})`,
    );
  }
  return file;
}

export async function commitManifest(
  store: ArtifactStore,
  prefix: string,
  files: Record<string, CommitFile>,
  meta: Record<string, unknown>,
): Promise<Manifest> {
  const folder = folderOf(prefix);
  const manifestKey = manifestKeyOf(folder);
  const entries: ManifestFile[] = [];
  for (const [name, file] of Object.entries(files)) {
    const key = joinKey(folder, name);
    if (key === manifestKey) throw new InvalidKeyError(key, `"${MANIFEST_NAME}" is reserved for the manifest itself`);
    const written = await writeOne(store, key, file);
    entries.push({ name, key: written.key, size: written.size, sha256: written.sha256 });
  }
  const manifest: Manifest = {
    version: 1,
    prefix: folder,
    committedAt: new Date().toISOString(),
    files: entries,
    meta,
  };
  // Last, so that a reader who sees the manifest can rely on every file it lists.
  await store.putJson(manifestKey, manifest);
  return manifest;
}

export async function readManifest(store: ArtifactStore, prefix: string): Promise<Manifest | null> {
  const key = manifestKeyOf(prefix);
  let raw: unknown;
  try {
    raw = await store.getJson(key);
  } catch (err) {
    // A missing manifest means "not committed"; a missing bucket is a configuration error.
    if (err instanceof NotFoundError && err.key !== undefined) return null;
    throw err;
  }
  const parsed = ManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`s3://${store.bucket}/${key} is not a valid manifest: ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return parsed.data;
}
