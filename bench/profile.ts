// Reads an ORT profile (sessionOptions.enableProfiling) and sums kernel time per op type, so the
// bench can say where a training step's time goes. Per phase it also sums each node's fastest run
// (`minMs`): on a loaded machine that is closer to the uncontended cost than the mean, though it
// flatters a phase of many small nodes a little (more draws to take a minimum over).

import * as fs from 'node:fs';

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

/** `phaseOf` maps a graph node name to a phase label (ORT's fused nodes keep it as a name prefix). */
export function summarizeProfile(file: string, phaseOf?: (node: string) => string | undefined) {
  const events = JSON.parse(fs.readFileSync(file, 'utf8')) as ProfileEvent[];
  const byOp = new Map<string, { us: number; count: number }>();
  const byPhase = new Map<string, number>();
  const fastest = new Map<string, { phase: string; us: number }>();
  let runs = 0;
  let total = 0;
  for (const e of events) {
    if (e.cat === 'Session' && e.name === 'model_run') runs++;
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const op = e.args?.op_name ?? 'unknown';
    const s = byOp.get(op) ?? { us: 0, count: 0 };
    s.us += e.dur;
    s.count++;
    byOp.set(op, s);
    total += e.dur;
    const node = e.name.slice(0, -'_kernel_time'.length);
    const phase = phaseOf?.(node.split('/')[0]) ?? 'other';
    byPhase.set(phase, (byPhase.get(phase) ?? 0) + e.dur);
    const f = fastest.get(node);
    if (!f || e.dur < f.us) fastest.set(node, { phase, us: e.dur });
  }
  const minUs = new Map<string, number>();
  for (const { phase, us } of fastest.values()) minUs.set(phase, (minUs.get(phase) ?? 0) + us);
  return {
    runs: Math.max(runs, 1),
    totalMs: total / 1000,
    byPhase: Object.fromEntries([...byPhase.entries()].map(([k, us]) => [k, { ms: us / 1000, share: us / total, minMs: (minUs.get(k) ?? 0) / 1000 }])),
    byOp: [...byOp.entries()].map(([op, s]) => ({ op, ms: s.us / 1000, count: s.count, share: s.us / total })).sort((a, b) => b.ms - a.ms),
  };
}
