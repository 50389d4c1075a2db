// Committing multi-file artifacts (checkpoints, dataset shards, reports) atomically.
//
// S3 has no transactions, so a prefix counts as written only once `<prefix>/MANIFEST.json`
// exists, and the manifest is always the last object written. A worker that dies halfway
// leaves files without a manifest, which readers treat as nothing at all.
//
// Two attempts of one activity may commit the same prefix at once (a retry started while a
// partitioned worker still runs). Two rules keep the committed checkpoint intact:
//  - Files are content-addressed: `<prefix>/sha256-<hex>/<name>`, and the manifest names each
//    key. Different bytes never share a key, so no attempt overwrites a file another attempt's
//    manifest lists; equal bytes share it, so a retry that recomputes the same bytes rewrites
//    the same objects.
//  - Where the server honours `If-None-Match: *` (AWS S3, versitygw, MinIO; probed once per
//    store, ArtifactStore.conditionalWrites) the manifest is created only if none exists. The
//    first commit wins; a later one with the same files (names, sizes, sha256s) gets the
//    committed manifest back (an idempotent retry), one with different files deletes the files
//    only it wrote and throws CommitConflictError. Where the server ignores the header (s3rver)
//    the last manifest written wins: every manifest still lists only its own intact files, so a
//    reader sees one whole commit or the other, never a mix, but both committers return success.
//    (That needs each object write to be atomic, as in S3; infra/s3server-compat.ts makes
//    s3rver's so.)

import { Readable } from 'node:stream';
import { z } from 'zod';
import { committedFileKey } from '../spec/store-layout';
import { folderOf, InvalidKeyError, joinKey, validateKey } from './keys';
import { CommitConflictError, NotFoundError, type CommitDifference } from './store-errors';
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
export type CommitFile = PutBody | { path: string } | PutResult | HashedBytes;

/** Bytes whose sha256 the caller just computed (packCheckpoint pins its files): not hashed again. */
export interface HashedBytes {
  bytes: Uint8Array;
  sha256: string;
}

export function manifestKeyOf(prefix: string): string {
  return joinKey(folderOf(prefix), MANIFEST_NAME);
}

/** Where a file of a commit goes: its folder, its content's hash, then its own name (spec/store-layout.ts). */
export function contentKeyOf(folder: string, name: string, sha256: string): string {
  return validateKey(committedFileKey(folderOf(folder), joinKey(name), sha256));
}

/** The folder and name of a key that contentKeyOf made; null for any other key. */
export function parseContentKey(key: string): { folder: string; name: string; sha256: string } | null {
  const m = /^(.+?)\/sha256-([0-9a-f]{64})\/(.+)$/.exec(key);
  return m ? { folder: m[1]!, sha256: m[2]!, name: m[3]! } : null;
}

async function writeOne(store: ArtifactStore, folder: string, name: string, file: CommitFile): Promise<PutResult> {
  if (file instanceof Uint8Array || file instanceof Readable || 'path' in file || 'bytes' in file) {
    return store.putHashed((sha256) => contentKeyOf(folder, name, sha256), file);
  }
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

/** Files on which two manifests disagree (by name: size and sha256); empty when they hold the same files. */
export function manifestDifferences(ours: ManifestFile[], committed: ManifestFile[]): CommitDifference[] {
  const theirs = new Map(committed.map((f) => [f.name, f]));
  const diffs: CommitDifference[] = [];
  for (const f of ours) {
    const t = theirs.get(f.name);
    if (!t || t.sha256 !== f.sha256 || t.size !== f.size) diffs.push({ name: f.name, ours: f.sha256, committed: t?.sha256 });
    theirs.delete(f.name);
  }
  for (const t of theirs.values()) diffs.push({ name: t.name, committed: t.sha256 });
  return diffs;
}

export async function commitManifest(
  store: ArtifactStore,
  prefix: string,
  files: Record<string, CommitFile>,
  meta: Record<string, unknown>,
): Promise<Manifest> {
  const folder = folderOf(prefix);
  const manifestKey = manifestKeyOf(folder);
  // Probed before any upload, so a probe failure costs no transfer.
  const conditional = await store.conditionalWrites(folder);
  for (const name of Object.keys(files)) {
    if (joinKey(folder, name) === manifestKey) throw new InvalidKeyError(manifestKey, `"${MANIFEST_NAME}" is reserved for the manifest itself`);
  }
  // The files upload in parallel; the manifest lists them in the caller's order.
  const entries: ManifestFile[] = await Promise.all(
    Object.entries(files).map(async ([name, file]) => {
      const written = await writeOne(store, folder, name, file);
      return { name, key: written.key, size: written.size, sha256: written.sha256 };
    }),
  );
  const manifest: Manifest = {
    version: 1,
    prefix: folder,
    committedAt: new Date().toISOString(),
    files: entries,
    meta,
  };
  const body = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  // Last, so that a reader who sees the manifest can rely on every file it lists.
  if (!conditional) {
    await store.put(manifestKey, body, { contentType: 'application/json' });
    return manifest;
  }
  if (await store.putIfAbsent(manifestKey, body, { contentType: 'application/json' })) return manifest;

  const committed = await readManifest(store, folder);
  // Refused, yet gone: only a delete between the two requests does that; the caller may retry.
  if (!committed) throw new Error(`commit ${folder}: s3://${store.bucket}/${manifestKey} existed a moment ago and is gone now`);
  const differences = manifestDifferences(entries, committed.files);
  if (differences.length === 0) return committed;
  // The files we uploaded under keys the winner does not list are ours alone (equal bytes share a
  // key, so anything the winner needs is listed); objects the caller uploaded stay the caller's.
  const kept = new Set(committed.files.map((f) => f.key));
  const callers = new Set(Object.values(files).filter((f): f is PutResult => !(f instanceof Uint8Array || f instanceof Readable || 'path' in f || 'bytes' in f)).map((f) => f.key));
  for (const e of entries) {
    if (!kept.has(e.key) && !callers.has(e.key)) await store.delete(e.key);
  }
  throw new CommitConflictError(store.bucket, folder, manifestKey, differences);
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
