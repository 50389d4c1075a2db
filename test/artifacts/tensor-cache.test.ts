// The process's tensor files by sha256 (artifacts/tensor-cache.ts): one load per sha256 however
// many ask at once, least recently used out first past the byte budget, a failed load forgotten.

import { TensorCache, type Tensors } from '../../artifacts/tensor-cache';

const tensors = (v: number): Tensors => new Map([['w', { dtype: 'float32', dims: [1], data: Float32Array.of(v) }]]);

test('concurrent readers of one sha256 share one load; later ones are hits', async () => {
  const cache = new TensorCache(1000);
  let loads = 0;
  const load = async () => {
    loads++;
    await new Promise((r) => setTimeout(r, 10));
    return tensors(1);
  };
  const [a, b] = await Promise.all([cache.get('s1', 100, load), cache.get('s1', 100, load)]);
  expect(a).toBe(b);
  expect(await cache.get('s1', 100, load)).toBe(a);
  expect(loads).toBe(1);
  expect(cache.stats()).toMatchObject({ hits: 2, misses: 1, bytesSaved: 200, entries: 1, bytes: 100 });
});

test('past the budget the least recently used entry goes; one larger than the budget is not kept', async () => {
  const cache = new TensorCache(250);
  cache.put('a', tensors(1), 100);
  cache.put('b', tensors(2), 100);
  await cache.get('a', 100, async () => tensors(9)); // a is now the most recently used
  cache.put('c', tensors(3), 100);
  expect([cache.has('a'), cache.has('b'), cache.has('c')]).toEqual([true, false, true]);
  expect(cache.stats().bytes).toBe(200);
  let loaded = 0;
  await cache.get('big', 300, async () => (loaded++, tensors(4)));
  expect(cache.has('big')).toBe(false);
  expect(loaded).toBe(1);
});

test('a failed load is forgotten, so the next reader tries again', async () => {
  const cache = new TensorCache(1000);
  await expect(cache.get('x', 10, async () => Promise.reject(new Error('S3 away')))).rejects.toThrow('S3 away');
  expect(cache.has('x')).toBe(false);
  expect((await cache.get('x', 10, async () => tensors(5))).get('w')!.data[0]).toBe(5);
});

test('a dropped entry is gone and its bytes no longer count', async () => {
  const cache = new TensorCache(1000);
  cache.put('a', tensors(1), 100);
  cache.put('b', tensors(2), 300);
  cache.drop('a');
  cache.drop('never-held');
  expect([cache.has('a'), cache.has('b')]).toEqual([false, true]);
  expect(cache.stats()).toMatchObject({ entries: 1, bytes: 300 });
  let loaded = 0;
  await cache.get('a', 100, async () => (loaded++, tensors(9)));
  expect(loaded).toBe(1);
});
