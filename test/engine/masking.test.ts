import { mlmMask, IGNORE_INDEX } from '../../engine/data/masking';
import { spanCorrupt } from '../../engine/data/t5-span';

describe('MLM masking', () => {
  const tokens = BigInt64Array.from({ length: 4000 }, (_, i) => BigInt(5 + (i % 50)));
  const opts = { maskId: 3, vocabSize: 100, specialIds: [0, 1, 2] };

  test('selects ~15% of positions, 80/10/10 mask/random/keep, labels only there', () => {
    const { inputIds, labels } = mlmMask(tokens, { seed: 1, shard: 0, step: 0 }, opts);
    let selected = 0;
    let masked = 0;
    let kept = 0;
    for (let i = 0; i < tokens.length; i++) {
      if (labels[i] === BigInt(IGNORE_INDEX)) {
        expect(inputIds[i]).toBe(tokens[i]);
        continue;
      }
      selected++;
      expect(labels[i]).toBe(tokens[i]);
      if (inputIds[i] === 3n) masked++;
      else if (inputIds[i] === tokens[i]) kept++;
    }
    expect(selected / tokens.length).toBeGreaterThan(0.13);
    expect(selected / tokens.length).toBeLessThan(0.17);
    expect(masked / selected).toBeGreaterThan(0.75);
    expect(masked / selected).toBeLessThan(0.85);
    expect(kept / selected).toBeGreaterThan(0.06); // 10% kept, plus random draws that hit the same id
    expect(kept / selected).toBeLessThan(0.15);
  });

  test('is a pure function of (seed, shard, step) and never masks special ids', () => {
    const a = mlmMask(tokens, { seed: 1, shard: 2, step: 9 }, opts);
    expect(mlmMask(tokens, { seed: 1, shard: 2, step: 9 }, opts)).toEqual(a);
    expect(mlmMask(tokens, { seed: 1, shard: 2, step: 10 }, opts).labels).not.toEqual(a.labels);
    const specials = BigInt64Array.from({ length: 500 }, (_, i) => BigInt(i % 3));
    const s = mlmMask(specials, { seed: 0, shard: 0, step: 0 }, opts);
    expect(s.labels.every((l) => l === BigInt(IGNORE_INDEX))).toBe(true);
  });
});

describe('T5 span corruption', () => {
  test('inputs keep the text with one sentinel per span; targets restore exactly the dropped tokens', () => {
    const ids = Array.from({ length: 100 }, (_, i) => 10 + i);
    const opts = { sentinelStart: 999, eosId: 1 };
    const { inputs, targets } = spanCorrupt(ids, { seed: 4, shard: 0, step: 3, row: 0 }, opts);
    const sentinels = inputs.filter((t) => t > 900);
    expect(sentinels.length).toBe(5); // round(15 / 3) spans
    expect(sentinels).toEqual([999, 998, 997, 996, 995]);
    expect(targets.filter((t) => t < 900 && t !== 1).length).toBe(15); // 15% noise
    // Re-inserting each target span at its sentinel rebuilds the original sequence.
    const spans = new Map<number, number[]>();
    let cur = -1;
    for (const t of targets.slice(0, -1)) {
      if (t > 900) spans.set((cur = t), []);
      else spans.get(cur)!.push(t);
    }
    const rebuilt = inputs.slice(0, -1).flatMap((t) => (t > 900 ? spans.get(t)! : [t]));
    expect(rebuilt).toEqual(ids);
    expect(inputs.at(-1)).toBe(1);
    expect(spanCorrupt(ids, { seed: 4, shard: 0, step: 3, row: 0 }, opts)).toEqual({ inputs, targets });
  });
});
