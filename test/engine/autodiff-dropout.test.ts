// Seeded dropout: the mask is a pure function of (seed, step, salt), so a resumed run redraws the
// same masks; it keeps about 1 - ratio of the elements, and the backward uses the same mask.
import '../../engine/runtime/host-realm';
import * as ort from 'onnxruntime-node';
import { seededDropout, seededDropoutMask } from '../../engine/autodiff/dropout';
import { gradients } from '../../engine/autodiff/gradients';
import { Graph } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';

const SHAPE = [64, 128];
const COUNT = SHAPE[0] * SHAPE[1];

async function makeSession(ratio: number, salt: number) {
  const g = new Graph('dropout');
  const x = g.input('x', 'float32', ['B', SHAPE[1]]);
  const seed = g.input('seed', 'int64', []);
  const step = g.input('step', 'int64', []);
  const y = seededDropout(x, ratio, seed, step, salt);
  g.output(y, 'y');
  const loss = g.op('ReduceSum', [y], { keepdims: 0 })[0];
  g.output(gradients(g, loss, [x]).get('x')!, 'gx');
  const session = await ort.InferenceSession.create(serializeModel(g).model);
  const run = async (s: number, t: number) => {
    const out = await session.run({
      x: new ort.Tensor('float32', new Float32Array(COUNT).fill(1), SHAPE),
      seed: new ort.Tensor('int64', BigInt64Array.of(BigInt(s)), []),
      step: new ort.Tensor('int64', BigInt64Array.of(BigInt(t)), []),
    });
    return { y: Array.from(out.y.data as Float32Array), gx: Array.from(out.gx.data as Float32Array) };
  };
  return { session, run };
}

test('same (seed, step) gives the same mask, another step or seed a different one', async () => {
  const { session, run } = await makeSession(0.1, 0);
  const a = await run(42, 3);
  const again = await run(42, 3);
  const nextStep = await run(42, 4);
  const otherSeed = await run(43, 3);
  await session.release();
  expect(again.y).toEqual(a.y);
  const differ = (p: number[], q: number[]) => p.filter((v, i) => v !== q[i]).length;
  expect(differ(a.y, nextStep.y)).toBeGreaterThan(COUNT * 0.1);
  expect(differ(a.y, otherSeed.y)).toBeGreaterThan(COUNT * 0.1);
  // Kept fraction ≈ 1 - ratio (8192 draws: ±3σ ≈ ±0.01), kept values scaled by 1/(1 - ratio).
  const kept = a.y.filter((v) => v !== 0);
  expect(kept.length / COUNT).toBeGreaterThan(0.88);
  expect(kept.length / COUNT).toBeLessThan(0.92);
  expect([...new Set(kept)]).toEqual([Math.fround(1 / 0.9)]);
  // The backward reuses the mask: dy/dx is the same mask and scale.
  expect(a.gx).toEqual(a.y);
});

test('the graph mask equals the TS reference, and the salt separates layers', async () => {
  const { session, run } = await makeSession(0.5, 5);
  const out = await run(2024, 17);
  await session.release();
  const ref = seededDropoutMask(COUNT, 0.5, 2024, 17, 5);
  expect(out.y.map((v) => (v === 0 ? 0 : 1))).toEqual(ref);
  const otherSalt = seededDropoutMask(COUNT, 0.5, 2024, 17, 6);
  expect(ref.filter((v, i) => v !== otherSalt[i]).length).toBeGreaterThan(COUNT * 0.3);
});
