// Lineages of scheduled fine-tunes: one record per successful fine-tune, so the next run knows what
// data and adapter the last one used.

import type { ArtifactStore } from '../infra/store';
import type { CheckpointRef } from './checkpoints';
import { ftKeys } from './keys';
import { manifestsUnder } from './manifests';

/** What a lineage remembers of one successful fine-tune. */
export interface LineageRecord {
  runId: string;
  dataset: { prefix: string; contentHash: string };
  adapter: CheckpointRef;
  merged: CheckpointRef;
  valLossAfter: number;
  committedAt: string;
}

/** The newest record of a lineage, or null before its first success. */
export async function lastSuccessful(store: ArtifactStore, lineage: string): Promise<LineageRecord | null> {
  const [m] = await manifestsUnder(store, ftKeys.lineage(lineage));
  return m ? (m.meta.record as LineageRecord) : null;
}

export async function recordSuccess(store: ArtifactStore, lineage: string, record: Omit<LineageRecord, 'committedAt'>): Promise<LineageRecord> {
  const prefix = ftKeys.lineageRun(lineage, record.runId);
  const done = await store.readManifest(prefix);
  if (done) return done.meta.record as LineageRecord;
  const m = await store.commit(prefix, {}, { record: { ...record, committedAt: new Date().toISOString() } });
  // committedAt of the record is the manifest's own, so ordering by either agrees.
  const committed = { ...record, committedAt: m.committedAt };
  return committed;
}

