// Which nodes of a graph the CUDA execution provider has a kernel for, by its published kernel
// table (cuda-kernels.ts, derived from onnxruntime's docs/OperatorKernels.md by
// derive-cuda-kernels.ts). A node has a kernel when some row matches its op and domain, the
// graph's opset for that domain lies in the row's range, and every input's dtype is among the
// types of the row's constraint for that input. A node without one would run on the CPU EP
// (ORT assigns it there and copies its inputs over), or fail if the CPU EP lacks it too.
// Known limits: outputs are not checked (their types follow the inputs or an attribute), nor
// whether inputs sharing a constraint letter agree, and the table is the one the file lists.

import type { DType, Graph, Node } from '../graph/ir';
import { CUDA_KERNELS, CUDA_KERNELS_SOURCE } from './cuda-kernels';

export interface CudaKernel {
  op: string;
  domain: string;
  since: number;
  until: number | null;
  /** One list per "or" signature: each input's constraint name (T, T1, ...) or a fixed type (tensor(int64)). */
  inputs: string[][];
  types: Record<string, string[]>;
}

export interface CpuFallback {
  node: string;
  op: string;
  domain: string;
  opset: number;
  inputTypes: string[];
  reason: string;
}

const TENSOR_TYPE: Record<DType, string> = {
  float32: 'tensor(float)',
  float16: 'tensor(float16)',
  bfloat16: 'tensor(bfloat16)',
  float64: 'tensor(double)',
  int64: 'tensor(int64)',
  int32: 'tensor(int32)',
  int16: 'tensor(int16)',
  int8: 'tensor(int8)',
  uint8: 'tensor(uint8)',
  uint4: 'tensor(uint4)',
  int4: 'tensor(int4)',
  bool: 'tensor(bool)',
};

export const cudaKernelSource = (): string => CUDA_KERNELS_SOURCE;

function byOp(table: CudaKernel[]): Map<string, CudaKernel[]> {
  const m = new Map<string, CudaKernel[]>();
  for (const k of table) {
    const key = `${k.domain}:${k.op}`;
    m.set(key, [...(m.get(key) ?? []), k]);
  }
  return m;
}

const INDEX = byOp(CUDA_KERNELS);

function accepts(k: CudaKernel, types: (string | null)[]): boolean {
  return k.inputs.some((sig) =>
    types.every((t, i) => {
      if (t === null) return true;
      const c = sig[Math.min(i, sig.length - 1)]; // variadic inputs (Concat, Sum) repeat the last
      if (c === undefined) return false;
      return c.startsWith('tensor(') ? c === t : (k.types[c] ?? []).includes(t);
    }),
  );
}

/** Why `n` has no CUDA kernel, or null when it has one. */
function missing(n: Node, opset: number, types: (string | null)[], index: Map<string, CudaKernel[]>): string | null {
  const rows = index.get(`${n.domain}:${n.opType}`);
  if (!rows) return 'no CUDA kernel for this op';
  const inRange = rows.filter((k) => k.since <= opset && (k.until === null || opset <= k.until));
  if (inRange.length === 0) return `no CUDA kernel for opset ${opset} (kernels: ${rows.map((k) => (k.until === null ? `${k.since}+` : `[${k.since}, ${k.until}]`)).join(', ')})`;
  if (!inRange.some((k) => accepts(k, types))) return `no CUDA kernel for input types (${types.map((t) => t ?? '-').join(', ')})`;
  return null;
}

/**
 * The nodes of `g` (and of its subgraphs) that the CUDA EP has no kernel for, in graph order.
 * @example cudaFallbacks(step.graph).map((f) => `${f.op}: ${f.reason}`)
 */
export function cudaFallbacks(g: Graph, table: CudaKernel[] = CUDA_KERNELS): CpuFallback[] {
  const index = table === CUDA_KERNELS ? INDEX : byOp(table);
  const out: CpuFallback[] = [];
  const visit = (graph: Graph, opsets: Map<string, number>) => {
    for (const n of graph.nodes) {
      const opset = opsets.get(n.domain) ?? 1;
      const types = n.inputs.map((x) => (x ? TENSOR_TYPE[graph.value(x).dtype] : null));
      const reason = missing(n, opset, types, index);
      if (reason) out.push({ node: n.name, op: n.opType, domain: n.domain, opset, inputTypes: types.map((t) => t ?? ''), reason });
      for (const a of Object.values(n.attrs)) if (a.type === 'graph') visit(a.value, opsets);
    }
  };
  visit(g, g.opsets);
  return out;
}

/** One line per distinct (op, input types, reason), with its node count: what `doctor` and a CUDA worker print. */
export function summarizeFallbacks(fallbacks: CpuFallback[]): string[] {
  const counts = new Map<string, number>();
  for (const f of fallbacks) {
    const key = `${f.domain ? f.domain + '.' : ''}${f.op}(${f.inputTypes.map((t) => t.replace(/^tensor\((.*)\)$/, '$1') || '-').join(', ')}): ${f.reason}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${n}× ${k}`);
}
