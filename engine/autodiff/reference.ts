// Plain-TS forward references for gradcheck: slow, obvious n-d array code with no ONNX in it, so
// a rule's forward is checked against something written independently of the graph.

export interface ND {
  dims: number[];
  data: number[];
}

export const numel = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

function stridesOf(dims: number[]): number[] {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1] * dims[i + 1];
  return s;
}

/** Calls f(multi-index, flat index) for every element of an array of the given dims, row-major. */
function each(dims: number[], f: (idx: number[], flat: number) => void): void {
  const n = numel(dims);
  const idx = new Array<number>(dims.length).fill(0);
  for (let flat = 0; flat < n; flat++) {
    f(idx, flat);
    for (let a = dims.length - 1; a >= 0; a--) {
      if (++idx[a] < dims[a]) break;
      idx[a] = 0;
    }
  }
}

/** Element of x at a (broadcast) multi-index of a higher- or equal-rank array. */
function at(x: ND, idx: number[]): number {
  const st = stridesOf(x.dims);
  const off = idx.length - x.dims.length;
  let p = 0;
  x.dims.forEach((d, i) => (p += (d === 1 ? 0 : idx[i + off]) * st[i]));
  return x.data[p];
}

/** Numpy-broadcast n-ary elementwise map. */
export function zip(f: (...v: number[]) => number, ...xs: ND[]): ND {
  const rank = Math.max(...xs.map((x) => x.dims.length));
  const dims = Array.from({ length: rank }, (_, i) => Math.max(...xs.map((x) => x.dims[i - (rank - x.dims.length)] ?? 1)));
  const data: number[] = [];
  each(dims, (idx) => data.push(f(...xs.map((x) => at(x, idx)))));
  return { dims, data };
}

export const map = (x: ND, f: (v: number) => number): ND => ({ dims: [...x.dims], data: x.data.map(f) });
export const reshape = (x: ND, dims: number[]): ND => ({ dims, data: [...x.data] });
export const expand = (x: ND, dims: number[]): ND => zip((a) => a, x, { dims, data: new Array(numel(dims)).fill(0) });

export function transpose(x: ND, perm: number[]): ND {
  const dims = perm.map((p) => x.dims[p]);
  const st = stridesOf(x.dims);
  const data: number[] = [];
  each(dims, (idx) => data.push(x.data[idx.reduce((s, v, i) => s + v * st[perm[i]], 0)]));
  return { dims, data };
}

export function matmul(a: ND, b: ND): ND {
  const A = a.dims.length === 1 ? reshape(a, [1, a.dims[0]]) : a;
  const B = b.dims.length === 1 ? reshape(b, [b.dims[0], 1]) : b;
  const [M, K] = A.dims.slice(-2);
  const N = B.dims[B.dims.length - 1];
  const ba = A.dims.slice(0, -2);
  const bb = B.dims.slice(0, -2);
  const batch = zip(() => 0, { dims: ba, data: new Array(numel(ba)).fill(0) }, { dims: bb, data: new Array(numel(bb)).fill(0) }).dims;
  const data: number[] = [];
  each([...batch, M, N], (idx) => {
    const bi = idx.slice(0, -2);
    const [m, n] = idx.slice(-2);
    let s = 0;
    for (let k = 0; k < K; k++) s += at(A, [...bi, m, k]) * at(B, [...bi, k, n]);
    data.push(s);
  });
  const dims = [...batch, ...(a.dims.length > 1 ? [M] : []), ...(b.dims.length > 1 ? [N] : [])];
  return { dims, data };
}

export function gemm(a: ND, b: ND, c: ND | null, alpha = 1, beta = 1, tA = 0, tB = 0): ND {
  const y = matmul(tA ? transpose(a, [1, 0]) : a, tB ? transpose(b, [1, 0]) : b);
  return c ? zip((p, q) => alpha * p + beta * q, y, c) : map(y, (p) => alpha * p);
}

export type ReduceKind = 'sum' | 'mean' | 'max' | 'min' | 'sumsquare';

export function reduce(x: ND, axesIn: number[] | null, keepdims: boolean, kind: ReduceKind): ND {
  const r = x.dims.length;
  const axes = (axesIn ?? [...Array(r).keys()]).map((a) => (a < 0 ? a + r : a));
  const kept = x.dims.map((d, i) => (axes.includes(i) ? 1 : d));
  const acc: number[][] = Array.from({ length: numel(kept) }, () => []);
  const st = stridesOf(kept);
  each(x.dims, (idx, flat) => acc[idx.reduce((s, v, i) => s + (axes.includes(i) ? 0 : v * st[i]), 0)].push(x.data[flat]));
  const data = acc.map((vs) => {
    if (kind === 'max') return Math.max(...vs);
    if (kind === 'min') return Math.min(...vs);
    if (kind === 'sumsquare') return vs.reduce((s, v) => s + v * v, 0);
    const s = vs.reduce((p, v) => p + v, 0);
    return kind === 'mean' ? s / vs.length : s;
  });
  return { dims: keepdims ? kept : x.dims.filter((_, i) => !axes.includes(i)), data };
}

export function softmax(x: ND, axis: number): ND {
  const m = reduce(x, [axis], true, 'max');
  const e = zip((v, mx) => Math.exp(v - mx), x, m);
  return zip((v, s) => v / s, e, reduce(e, [axis], true, 'sum'));
}

export const logSoftmax = (x: ND, axis: number): ND => map(softmax(x, axis), Math.log);

export function layerNorm(x: ND, scale: ND, bias: ND | null, axis: number, eps: number): ND {
  const r = x.dims.length;
  const axes = [...Array(r - (axis < 0 ? axis + r : axis)).keys()].map((i) => r - 1 - i);
  const xc = zip((v, m) => v - m, x, reduce(x, axes, true, 'mean'));
  const varc = reduce(map(xc, (v) => v * v), axes, true, 'mean');
  const y = zip((v, s2, g) => (v / Math.sqrt(s2 + eps)) * g, xc, varc, scale);
  return bias ? zip((v, b) => v + b, y, bias) : y;
}

export function rmsNorm(x: ND, scale: ND, axis: number, eps: number): ND {
  const r = x.dims.length;
  const axes = [...Array(r - (axis < 0 ? axis + r : axis)).keys()].map((i) => r - 1 - i);
  const ms = reduce(map(x, (v) => v * v), axes, true, 'mean');
  return zip((v, m, g) => (v / Math.sqrt(m + eps)) * g, x, ms, scale);
}

/** erf by its Maclaurin series (|x| < 3) or continued fraction: accurate to ~1e-14. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 100; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction (Lentz), for the tail
  let f = ax;
  for (let k = 60; k >= 1; k--) f = ax + k / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function gelu(v: number, approximate: 'none' | 'tanh'): number {
  if (approximate === 'tanh') return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
  return 0.5 * v * (1 + erf(v / Math.SQRT2));
}

export function gather(data: ND, indices: ND, axis: number): ND {
  const a = axis < 0 ? axis + data.dims.length : axis;
  const dims = [...data.dims.slice(0, a), ...indices.dims, ...data.dims.slice(a + 1)];
  const q = indices.dims.length;
  const out: number[] = [];
  each(dims, (idx) => {
    const i = at(indices, idx.slice(a, a + q));
    out.push(at(data, [...idx.slice(0, a), i < 0 ? i + data.dims[a] : i, ...idx.slice(a + q)]));
  });
  return { dims, data: out };
}

export function slice(x: ND, starts: number[], ends: number[], axes: number[], steps: number[]): ND {
  const picks = x.dims.map((d) => [...Array(d).keys()]);
  axes.forEach((axRaw, i) => {
    const ax = axRaw < 0 ? axRaw + x.dims.length : axRaw;
    const d = x.dims[ax];
    const step = steps[i];
    const norm = (v: number) => (v < 0 ? v + d : v);
    const lo = step > 0 ? 0 : -1;
    const hi = step > 0 ? d : d - 1;
    const s = Math.min(Math.max(norm(starts[i]), lo), hi);
    const e = Math.min(Math.max(norm(ends[i]), lo), hi);
    const idx: number[] = [];
    for (let k = s; step > 0 ? k < e : k > e; k += step) idx.push(k);
    picks[ax] = idx;
  });
  const dims = picks.map((p) => p.length);
  const data: number[] = [];
  each(dims, (idx) => data.push(at(x, idx.map((v, i) => picks[i][v]))));
  return { dims, data };
}

export function concat(xs: ND[], axis: number): ND {
  const a = axis < 0 ? axis + xs[0].dims.length : axis;
  const dims = [...xs[0].dims];
  dims[a] = xs.reduce((s, x) => s + x.dims[a], 0);
  const data: number[] = [];
  each(dims, (idx) => {
    let k = idx[a];
    let j = 0;
    while (k >= xs[j].dims[a]) k -= xs[j++].dims[a];
    const sub = [...idx];
    sub[a] = k;
    data.push(at(xs[j], sub));
  });
  return { dims, data };
}

/** Mean/sum/none softmax cross-entropy over scores (N, C, d...) and labels (N, d...). */
export function softmaxCrossEntropy(scores: ND, labels: ND, reduction: 'mean' | 'sum' | 'none', ignoreIndex?: number, weights?: ND): ND {
  const lp = logSoftmax(scores, 1);
  const C = scores.dims[1];
  const per: number[] = [];
  const ws: number[] = [];
  each(labels.dims, (idx, flat) => {
    const label = labels.data[flat];
    if (label === ignoreIndex) {
      per.push(0);
      ws.push(0);
      return;
    }
    if (label < 0 || label >= C) throw new Error(`label ${label} out of range`);
    const w = weights ? weights.data[label] : 1;
    per.push(-w * at(lp, [idx[0], label, ...idx.slice(1)]));
    ws.push(w);
  });
  if (reduction === 'none') return { dims: [...labels.dims], data: per };
  const total = per.reduce((a, b) => a + b, 0);
  return { dims: [], data: [reduction === 'sum' ? total : total / ws.reduce((a, b) => a + b, 0)] };
}

export function trilu(x: ND, k: number, upper: boolean): ND {
  const r = x.dims.length;
  const data: number[] = [];
  each(x.dims, (idx, flat) => {
    const [i, j] = [idx[r - 2], idx[r - 1]];
    data.push((upper ? j - i >= k : j - i <= k) ? x.data[flat] : 0);
  });
  return { dims: [...x.dims], data };
}

/**
 * Multi-head attention on (B, T, nh·hs) queries, keys and values, as com.microsoft
 * MultiHeadAttention: softmax(q·kᵀ/√hs [causal: keys j ≤ i only])·v per head, out (B, T, nh·hs).
 */
export function multiHeadAttention(q: ND, k: ND, v: ND, nh: number, causal: boolean): ND {
  const [B, T, C] = q.dims;
  const hs = C / nh;
  const out = new Array<number>(B * T * C).fill(0);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nh; h++) {
      for (let i = 0; i < T; i++) {
        const seen = causal ? i + 1 : T;
        const s: number[] = [];
        for (let j = 0; j < seen; j++) {
          let dot = 0;
          for (let e = 0; e < hs; e++) dot += q.data[(b * T + i) * C + h * hs + e] * k.data[(b * T + j) * C + h * hs + e];
          s.push(dot / Math.sqrt(hs));
        }
        const p = softmax({ dims: [seen], data: s }, 0).data;
        for (let j = 0; j < seen; j++) for (let e = 0; e < hs; e++) out[(b * T + i) * C + h * hs + e] += p[j] * v.data[(b * T + j) * C + h * hs + e];
      }
    }
  }
  return { dims: [B, T, C], data: out };
}
