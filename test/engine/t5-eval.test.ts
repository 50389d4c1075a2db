// Seq2seq data and evaluation for T5 on the tiny fixture (test/fixtures/t5-tiny): the input/target
// JSONL format and its errors, tokenization with the fixture's tokenizer.json (ids equal Python
// `tokenizers`'), perplexity over every target token (HF's loss on the same batch), exact match of
// greedy generation, and int8 quantization of the cached encoder/decoder pair and the cache-free
// graph (they still generate; the perplexity change is measured).

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeSeq2seqShard, encodeSeq2seqShard, readSeq2seqJsonl, sampleSeq2seqBatch, seq2seqEvalBatches, seq2seqLengths, splitSeq2seq, tokenizeSeq2seq, type Seq2seqExample } from '../../engine/data/seq2seq';
import { seq2seqBatch, t5SpanOptions } from '../../engine/data/t5-span';
import { HfTokenizer } from '../../engine/data/tokenizer';
import { T5Generator } from '../../engine/eval';
import { seq2seqExactMatch, seq2seqPerplexity } from '../../engine/eval/seq2seq';
import { readHfFolder } from '../../engine/hf';
import { exportT5 } from '../../engine/models/export-bert-t5';
import { exportT5DecoderStep, exportT5Encoder, t5DecodeInfo } from '../../engine/models/export-t5-cached';
import type { T5Config } from '../../engine/models/t5';
import { quantizeGraph } from '../../engine/quant';

const FIX = path.join(__dirname, '..', 'fixtures', 't5-tiny');
const threads = { intraOpThreads: 1 };
const hf = readHfFolder(path.join(FIX, 'model'));
const cfg = hf.config as T5Config;
const tokJson = fs.readFileSync(path.join(FIX, 'model', 'tokenizer.json'), 'utf8');
const tok = HfTokenizer.fromJson(tokJson, { key: 'models/t5-tiny/tokenizer.json', sha256: '0'.repeat(64) });
const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'model', 'golden.json'), 'utf8')) as { sample: string; ids: number[]; extra_id_0: number; vocab_size: number };
const grad = JSON.parse(fs.readFileSync(path.join(FIX, 'grad_golden.json'), 'utf8')) as { input_ids: number[][]; attention_mask: number[][]; labels: number[][]; loss: number };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 't5-eval-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function collect(it: AsyncIterable<Seq2seqExample>): Promise<Seq2seqExample[]> {
  const out: Seq2seqExample[] = [];
  for await (const x of it) out.push(x);
  return out;
}
const write = (name: string, text: string) => {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, text);
  return p;
};

describe('seq2seq JSONL and tokenization', () => {
  test('the fixture tokenizer: Python’s ids, </s> as end of text, <extra_id_0> as the last id', async () => {
    expect(await tok.encode(golden.sample)).toEqual(golden.ids);
    expect(tok.eot).toBe(1);
    expect(tok.tokenId('<extra_id_0>')).toBe(golden.extra_id_0);
    expect(golden.extra_id_0).toBe(cfg.vocab_size - 1);
    expect(tok.tokenId('<extra_id_7>')).toBe(cfg.vocab_size - 8);
    expect(tok.tokenId('not-a-token')).toBeNull();
    expect(t5SpanOptions(tok, 40, 'tiny')).toEqual({ sentinelStart: cfg.vocab_size - 1, eosId: 1 });
    // 200 tokens need round(30 / 3) = 10 sentinels; the fixture has 8.
    expect(() => t5SpanOptions(tok, 200, 'models/t5-tiny/tokenizer.json')).toThrow('models/t5-tiny/tokenizer.json: <extra_id_8> is missing, expected 148 (rows of 200 tokens need 10 sentinels counting down from <extra_id_0>)');
    const gpt2 = HfTokenizer.fromJson(fs.readFileSync(path.join(__dirname, '..', 'fixtures', 'hf-io', 'gpt2', 'tokenizer.json'), 'utf8'), { key: 'gpt2/tokenizer.json', sha256: '0'.repeat(64) });
    expect(() => t5SpanOptions(gpt2, 40, 'gpt2/tokenizer.json')).toThrow('gpt2/tokenizer.json: has no <extra_id_0> sentinel token; span corruption needs a T5 tokenizer');
  });

  test('reads input/target lines (other keys ignored) and tokenizes them with EOS on both sides', async () => {
    const examples = await collect(readSeq2seqJsonl(path.join(FIX, 'opposites.jsonl')));
    expect(examples).toHaveLength(32);
    expect(examples[0]).toEqual({ source: `${path.join(FIX, 'opposites.jsonl')}:1`, input: 'opposite of hot:', target: 'cold' });
    const pairs = await tokenizeSeq2seq(examples, tok, { eosId: 1, maxSourceLength: 16, maxTargetLength: 4 });
    expect(pairs[0].inputs).toEqual([...(await tok.encode('opposite of hot:')), 1]);
    expect(pairs[0].targets).toEqual([...(await tok.encode('cold')), 1]);
    expect(pairs.every((p) => p.targets.length === 2)).toBe(true); // every answer is one word piece + </s>
    expect(seq2seqLengths(pairs)).toEqual({ srcLen: Math.max(...pairs.map((p) => p.inputs.length)), tgtLen: 2 });
    // Custom field names.
    const other = write('qa.jsonl', '{"q": "yes", "a": "no"}\n\n{"q": "up", "a": ""}\n');
    expect(await collect(readSeq2seqJsonl(other, { inputField: 'q', targetField: 'a' }))).toEqual([
      { source: `${other}:1`, input: 'yes', target: 'no' },
      { source: `${other}:3`, input: 'up', target: '' },
    ]);
  });

  test('bad lines are errors naming the file and line', async () => {
    const cases: [string, RegExp][] = [
      ['{"input": "a", "target": "b"}\n{"input": "a"\n', /bad\.jsonl:2: is not valid JSON/],
      ['{"input": "a", "target": "b"}\n["a", "b"]\n', /bad\.jsonl:2: is not a JSON object with "input" and "target"/],
      ['{"input": "a"}\n', /bad\.jsonl:1: field "target" is missing/],
      ['{"input": "a", "target": 3}\n', /bad\.jsonl:1: field "target" is number, not a string/],
      ['{"input": null, "target": "b"}\n', /bad\.jsonl:1: field "input" is null, not a string/],
      ['\n{"input": "  ", "target": "b"}\n', /bad\.jsonl:2: field "input" is empty/],
      ['\n\n', /bad\.jsonl: has no examples/],
    ];
    for (const [text, err] of cases) await expect(collect(readSeq2seqJsonl(write('bad.jsonl', text)))).rejects.toThrow(err);
    await expect(collect(readSeq2seqJsonl(path.join(tmp, 'missing.jsonl')))).rejects.toThrow(/missing\.jsonl: does not exist/);
    const long = write('long.jsonl', '{"input": "opposite of hot: big small big small", "target": "cold"}\n');
    await expect(tokenizeSeq2seq(readSeq2seqJsonl(long), tok, { eosId: 1, maxSourceLength: 4, maxTargetLength: 4 })).rejects.toThrow(/long\.jsonl:1: the input is 9 tokens with EOS, more than maxSourceLength 4/);
    const cut = await tokenizeSeq2seq(readSeq2seqJsonl(long), tok, { eosId: 1, maxSourceLength: 4, maxTargetLength: 4, overflow: 'truncate' });
    expect(cut[0].inputs).toEqual([...(await tok.encode('opposite of hot:')).slice(0, 3), 1]);
    await expect(tokenizeSeq2seq([], tok, { eosId: 1, maxSourceLength: 16, maxTargetLength: 1 })).rejects.toThrow('seq2seq tokenization: maxTargetLength must be an integer of at least 2 (a token and EOS), got 1');
  });

  test('training batches are a pure function of (seed, shard, step); eval batches cover every example once', async () => {
    const pairs = await tokenizeSeq2seq(readSeq2seqJsonl(path.join(FIX, 'opposites.jsonl')), tok, { eosId: 1, maxSourceLength: 16, maxTargetLength: 4 });
    const { srcLen, tgtLen } = seq2seqLengths(pairs);
    const a = sampleSeq2seqBatch(pairs, { seed: 1, shard: 0, step: 5, batchSize: 4 }, cfg, srcLen, tgtLen);
    expect(sampleSeq2seqBatch(pairs, { seed: 1, shard: 0, step: 5, batchSize: 4 }, cfg, srcLen, tgtLen)).toEqual(a);
    expect(sampleSeq2seqBatch(pairs, { seed: 1, shard: 0, step: 6, batchSize: 4 }, cfg, srcLen, tgtLen).input_ids.data).not.toEqual(a.input_ids.data);
    const evalBatches = [...seq2seqEvalBatches(pairs, 5, cfg, srcLen, tgtLen)];
    expect(evalBatches.map((b) => b.labels.dims[0])).toEqual([5, 5, 5, 5, 5, 5, 2]);
  });
});

describe('seq2seq perplexity and exact match', () => {
  const pairsOf = (rows: number[][], labels: number[][], mask: number[][]) =>
    rows.map((r, b) => ({ inputs: r.filter((_, i) => mask[b][i] === 1), targets: labels[b].filter((l) => l !== -100) }));

  test('perplexity is HF’s loss on the same padded batch, token-weighted whatever the batching', async () => {
    const pairs = pairsOf(grad.input_ids, grad.labels, grad.attention_mask);
    const graph = exportT5(cfg, hf.weights);
    const whole = await seq2seqPerplexity(graph, [seq2seqBatch(pairs, cfg, 8, 5)], threads);
    expect(whole.tokens).toBe(7);
    expect(whole.examples).toBe(2);
    expect(Math.abs(whole.nll - grad.loss)).toBeLessThan(3e-6); // observed 3.5e-7 (float32 vs HF float64)
    const split = await seq2seqPerplexity(graph, seq2seqEvalBatches(pairs, 1, cfg, 8, 5), threads);
    expect(split.batches).toBe(2);
    expect(Math.abs(split.nll - whole.nll)).toBeLessThan(1e-6); // observed 0
    expect(split.ppl).toBeCloseTo(Math.exp(split.nll), 10);
  });

  test('exact match counts generations equal to the target ids, EOS included', async () => {
    const gen = await T5Generator.create(cfg, hf.weights, { session: threads });
    const sources = [[12, 40, 13, 1], [12, 44, 13, 1], [20, 21, 1]];
    const produced = await Promise.all(sources.map((s) => gen.generate(s, { maxNewTokens: 3, stopToken: 1 })));
    // Targets: the first two are what the model generates, the third is not.
    const pairs = [
      { inputs: sources[0], targets: produced[0] },
      { inputs: sources[1], targets: produced[1] },
      { inputs: sources[2], targets: [...produced[2].slice(0, -1), (produced[2].at(-1)! + 1) % cfg.vocab_size] },
    ];
    const em = await seq2seqExactMatch(gen, pairs, { eosId: 1, maxNewTokens: 3 });
    await gen.release();
    expect(em).toEqual({ exactMatch: 2 / 3, matched: 2, examples: 3, predictions: produced });
  });
});

describe('int8 quantization of T5', () => {
  test('the cached encoder/decoder and the cache-free graph quantize, still generate, and the perplexity change is small', async () => {
    const pairs = await tokenizeSeq2seq(readSeq2seqJsonl(path.join(FIX, 'opposites.jsonl')), tok, { eosId: 1, maxSourceLength: 16, maxTargetLength: 4 });
    const { srcLen, tgtLen } = seq2seqLengths(pairs);
    const q = { method: 'int8-dynamic' as const };
    const enc = await quantizeGraph(exportT5Encoder(cfg, hf.weights), q);
    const dec = await quantizeGraph(exportT5DecoderStep(cfg, hf.weights), q);
    // Encoder: q k v o wi wo per layer; decoder: + cross q and o (cross k, v are in the encoder graph); shared stays float.
    expect(enc.report.quantized).toHaveLength(2 * 6 + 2 * 2);
    expect(dec.report.quantized).toHaveLength(2 * (4 + 2 + 2));
    expect([...enc.report.quantized, ...dec.report.quantized].some((n) => n.weight.startsWith('shared'))).toBe(false);
    const gen = await T5Generator.load({ encoder: enc.graph, decoder: dec.graph }, t5DecodeInfo(cfg), threads);
    const fp32 = await T5Generator.create(cfg, hf.weights, { session: threads });
    let same = 0;
    for (const p of pairs) {
      const a = await gen.generate(p.inputs, { maxNewTokens: 4, stopToken: 1 });
      const b = await fp32.generate(p.inputs, { maxNewTokens: 4, stopToken: 1 });
      expect(a.length).toBeGreaterThan(0);
      expect(a.every((t) => t >= 0 && t < cfg.vocab_size)).toBe(true);
      if (a.join() === b.join()) same++;
    }
    await gen.release();
    await fp32.release();
    expect(same).toBeGreaterThanOrEqual(pairs.length - 3); // observed 32 of 32 greedy outputs unchanged

    const full = exportT5(cfg, hf.weights);
    const qFull = await quantizeGraph(full, q);
    const base = await seq2seqPerplexity(full, seq2seqEvalBatches(pairs, 8, cfg, srcLen, tgtLen), threads);
    const quant = await seq2seqPerplexity(qFull.graph, seq2seqEvalBatches(pairs, 8, cfg, srcLen, tgtLen), threads);
    expect(quant.tokens).toBe(base.tokens);
    const rise = (quant.ppl - base.ppl) / base.ppl;
    // Observed on the random fixture: ppl 203.627 → 203.534 (−0.046%), weights 187 124 → 68 852 bytes.
    expect(Math.abs(rise)).toBeLessThan(0.005);
  });
});

describe('seq2seq splits and shards', () => {
  const pairs = Array.from({ length: 200 }, (_, i) => ({ inputs: [10 + (i % 50), 20 + Math.floor(i / 50), 1], targets: [30 + (i % 7), 1] }));

  test('the split is a function of each example, not of the order; about valFraction of them validate', () => {
    const a = splitSeq2seq(pairs, 0.1, 3);
    expect(a.train.length + a.val.length).toBe(200);
    expect(a.val.length).toBeGreaterThan(10); // observed 16 of 200
    expect(a.val.length).toBeLessThan(32);
    const b = splitSeq2seq([...pairs].reverse(), 0.1, 3);
    const key = (p: { inputs: number[]; targets: number[] }) => `${p.inputs.join()}|${p.targets.join()}`;
    expect(new Set(b.val.map(key))).toEqual(new Set(a.val.map(key)));
    expect(splitSeq2seq(pairs, 0.1, 4).val.map(key)).not.toEqual(a.val.map(key));
    // Two examples still give one to each side; valFraction 0 keeps them all for training.
    const two = splitSeq2seq(pairs.slice(0, 2), 0.01);
    expect([two.train.length, two.val.length]).toEqual([1, 1]);
    expect(splitSeq2seq(pairs, 0).val).toHaveLength(0);
    expect(() => splitSeq2seq(pairs, 1)).toThrow('seq2seq split: valFraction must be in [0, 1), got 1');
  });

  test('a shard round-trips, and a truncated or foreign file is refused naming it', () => {
    const bytes = encodeSeq2seqShard(pairs);
    expect(bytes.byteLength).toBe(4 * (2 + 200 * (2 + 3 + 2)));
    expect(decodeSeq2seqShard(bytes, 'train.s2s')).toEqual(pairs);
    expect(() => decodeSeq2seqShard(bytes.subarray(0, bytes.byteLength - 4), 'train.s2s')).toThrow('train.s2s: not a seq2seq shard (ends inside example 199)');
    expect(() => decodeSeq2seqShard(Buffer.from('not a shard!'), 'x.s2s')).toThrow('x.s2s: not a seq2seq shard (wrong magic number)');
    expect(() => decodeSeq2seqShard(Buffer.concat([bytes, Buffer.alloc(4)]), 'train.s2s')).toThrow('train.s2s: not a seq2seq shard (1 words after the last example)');
  });
});
