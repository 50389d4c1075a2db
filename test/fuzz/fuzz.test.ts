// The bad-input corpus (issue 15) at CI size: `npm run fuzz` runs the same cases at any N; the
// recorded N ≥ 500 runs are in bench/RESULTS.md. Every case is bad by construction, so each must
// end as a clear error: no crash, no hang, nothing accepted.

import { fuzzCase } from './corpus';
import { runFuzz } from './main';

test('the corpus is a pure function of (seed, i) and covers every kind', () => {
  const a = Array.from({ length: 200 }, (_, i) => fuzzCase(7, i));
  const b = Array.from({ length: 200 }, (_, i) => fuzzCase(7, i));
  expect(a.map((c) => c.name)).toEqual(b.map((c) => c.name));
  expect(new Set(a.map((c) => c.kind))).toEqual(new Set(['spec', 'cli', 'safetensors', 'onnx', 'key']));
});

test('150 bad inputs: every one a clear error naming what it refused', async () => {
  const s = await runFuzz(150, 3);
  const unclear = s.results.filter((r) => r.outcome !== 'clear').map((r) => `#${r.i} ${r.kind} ${r.outcome}: ${r.name}: ${r.message}`);
  expect(unclear).toEqual([]);
  expect(s.line).toBe('150 bad inputs: 150 clear errors, 0 crashes, 0 hangs, 0 accepted');
}, 600_000);
