// Activation checkpointing of a training-step graph: the forward of each checkpointed segment (k
// consecutive transformer blocks) is recomputed in the backward pass, so that across the
// forward/backward boundary only the segments' inputs stay alive instead of every intermediate of
// every block. Models mark their blocks as graph regions named `block:<name>` (gpt.ts `block`);
// autodiff (gradients.ts, `Recompute`) does the recomputation and ties it to the gradient coming
// down from above, so ONNX Runtime runs it late and frees it early.

import { z } from 'zod';
import type { Graph } from '../graph/ir';

/** Region names of checkpointable blocks start with this. */
export const BLOCK_REGION_PREFIX = 'block:';

/**
 * `off` (default): keep every activation. `block`: recompute each block from its input. A number
 * k: recompute k consecutive blocks from the first one's input (fewer saved inputs, more live
 * memory while one segment's backward runs); 1 is the same as `block`.
 */
const MESSAGE = "must be 'off', 'block' or a number of blocks per recomputed segment (an integer from 1 to 1024)";
export const ActivationCheckpointingSchema = z.union([z.enum(['off', 'block']), z.number().int({ error: MESSAGE }).min(1, { error: MESSAGE }).max(1024, { error: MESSAGE })], { error: MESSAGE });
export type ActivationCheckpointing = z.infer<typeof ActivationCheckpointingSchema>;

/** Blocks per segment, or 0 when checkpointing is off. */
export function blocksPerSegment(setting: ActivationCheckpointing | undefined): number {
  if (setting === undefined || setting === 'off') return 0;
  return setting === 'block' ? 1 : setting;
}

/**
 * The node ranges [start, end) to recompute in `g` (built up to its forward) for `setting`: the
 * graph's top-level block regions, k at a time; the last segment may hold fewer. An error when the
 * setting asks for checkpointing and the graph marks no block.
 */
export function checkpointRanges(g: Graph, setting: ActivationCheckpointing | undefined): { start: number; end: number }[] {
  const k = blocksPerSegment(setting);
  if (k === 0) return [];
  const blocks = g.regions
    .filter((r) => r.name.startsWith(BLOCK_REGION_PREFIX))
    .map((r) => ({ name: r.name, ...g.regionRange(r) }))
    .sort((a, b) => a.start - b.start);
  if (blocks.length === 0) throw new Error(`activationCheckpointing: graph ${g.name} marks no transformer block to recompute (only GPT models do so far)`);
  // Nested block regions (a block built inside another) belong to the outer one.
  const top = blocks.filter((b, i) => !blocks.some((o, j) => j !== i && o.start <= b.start && o.end >= b.end && (o.start < b.start || o.end > b.end)));
  const out: { start: number; end: number }[] = [];
  for (let i = 0; i < top.length; i += k) {
    const group = top.slice(i, i + k);
    out.push({ start: group[0].start, end: group[group.length - 1].end });
  }
  return out;
}
