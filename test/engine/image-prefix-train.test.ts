// The image-prefix GPT in sharded training (engine/train/image-prefix.ts) and its dataset kind
// (image-captions, engine/data/corpus.ts + dataset.ts): bad lines are refused naming the line and
// the field, prepared shards carry each caption's features in an `.img` file in shard order,
// captions are framed [eot] caption, and the compiled step, on seeded data whose caption only the
// image tells (test/helpers/image-captions.ts), goes below the text-only floor.

import '../../engine/runtime/host-realm';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readImageCaptions } from '../../engine/data/corpus';
import { prepareDataset, shardTokens } from '../../engine/data/dataset';
import { ByteTokenizer } from '../../engine/data/tokenizer';
import { initParams } from '../../engine/models/blocks';
import { GptConfigSchema } from '../../engine/models/gpt';
import { ImagePrefixVariantSchema } from '../../engine/models/image-prefix';
import { OptimConfigSchema } from '../../engine/optim';
import { captionDocs, compileImagePrefixTrainStep, frameCaptions, imageCaptionBatch, ImagePrefixEvaluator } from '../../engine/train/image-prefix';
import { imageCaptionExamples, textOnlyFloor, writeImageCaptions } from '../helpers/image-captions';

const [P, D] = [2, 8];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'image-captions-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const corpus = (file: string) => ({ kind: 'image-captions' as const, path: file, featuresField: 'features', captionField: 'caption', imageTokens: P, imageDim: D });
async function firstError(lines: string[]): Promise<string> {
  const file = path.join(dir, `bad-${Math.random().toString(36).slice(2)}.jsonl`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  try {
    for await (const _ of readImageCaptions(corpus(file))) void _;
  } catch (e) {
    return (e as Error).message.replace(file, 'FILE');
  }
  throw new Error('read');
}

test('bad image-captions lines are refused naming the line and the field', async () => {
  const ok = JSON.stringify({ features: Array(P * D).fill(0.5), caption: 'cat.' });
  expect(await firstError([ok, JSON.stringify({ features: Array(P * D - 1).fill(0), caption: 'x' })])).toBe('FILE:2: field "features" holds 15 numbers; dataset.corpus asks for imageTokens 2 × imageDim 8 = 16');
  expect(await firstError([JSON.stringify({ features: [Array(D).fill(0), Array(D - 1).fill(0)], caption: 'x' })])).toBe('FILE:1: field "features" holds 2 vectors of 8/7 numbers; dataset.corpus asks for imageTokens 2 × imageDim 8');
  expect(await firstError([JSON.stringify({ features: [...Array(P * D - 1).fill(0), 'x'], caption: 'x' })])).toBe('FILE:1: field "features"[15] is "x", not a finite float32 number');
  expect(await firstError([JSON.stringify({ features: [...Array(P * D - 1).fill(0), 1e39], caption: 'x' })])).toBe('FILE:1: field "features"[15] is 1e+39, not a finite float32 number');
  expect(await firstError([JSON.stringify({ features: Array(P * D).fill(0) })])).toBe('FILE:1: field "caption" (the captionField) is missing, empty or not a string');
  expect(await firstError([JSON.stringify({ caption: 'x' })])).toBe('FILE:1: field "features" (the featuresField) is missing or not an array of numbers');
});

test('prepared shards carry each caption with its features, in shard order; batches frame [eot] caption', async () => {
  const examples = imageCaptionExamples(40, P, D, 3);
  const file = path.join(dir, 'small.jsonl');
  writeImageCaptions(file, examples, D);
  const out = path.join(dir, 'small');
  const m = await prepareDataset({ name: 'small', corpus: corpus(file), valFraction: 0.25 }, out);
  const tok = new ByteTokenizer();
  let seen = 0;
  for (const s of [...m.splits.train, ...m.splits.val]) {
    expect(s.images).toBe(s.file.replace('.bin', '.img'));
    const ids = shardTokens(fs.readFileSync(path.join(out, s.file)), m.dtype);
    const features = new Float32Array(new Uint8Array(fs.readFileSync(path.join(out, s.images!))).buffer);
    const docs = captionDocs(ids, new Uint32Array(new Uint8Array(fs.readFileSync(path.join(out, s.docs!))).buffer), features.length / (P * D), s.file);
    for (const d of docs) {
      // Each caption's features are the ones its line carried (float32 of the written numbers).
      const caption = tok.decode(ids.slice(d.start, d.start + d.length));
      const f = Array.from(features.subarray(d.image * P * D, (d.image + 1) * P * D));
      expect(examples.some((e) => e.caption === caption && e.features.every((v, i) => Math.fround(v) === f[i]))).toBe(true);
      seen++;
    }
    if (docs.length) {
      const b = frameCaptions(ids, features, docs.slice(0, 1), 8, tok.eot, { n_image_tokens: P, image_dim: D });
      const len = docs[0].length;
      const cap = Array.from(ids.slice(docs[0].start, docs[0].start + len));
      expect(Array.from(b.tokens.data as BigInt64Array, Number)).toEqual([tok.eot, ...cap, ...Array(7 - len).fill(tok.eot)]);
      expect(Array.from(b.targets.data as BigInt64Array, Number)).toEqual([...cap, tok.eot, ...Array(7 - len).fill(-100)]);
      expect(b.image_features.dims).toEqual([1, P, D]);
    }
  }
  expect(seen).toBe(40);
  // A spec whose dims differ from the lines is refused at the first line.
  await expect(prepareDataset({ name: 'small', corpus: { ...corpus(file), imageDim: 4 } }, path.join(dir, 'bad'))).rejects.toThrow(`${file}:1: field "features" holds 2 vectors of 8/8 numbers; dataset.corpus asks for imageTokens 2 × imageDim 4`);
});

test('the compiled step reads the image: the val caption loss falls below the text-only floor', async () => {
  const examples = imageCaptionExamples(400, P, D, 5);
  const file = path.join(dir, 'train.jsonl');
  writeImageCaptions(file, examples, D);
  const out = path.join(dir, 'train');
  const m = await prepareDataset({ name: 'caps', corpus: corpus(file), valFraction: 0.2 }, out);
  const tok = new ByteTokenizer();
  const load = (s: (typeof m.splits.train)[number]) => {
    const ids = shardTokens(fs.readFileSync(path.join(out, s.file)), m.dtype);
    const features = new Float32Array(new Uint8Array(fs.readFileSync(path.join(out, s.images!))).buffer);
    return { ids, features, docs: captionDocs(ids, new Uint32Array(new Uint8Array(fs.readFileSync(path.join(out, s.docs!))).buffer), features.length / (P * D), s.file) };
  };
  const train = load(m.splits.train[0]);
  const val = load(m.splits.val[0]);
  const floor = textOnlyFloor(val.docs.map((d) => tok.decode(val.ids.slice(d.start, d.start + d.length))), (c) => Buffer.byteLength(c));
  const gpt = GptConfigSchema.parse({ vocab_size: 259, block_size: 16, n_layer: 2, n_head: 2, n_embd: 32 });
  const image = ImagePrefixVariantSchema.parse({ kind: 'image-prefix', image_dim: D, n_image_tokens: P });
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0 } });
  const compiled = await compileImagePrefixTrainStep({ model: gpt, image, optim, batchSize: 16, contextLength: 8 }, { intraOpThreads: 1 });
  const runner = compiled.runner({ step: 0, params: Object.fromEntries(initParams(compiled.step.trainable, 1)), state: {} });
  const ev = new ImagePrefixEvaluator(gpt, image, 8, { intraOpThreads: 1 });
  const before = await ev.evaluate(new Map(Object.entries(runner.getParams())), [val], 16, tok.eot);
  for (let step = 0; step < 300; step++) await runner.run(imageCaptionBatch(train.ids, train.features, train.docs, { seed: 1, shard: 0, step, batchSize: 16, contextLength: 8 }, tok.eot, image));
  const after = await ev.evaluate(new Map(Object.entries(runner.getParams())), [val], 16, tok.eot);
  await ev.release();
  await compiled.session.release();
  console.log(`image prefix, seeded captions: val caption loss ${before.loss.toFixed(4)} → ${after.loss.toFixed(4)} over ${after.tokens} tokens of ${after.captions} captions; text-only floor ${floor.toFixed(4)}`);
  expect(after.captions).toBe(val.docs.length);
  // Seen, two runs (the split hashes each line's source, which names the temporary file): 5.5330 →
  // 0.0169 nats per caption token (561 tokens, 91 captions) against a floor of 0.3346; 5.5408 →
  // 0.0096 (432 tokens, 72 captions) against 0.3357.
  expect(after.loss).toBeLessThan(0.5 * floor);
}, 180_000);

test('K steps per session.run (stepsPerRun) equal K single steps bit for bit for the image-prefix step (image_features input)', async () => {
  const ex = imageCaptionExamples(12, P, D, 9);
  const tok = new ByteTokenizer();
  const ids: number[] = [];
  const docs = ex.map((e, i) => {
    const start = ids.length;
    ids.push(...tok.encode(e.caption), tok.eot);
    return { start, length: ids.length - start - 1, image: i };
  });
  const features = Float32Array.from(ex.flatMap((e) => e.features));
  const gpt = GptConfigSchema.parse({ vocab_size: 259, block_size: 16, n_layer: 1, n_head: 2, n_embd: 16 });
  const image = ImagePrefixVariantSchema.parse({ kind: 'image-prefix', image_dim: D, n_image_tokens: P });
  const optim = OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-2, weight_decay: 0 } });
  const setup = { model: gpt, image, optim, batchSize: 4, contextLength: 8 };
  const [one, three] = await Promise.all([compileImagePrefixTrainStep(setup, { intraOpThreads: 1 }), compileImagePrefixTrainStep({ ...setup, stepsPerRun: 3 }, { intraOpThreads: 1 })]);
  const init = { step: 0, params: Object.fromEntries(initParams(one.step.trainable, 3)), state: {} };
  const a = one.runner(init);
  const b = three.runner(init);
  const feeds = (step: number) => imageCaptionBatch(ids, features, docs, { seed: 2, shard: 0, step, batchSize: 4, contextLength: 8 }, tok.eot, image);
  const single = [];
  for (let s = 0; s < 5; s++) single.push((await a.run(feeds(s))).loss);
  const many = [...(await b.runSteps([0, 1, 2].map(feeds))), ...(await b.runSteps([3, 4].map(feeds)))].map((r) => r.loss);
  expect(many).toEqual(single);
  const pa = a.getParams();
  const pb = b.getParams();
  for (const k of Object.keys(pa)) expect(Buffer.from(pb[k].buffer).equals(Buffer.from(pa[k].buffer))).toBe(true);
  await Promise.all([one.session.release(), three.session.release()]);
});
