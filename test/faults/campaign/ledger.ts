// Every committed artifact the campaign has seen: each MANIFEST.json under the runs' prefixes and
// datasets/, with the key, size and sha256 of each file it lists, and the run that committed it.
// At the end every one must still be there, listing the same files, each file's bytes hashing to
// what the manifest said. A commit is forever: nothing the campaign saw committed may go or change.

import { createHash } from 'node:crypto';
import { MANIFEST_NAME, type ArtifactStore } from '../../../infra/store';

export interface LedgerEntry {
  prefix: string;
  /** The run whose scan first saw this commit (datasets: the first run that used them). */
  runId: string;
  files: { name: string; key: string; size: number; sha256: string }[];
}

export interface LedgerProblem {
  prefix: string;
  runId: string;
  kind: 'lost' | 'changed';
  detail: string;
}

export class Ledger {
  readonly entries = new Map<string, LedgerEntry>();

  /** Records every manifest under `prefix` not seen before; returns how many were new. */
  async scan(store: ArtifactStore, prefix: string, runId: string): Promise<number> {
    let added = 0;
    for (const o of await store.list(prefix)) {
      if (!o.key.endsWith(`/${MANIFEST_NAME}`)) continue;
      const p = o.key.slice(0, -MANIFEST_NAME.length - 1);
      if (this.entries.has(p)) continue;
      const m = await store.readManifest(p);
      if (!m) continue; // deleted between list and read (a superseded snapshot)
      this.entries.set(p, { prefix: p, runId, files: m.files.map((f) => ({ name: f.name, key: f.key, size: f.size, sha256: f.sha256 })) });
      added++;
    }
    return added;
  }

  /** Re-reads every recorded manifest and every byte of every file it lists. */
  async verify(store: ArtifactStore): Promise<{ files: number; bytes: number; problems: LedgerProblem[] }> {
    const problems: LedgerProblem[] = [];
    let files = 0;
    let bytes = 0;
    for (const e of this.entries.values()) {
      const m = await store.readManifest(e.prefix);
      if (!m) {
        problems.push({ prefix: e.prefix, runId: e.runId, kind: 'lost', detail: `${e.prefix}/${MANIFEST_NAME} is gone` });
        continue;
      }
      const now = new Map(m.files.map((f) => [f.name, f]));
      for (const f of e.files) {
        const g = now.get(f.name);
        if (!g || g.key !== f.key || g.sha256 !== f.sha256 || g.size !== f.size) {
          problems.push({ prefix: e.prefix, runId: e.runId, kind: 'changed', detail: `the manifest of ${e.prefix} no longer lists ${f.name} as ${f.key} (${f.sha256.slice(0, 12)})` });
          continue;
        }
        let body: Buffer;
        try {
          body = await store.get(f.key);
        } catch (err) {
          const name = (err as Error).name;
          problems.push({ prefix: e.prefix, runId: e.runId, kind: name === 'NotFoundError' ? 'lost' : 'changed', detail: `${f.key}: ${(err as Error).message.split('\n')[0]}` });
          continue;
        }
        const sha = createHash('sha256').update(body).digest('hex');
        if (sha !== f.sha256 || body.length !== f.size) {
          problems.push({ prefix: e.prefix, runId: e.runId, kind: 'changed', detail: `${f.key}: ${body.length} bytes hashing to ${sha.slice(0, 12)}, committed as ${f.size} bytes ${f.sha256.slice(0, 12)}` });
          continue;
        }
        files++;
        bytes += body.length;
      }
    }
    return { files, bytes, problems };
  }
}
