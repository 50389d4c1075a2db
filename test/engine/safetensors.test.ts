import { readSafetensors, writeSafetensors, expectShape, SafetensorsError } from '../../engine/checkpoint/safetensors';
import type { TensorData } from '../../engine/graph/ir';

const sample = (): Map<string, TensorData> =>
  new Map<string, TensorData>([
    ['wte', { dtype: 'float32', dims: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
    ['step', { dtype: 'int64', dims: [], data: BigInt64Array.from([42n]) }],
    ['h.0.attn.bias', { dtype: 'uint8', dims: [2, 2], data: Uint8Array.from([1, 0, 1, 1]) }],
  ]);

describe('safetensors', () => {
  test('round trip keeps names, dtypes, shapes, values and metadata', () => {
    const buf = writeSafetensors(sample(), { format: 'pt', step: '7' });
    const back = readSafetensors(buf, 'ckpt.safetensors');
    expect(back.metadata).toEqual({ format: 'pt', step: '7' });
    expect([...back.tensors.keys()].sort()).toEqual(['h.0.attn.bias', 'step', 'wte']);
    expect(Array.from(back.tensors.get('wte')!.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(back.tensors.get('wte')!.dims).toEqual([3, 2]);
    expect((back.tensors.get('step')!.data as BigInt64Array)[0]).toBe(42n);
    // Tensor data is 8-byte aligned after the header, as the reference writer does.
    expect(Number(buf.readBigUInt64LE(0)) % 8).toBe(0);
  });

  test('a truncated file names the file and the tensor whose data is cut', () => {
    const buf = writeSafetensors(sample());
    const cut = buf.subarray(0, buf.length - 3);
    expect(() => readSafetensors(cut, 'model.safetensors')).toThrow(/model\.safetensors: tensor "wte": truncated/);
  });

  test('a truncated header is reported', () => {
    expect(() => readSafetensors(new Uint8Array(4), 'x.safetensors')).toThrow(/x\.safetensors: truncated/);
  });

  test('a wrong shape against the model names tensor, file and both shapes', () => {
    const back = readSafetensors(writeSafetensors(sample()), 'a.safetensors');
    expect(() => expectShape('a.safetensors', 'wte', back.tensors.get('wte'), [2, 3])).toThrow(
      'a.safetensors: tensor "wte": shape [3, 2], model expects [2, 3]',
    );
    expect(() => expectShape('a.safetensors', 'lm_head', undefined, [2])).toThrow(SafetensorsError);
  });

  test('writing data that does not match the shape is refused', () => {
    const bad = new Map<string, TensorData>([['w', { dtype: 'float32', dims: [4], data: new Float32Array(3) }]]);
    expect(() => writeSafetensors(bad)).toThrow(/tensor "w": 12 bytes of data for float32\[4\]/);
  });
});
