// `truthgpt verify`: re-reads every file of every commit under a prefix and checks it against its
// manifest (size and sha256). A reader already verifies what it reads, but a commit that nobody
// reads again (a consumed checkpoint, a dataset shard a worker holds in memory) can rot unseen: the
// fault campaign flipped 11 committed objects and only 2 were ever read again. This finds the rest.

import { createHash } from 'node:crypto';
import { IntegrityError, NotFoundError, type ArtifactStore, type Manifest } from '../infra/store';
import { manifestPrefix } from './keys';

export interface VerifyProblem {
  /** The commit (the folder of its MANIFEST.json). */
  prefix: string;
  /** The object that failed, or the manifest's own key. */
  key: string;
  kind: 'missing' | 'corrupt' | 'unreadable';
  detail: string;
}

export interface VerifyReport {
  manifests: number;
  files: number;
  bytes: number;
  problems: VerifyProblem[];
}

const firstLine = (err: unknown) => ((err as Error).message ?? String(err)).split('\n')[0];

/** Streams one object through sha256: its size and hash, without holding it in memory. */
async function hashObject(store: ArtifactStore, key: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of await store.getStream(key)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest('hex') };
}

/**
 * Checks every file listed by every manifest under `prefix` ('' for the whole bucket): present,
 * of the committed size, hashing to the committed sha256. `onManifest` sees each commit as it is done.
 * @example const r = await verifyCommitted(store, 'runs/demo-1/'); if (r.problems.length) ...
 */
export async function verifyCommitted(store: ArtifactStore, prefix: string, onManifest?: (prefix: string, problems: VerifyProblem[]) => void): Promise<VerifyReport> {
  const report: VerifyReport = { manifests: 0, files: 0, bytes: 0, problems: [] };
  for (const o of await store.list(prefix)) {
    const at = manifestPrefix(o.key);
    if (at === null) continue;
    const problems: VerifyProblem[] = [];
    let manifest: Manifest | null;
    try {
      manifest = await store.readManifest(at);
    } catch (err) {
      problems.push({ prefix: at, key: o.key, kind: 'corrupt', detail: `the manifest does not read: ${firstLine(err)}` });
      manifest = null;
    }
    report.manifests += 1;
    for (const f of manifest?.files ?? []) {
      try {
        const got = await hashObject(store, f.key);
        if (got.size !== f.size || got.sha256 !== f.sha256) {
          problems.push({ prefix: at, key: f.key, kind: 'corrupt', detail: `${got.size} bytes hashing to ${got.sha256.slice(0, 12)}, committed as ${f.size} bytes ${f.sha256.slice(0, 12)}` });
          continue;
        }
        report.files += 1;
        report.bytes += got.size;
      } catch (err) {
        const kind = err instanceof NotFoundError ? 'missing' : err instanceof IntegrityError ? 'corrupt' : 'unreadable';
        problems.push({ prefix: at, key: f.key, kind, detail: firstLine(err) });
      }
    }
    report.problems.push(...problems);
    onManifest?.(at, problems);
  }
  return report;
}
