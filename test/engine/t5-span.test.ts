// T5 span corruption (engine/data/t5-span.ts): the same masks, inputs and targets as a numpy port of
// T5's random_spans_noise_mask + noise_span_to_unique_sentinel when fed the same shuffles
// (test/fixtures/t5-tiny/make_t5_tiny.py), the reference's counts at every length 2..1024, the
// statistics of our own seeded draws, exact output on a small fixed input, and the batch feeds.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { applyNoiseMask, noiseCounts, randomSpansNoiseMask, seq2seqBatch, spanCorrupt, spanCorruptionBatch, spanCorruptionLengths, type SegmentShuffle } from '../../engine/data/t5-span';

interface Reference {
  sentinel_start: number;
  eos: number;
  cases: { length: number; noise_density: number; mean_span_length: number; noise_flags: boolean[]; nonnoise_flags: boolean[]; mask: boolean[]; inputs: number[]; targets: number[] }[];
  counts: [number, number, number][];
  numpy_float64_differs_at: number[];
}
const ref = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 't5-tiny', 'span_reference.json'), 'utf8')) as Reference;
const opts = { sentinelStart: 999, eosId: 1 };
const key = { seed: 4, shard: 0, step: 3, row: 0 };

describe('T5 span corruption against the reference port', () => {
  test('given the reference’s shuffles, every mask, input and target is the reference’s', () => {
    expect(ref.cases.length).toBe(33);
    for (const c of ref.cases) {
      const shuffle: SegmentShuffle = (items, segments, which) => {
        const flags = which === 'noise' ? c.noise_flags : c.nonnoise_flags;
        expect(flags.length).toBe(items - 1);
        expect(flags.filter((f) => f).length).toBe(segments - 1);
        return flags;
      };
      const mask = randomSpansNoiseMask(c.length, shuffle, c.noise_density, c.mean_span_length);
      expect(mask).toEqual(c.mask);
      const ids = Array.from({ length: c.length }, (_, i) => 10 + i);
      expect(applyNoiseMask(ids, mask, ref.sentinel_start, ref.eos)).toEqual({ inputs: c.inputs, targets: c.targets });
    }
  });

  test('noise tokens and spans equal tf’s float32 counts at every length 2..1024 (HF’s float64 copy differs at 8 of them)', () => {
    for (const [L, noise, spans] of ref.counts) expect(noiseCounts(L)).toEqual({ noiseTokens: noise, noiseSpans: spans });
    expect(ref.numpy_float64_differs_at).toContain(190);
    expect(noiseCounts(190)).toEqual({ noiseTokens: 29, noiseSpans: 10 }); // 190·0.15 = 28.5000011 in float32
    expect(noiseCounts(30)).toEqual({ noiseTokens: 4, noiseSpans: 1 }); // 4.5 rounds half to even
  });
});

describe('T5 span corruption, our seeded draws', () => {
  test('exact output on a fixed input, and a pure function of (seed, shard, step, row)', () => {
    const ids = Array.from({ length: 20 }, (_, i) => 10 + i);
    const dense = { ...opts, noiseDensity: 0.3, meanSpanLength: 2 };
    const out = spanCorrupt(ids, key, dense);
    // 20 tokens at density 0.3: 6 noise tokens in round(3) = 3 spans, kept text first, a noise span last.
    expect(out).toEqual({ inputs: [10, 11, 12, 13, 14, 999, 16, 17, 18, 19, 20, 21, 998, 26, 27, 28, 997, 1], targets: [999, 15, 998, 22, 23, 24, 25, 997, 29, 1] });
    expect(spanCorrupt(ids, key, dense)).toEqual(out);
    expect(spanCorrupt(ids, { ...key, row: 1 }, dense)).not.toEqual(out);
    // At T5's density a 20-token row has one span of round(3.0) = 3 tokens, so it always drops the tail.
    expect(spanCorrupt(ids, key, opts)).toEqual({ inputs: [...ids.slice(0, 17), 999, 1], targets: [999, 27, 28, 29, 1] });
  });

  test('statistics over 2000 rows of 100: 15 noise tokens in 5 spans each, span lengths average 3, every start position reachable', () => {
    const ids = Array.from({ length: 100 }, (_, i) => 10 + i);
    let spanTokens = 0;
    let spans = 0;
    let firstSpanLen1 = 0;
    const noisyAt = new Array<number>(100).fill(0);
    for (let row = 0; row < 2000; row++) {
      const { inputs, targets } = spanCorrupt(ids, { ...key, row }, opts);
      expect(targets.filter((t) => t < 900 && t !== 1).length).toBe(15);
      const sentinels = inputs.filter((t) => t > 900);
      expect(sentinels).toEqual([999, 998, 997, 996, 995]);
      expect(inputs.length).toBe(spanCorruptionLengths(100).inputs);
      expect(targets.length).toBe(spanCorruptionLengths(100).targets);
      expect(inputs[0]).toBe(10); // a row always begins with kept text
      // Lengths of each target span, and which positions were dropped.
      let cur = 0;
      for (const t of targets.slice(1)) {
        if (t > 900 || t === 1) {
          if (spans % 5 === 0 && cur === 1) firstSpanLen1++;
          spanTokens += cur;
          spans++;
          cur = 0;
        } else {
          cur++;
          noisyAt[t - 10]++;
        }
      }
    }
    expect(spanTokens / spans).toBe(3); // 15 tokens / 5 spans in every row
    // A random composition of 15 into 5 positive parts: P(first part = 1) = C(13,3)/C(14,4) = 2/7.
    expect(firstSpanLen1 / 2000).toBeGreaterThan(0.25); // observed 0.2795 (2/7 = 0.2857)
    expect(firstSpanLen1 / 2000).toBeLessThan(0.32);
    expect(noisyAt[0]).toBe(0);
    expect(noisyAt.slice(1).every((n) => n > 0)).toBe(true);
    const mean = noisyAt.reduce((a, b) => a + b, 0) / 100;
    expect(mean).toBeCloseTo(0.15 * 2000, 6);
  });

  test('a batch: equal rows need no padding; decoder inputs are the labels shifted behind the start id', () => {
    const B = 3;
    const L = 12;
    const rows = Array.from({ length: B * L }, (_, i) => 10 + i);
    const cfg = { pad_token_id: 0, decoder_start_token_id: 0 };
    const batch = spanCorruptionBatch(rows, B, L, { seed: 1, shard: 2, step: 3 }, opts, cfg);
    const lens = spanCorruptionLengths(L); // 12·0.15 = 1.8 → 2 noise tokens, 1 span
    expect(lens).toEqual({ inputs: 12, targets: 4 });
    expect(batch.input_ids.dims).toEqual([B, 12]);
    expect(batch.labels.dims).toEqual([B, 4]);
    expect(Array.from(batch.attention_mask.data as BigInt64Array).every((m) => m === 1n)).toBe(true);
    const labels = Array.from(batch.labels.data as BigInt64Array, Number);
    const dec = Array.from(batch.decoder_input_ids.data as BigInt64Array, Number);
    for (let b = 0; b < B; b++) {
      const row = rows.slice(b * L, (b + 1) * L);
      const want = spanCorrupt(row, { seed: 1, shard: 2, step: 3, row: b }, opts);
      expect(Array.from(batch.input_ids.data as BigInt64Array, Number).slice(b * 12, (b + 1) * 12)).toEqual(want.inputs);
      expect(labels.slice(b * 4, (b + 1) * 4)).toEqual(want.targets);
      expect(dec.slice(b * 4, (b + 1) * 4)).toEqual([0, ...want.targets.slice(0, 3)]);
    }
  });

  test('seq2seqBatch pads inputs with pad/mask 0 and labels with -100, and names an over-long example', () => {
    const b = seq2seqBatch([{ inputs: [5, 6], targets: [7, 1] }, { inputs: [8, 9, 10], targets: [1] }], { pad_token_id: 0, decoder_start_token_id: 0 }, 4, 3);
    expect(Array.from(b.input_ids.data as BigInt64Array, Number)).toEqual([5, 6, 0, 0, 8, 9, 10, 0]);
    expect(Array.from(b.attention_mask.data as BigInt64Array, Number)).toEqual([1, 1, 0, 0, 1, 1, 1, 0]);
    expect(Array.from(b.labels.data as BigInt64Array, Number)).toEqual([7, 1, -100, 1, -100, -100]);
    expect(Array.from(b.decoder_input_ids.data as BigInt64Array, Number)).toEqual([0, 7, 1, 0, 1, 0]);
    expect(() => seq2seqBatch([{ inputs: [1, 2, 3, 4, 5], targets: [1] }], { pad_token_id: 0, decoder_start_token_id: 0 }, 4, 3, 'data.jsonl')).toThrow('data.jsonl: example 0 has 5 input tokens, more than the 4 of the batch');
  });
});
