// Caches of promises that activities keep across calls in one worker process.

/**
 * The promise cached under `key`, or `make()`'s, kept until it rejects (so the next call retries);
 * past `limit` entries the oldest goes. Compiled sessions and loaded bases are cached this way.
 */
export function cachedPromise<T>(cache: Map<string, Promise<T>>, key: string, limit: number, make: () => Promise<T>): Promise<T> {
  let p = cache.get(key);
  if (!p) {
    p = make();
    p.catch(() => cache.delete(key));
    if (cache.size >= limit) cache.delete(cache.keys().next().value!);
    cache.set(key, p);
  }
  return p;
}
