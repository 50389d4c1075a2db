// The live activations of a training step in ONNX Runtime's own execution order: run one step with
// ORT's profiler on, read the order its kernels ran in, and replay it over the graph, adding up the
// bytes of every value made and not yet read for the last time. Used by the activation
// checkpointing and fused attention tests, which must show that ORT really frees what they save.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { bytesPerElement, numel, type Graph } from '../../engine/graph/ir';
import { serializeModel } from '../../engine/graph/onnx';
import type { TrainStep } from '../../engine/train/step';
import { Trainer, type Batch } from '../../engine/train/trainer';

export function bytesOf(g: Graph, name: string): number {
  const v = g.value(name);
  return (numel(v.shape) ?? 0) * bytesPerElement(v.dtype);
}

/** Runs `step` once on `batch` under ORT's profiler and returns its live-activation peak (liveActivationPeak). */
export async function profiledPeak(step: TrainStep, batch: Batch): Promise<{ bytes: number; executed: number; nodes: number }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ckpt-profile-'));
  // Optimizations off so that ORT's node names are ours; the order is ORT's.
  const session = await ort.InferenceSession.create(serializeModel(step.graph).model, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1, enableProfiling: true, profileFilePrefix: path.join(dir, 'p') });
  const t = await Trainer.create(step, { session, seed: 1 });
  await t.run(batch);
  session.endProfiling();
  const file = fs.readdirSync(dir).map((f) => path.join(dir, f))[0];
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as { cat: string; name: string; ts: number }[];
  fs.rmSync(dir, { recursive: true, force: true });
  await t.release();
  const order = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time')).sort((a, b) => a.ts - b.ts).map((e) => e.name.slice(0, -'_kernel_time'.length));
  return liveActivationPeak(step, order);
}

/** Peak bytes of values made by nodes and not yet read for the last time, walking `order` (node names). */
export function liveActivationPeak(step: TrainStep, order: string[]): { bytes: number; executed: number; nodes: number } {
  const g = step.graph;
  const byName = new Map(g.nodes.map((n) => [n.name, n]));
  const seq = order.map((n) => byName.get(n)!).filter(Boolean);
  const last = new Map<string, number>();
  seq.forEach((n, i) => n.inputs.forEach((x) => x && last.set(x, i)));
  for (const o of g.outputs) last.set(o.name, seq.length);
  const freeAt = new Map<number, string[]>();
  for (const [name, i] of last) if (g.producer(name)) freeAt.set(i, [...(freeAt.get(i) ?? []), name]);
  let live = 0;
  let peak = 0;
  seq.forEach((n, i) => {
    for (const o of n.outputs) if (o) live += bytesOf(g, o);
    peak = Math.max(peak, live);
    for (const name of freeAt.get(i) ?? []) live -= bytesOf(g, name);
  });
  return { bytes: peak, executed: seq.length, nodes: g.nodes.length };
}
