// Streaming a safetensors file tensor by tensor (forEachSafetensor) and folding a worker into the
// outer step tensor by tensor (OuterAggregator.worker): what the aggregator uses so that it never
// holds a whole shard (issue 14). Both must give exactly what the whole-file paths give.

import { forEachSafetensor, readSafetensors, SafetensorsError, writeSafetensors } from '../../engine/checkpoint/safetensors';
import type { TensorData } from '../../engine/graph/ir';
import { OuterAggregator, outerStep, type Weights } from '../../engine/train/outer';

const FILE = 'shard-1/model.safetensors';

async function* chunked(buf: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, Math.min(i + size, buf.length));
}

async function collect(buf: Uint8Array, size: number, fileBytes = buf.length): Promise<[string, TensorData][]> {
  const out: [string, TensorData][] = [];
  await forEachSafetensor(chunked(buf, size), fileBytes, FILE, (name, t) => {
    out.push([name, t]);
  });
  return out;
}

const sample = (): Map<string, TensorData> =>
  new Map<string, TensorData>([
    ['wte', { dtype: 'float32', dims: [5, 3], data: Float32Array.from({ length: 15 }, (_, i) => i / 7 - 1) }],
    ['empty', { dtype: 'float32', dims: [0, 4], data: new Float32Array(0) }],
    ['ids', { dtype: 'int64', dims: [3], data: BigInt64Array.from([1n, -2n, 3n]) }],
    ['h.0.ln_1.bias', { dtype: 'float16', dims: [2], data: Uint16Array.from([0x3c00, 0xbc00]) }],
  ]);

describe('forEachSafetensor', () => {
  test('gives every tensor readSafetensors gives, in any chunking (1 byte, 7 bytes, whole file)', async () => {
    const buf = writeSafetensors(sample(), { step: '3' });
    const whole = readSafetensors(buf, FILE).tensors;
    for (const size of [1, 7, buf.length]) {
      const got = await collect(buf, size);
      expect(got.map(([n]) => n).sort()).toEqual([...whole.keys()].sort());
      for (const [name, t] of got) {
        const want = whole.get(name)!;
        expect([t.dtype, t.dims]).toEqual([want.dtype, want.dims]);
        expect(t.data).toEqual(want.data);
        // Each tensor owns its aligned buffer (kept by a caller without pinning the stream's chunks).
        expect(t.data.byteOffset).toBe(0);
        expect(t.data.buffer.byteLength).toBe(t.data.byteLength);
      }
    }
  });

  test('a stream that ends early or runs long, and a bad header, are refused naming the file', async () => {
    const buf = writeSafetensors(sample());
    await expect(collect(buf.subarray(0, buf.length - 3), 7, buf.length)).rejects.toThrow(`${FILE}: truncated: the stream ended after ${buf.length - 3} of ${buf.length} bytes`);
    await expect(collect(Buffer.concat([buf, Buffer.from([0])]), 7, buf.length + 1)).rejects.toThrow(`${FILE}: 1 bytes after the last tensor's data belong to no tensor`);
    await expect(collect(Buffer.concat([buf, Buffer.from([0])]), 7, buf.length)).rejects.toThrow(`${FILE}: more than the ${buf.length} bytes expected`);
    const bad = Buffer.from(buf);
    bad[8] = 0x5b; // '[': the header is no longer a JSON object
    await expect(collect(bad, 64)).rejects.toThrow(SafetensorsError);
    await expect(collect(buf.subarray(0, 5), 7, buf.length)).rejects.toThrow(`${FILE}: truncated`);
  });
});

describe('OuterAggregator.worker (a worker folded tensor by tensor)', () => {
  const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i * 12.9898) * 0.1);
  const names = ['wte', 'h.0.attn.c_attn.weight', 'ln_f.bias'];
  const model = (seed: number): Weights => new Map(names.map((n, k) => [n, rand(37 * (k + 1), seed + k)]));

  test('is bit-identical to add() and outerStep, whatever order the tensors come in', () => {
    const global = model(1);
    const locals = [model(2), model(3), model(4)];
    const cfg = { kind: 'nesterov' as const, lr: 0.7, momentum: 0.9 };
    const momentum = model(5);
    const want = outerStep(global, locals, cfg, momentum);
    const agg = new OuterAggregator(global);
    for (const [k, local] of locals.entries()) {
      const w = agg.worker(`shard ${k}`);
      for (const name of k % 2 ? [...names].reverse() : names) w.add(name, local.get(name)!);
      w.end();
    }
    const got = agg.apply(cfg, momentum);
    expect(got.pseudoGradNorm).toBe(want.pseudoGradNorm);
    for (const name of names) {
      expect(Buffer.from(got.weights.get(name)!.buffer).equals(Buffer.from(want.weights.get(name)!.buffer))).toBe(true);
      expect(Buffer.from(got.momentum.get(name)!.buffer).equals(Buffer.from(want.momentum.get(name)!.buffer))).toBe(true);
    }
    expect(() => agg.apply(cfg, momentum)).toThrow('apply() runs once per aggregator');
  });

  test('a missing, repeated, unknown or wrongly sized tensor is refused, naming the worker', () => {
    const agg = new OuterAggregator(model(1));
    const w = agg.worker('shard 1 round 3');
    w.add('wte', rand(37, 0));
    expect(() => w.add('wte', rand(37, 0))).toThrow('shard 1 round 3: parameter "wte" comes twice');
    expect(() => w.add('lm_head.weight', rand(3, 0))).toThrow('shard 1 round 3: parameter "lm_head.weight" is not in the global model');
    expect(() => w.add('ln_f.bias', rand(3, 0))).toThrow('shard 1 round 3: parameter "ln_f.bias" has 3 values, the global model 111');
    expect(() => w.end()).toThrow('shard 1 round 3: parameter "h.0.attn.c_attn.weight" is missing');
    expect(agg.workers).toBe(0);
  });
});
