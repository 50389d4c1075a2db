// Tokenizers whose definition lives in the store: an `hf` tokenizer is saved as a reference (the
// key of a tokenizer.json beside an imported model, and its sha256), never inlined into manifests
// or workflow payloads; this is where the file is fetched, verified and loaded.

import { sha256 } from '../engine/checkpoint/checkpoint';
import { loadTokenizer, type SavedTokenizer, type Tokenizer } from '../engine/data/tokenizer';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { asFailure } from './errors';
import { readTokenizer, type DatasetRef } from './datasets';

/**
 * The text of the tokenizer.json at `ref.key` (a file of a committed prefix), checked against the
 * prefix's manifest and against `ref.sha256`.
 */
export async function fetchHfTokenizerJson(store: ArtifactStore, ref: { key: string; sha256: string }): Promise<string> {
  const cut = ref.key.lastIndexOf('/');
  if (cut <= 0) throw failure('InvalidInput', `tokenizer ${ref.key}: expected the key of a file under a committed prefix (models/<name>/tokenizer.json)`, { key: ref.key });
  let bytes: Buffer;
  try {
    bytes = await store.getVerified(ref.key.slice(0, cut), ref.key.slice(cut + 1));
  } catch (err) {
    throw asFailure(err, `tokenizer ${ref.key}`);
  }
  const actual = sha256(bytes);
  if (actual !== ref.sha256) throw failure('CorruptCheckpoint', `tokenizer ${ref.key}: sha256 ${actual} is not the ${ref.sha256} it is referenced by`, { key: ref.key });
  return bytes.toString('utf8');
}

/**
 * Any saved tokenizer, fetching an `hf` one's tokenizer.json from the store.
 * @example const tok = await loadStoredTokenizer(store, await readTokenizer(store, dataset))
 */
export async function loadStoredTokenizer(store: ArtifactStore, saved: SavedTokenizer): Promise<Tokenizer> {
  const json = saved.kind === 'hf' ? await fetchHfTokenizerJson(store, saved) : undefined;
  try {
    return loadTokenizer(saved, json);
  } catch (err) {
    throw asFailure(err, 'tokenizer');
  }
}

/**
 * `derive(tokenizer)` of a dataset's stored tokenizer, read and loaded once per dataset content
 * (a failed read is forgotten, so the next call tries again).
 * @example const eotOf = datasetTokenizerMemo((t) => t.eot); await eotOf(store, dataset)
 */
export function datasetTokenizerMemo<T>(derive: (t: Tokenizer) => T): (store: ArtifactStore, dataset: DatasetRef) => Promise<T> {
  const memo = new Map<string, Promise<T>>();
  return (store, dataset) => {
    let v = memo.get(dataset.contentHash);
    if (!v) {
      v = readTokenizer(store, dataset)
        .then((saved) => loadStoredTokenizer(store, saved))
        .then(derive);
      v.catch(() => memo.delete(dataset.contentHash));
      memo.set(dataset.contentHash, v);
    }
    return v;
  };
}
