// Helpers shared by the rule files: attribute access, axis normalization, and reading the values of
// small constant inputs (axes, shapes, starts...) at graph-build time.
//
// `dimsOf` is a tiny symbolic evaluator for shape vectors: it follows Shape → Gather/Slice →
// Concat/Unsqueeze chains, so `Reshape(x, Concat(Shape(x)[0:2], [nh, hs]))` keeps the symbolic
// batch dim instead of losing the output shape.

import { tensor, type Attr, type DType, type Dim, type Graph, type Shape, type TensorData, type Value } from '../../graph/ir';
import { dtypeFromOnnx, ONNX_DTYPE } from '../../graph/onnx-tensor';

export function attrInt(attrs: Record<string, Attr>, name: string, def: number): number {
  const a = attrs[name];
  if (!a) return def;
  if (a.type !== 'int' && a.type !== 'float') throw new Error(`attribute ${name}: expected a number, got ${a.type}`);
  return a.value;
}

export function attrFloat(attrs: Record<string, Attr>, name: string, def: number): number {
  return attrInt(attrs, name, def);
}

export function attrInts(attrs: Record<string, Attr>, name: string): number[] | null {
  const a = attrs[name];
  if (!a) return null;
  if (a.type !== 'ints') throw new Error(`attribute ${name}: expected ints, got ${a.type}`);
  return a.value;
}

export function attrString(attrs: Record<string, Attr>, name: string, def: string): string {
  const a = attrs[name];
  if (!a) return def;
  if (a.type !== 'string') throw new Error(`attribute ${name}: expected a string, got ${a.type}`);
  return a.value;
}

/** Maps a possibly negative axis into [0, rank); out of range is an error naming the op. */
export function normAxis(axis: number, rank: number, op: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

export function need(x: Value | null | undefined, op: string, what: string): Value {
  if (!x) throw new Error(`${op}: missing required input ${what}`);
  return x;
}

export function rankOf(x: Value, op: string): number {
  if (!x.shape) throw new Error(`${op}: input ${x.name} has unknown rank`);
  return x.shape.length;
}

function tensorNumbers(t: TensorData): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}

/** The numeric contents of a constant (initializer or Constant node), or null when not constant. */
export function constData(g: Graph, v: Value | null): { dims: number[]; values: number[] } | null {
  if (!v) return null;
  const init = g.initializers.get(v.name);
  if (init) return { dims: init.dims, values: tensorNumbers(init) };
  const p = g.producer(v.name);
  if (p && p.opType === 'Constant') {
    const a = p.attrs.value;
    if (a && a.type === 'tensor') return { dims: a.value.dims, values: tensorNumbers(a.value) };
    const ints = p.attrs.value_ints ?? p.attrs.value_int;
    if (ints && (ints.type === 'ints' || ints.type === 'int')) {
      const vals = ints.type === 'ints' ? ints.value : [ints.value];
      return { dims: ints.type === 'ints' ? [vals.length] : [], values: vals };
    }
    const fl = p.attrs.value_float ?? p.attrs.value_floats;
    if (fl && (fl.type === 'float' || fl.type === 'floats')) {
      const vals = fl.type === 'floats' ? fl.value : [fl.value];
      return { dims: fl.type === 'floats' ? [vals.length] : [], values: vals };
    }
  }
  return null;
}

export function constInts(g: Graph, v: Value | null): number[] | null {
  const c = constData(g, v);
  return c ? c.values : null;
}

/**
 * The (possibly symbolic) elements of a 1-D or scalar int64 shape-like tensor, or null when they
 * cannot be known at build time.
 */
export function dimsOf(g: Graph, v: Value | null): Dim[] | null {
  if (!v) return null;
  const c = constData(g, v);
  if (c) return c.values;
  const p = g.producer(v.name);
  if (!p) return null;
  const inp = (i: number) => (p.inputs[i] ? g.value(p.inputs[i]) : null);
  switch (p.opType) {
    case 'Shape': {
      const x = inp(0);
      if (!x || !x.shape) return null;
      const r = x.shape.length;
      const clamp = (a: number) => Math.min(Math.max(a < 0 ? a + r : a, 0), r);
      const start = clamp(attrInt(p.attrs, 'start', 0));
      const end = clamp(attrInt(p.attrs, 'end', r));
      return x.shape.slice(start, end);
    }
    case 'Identity':
    case 'Cast':
    case 'Squeeze':
    case 'Unsqueeze':
      return dimsOf(g, inp(0));
    case 'Concat': {
      const out: Dim[] = [];
      for (const name of p.inputs) {
        const d = dimsOf(g, g.value(name));
        if (!d) return null;
        out.push(...d);
      }
      return out;
    }
    case 'Gather': {
      const src = dimsOf(g, inp(0));
      const idx = constInts(g, inp(1));
      if (!src || !idx) return null;
      return idx.map((i) => src[i < 0 ? i + src.length : i]);
    }
    case 'Add':
    case 'Sub': {
      // Shape arithmetic such as past + seq, elementwise with a one-element side broadcast.
      const a = dimsOf(g, inp(0));
      const b = dimsOf(g, inp(1));
      if (!a || !b) return null;
      const n = Math.max(a.length, b.length);
      if ((a.length !== n && a.length !== 1) || (b.length !== n && b.length !== 1)) return null;
      const out: Dim[] = [];
      for (let i = 0; i < n; i++) {
        const [x, y] = [a[a.length === 1 ? 0 : i], b[b.length === 1 ? 0 : i]];
        const r = typeof x === 'number' && typeof y === 'number' ? (p.opType === 'Add' ? x + y : x - y) : p.opType === 'Add' ? sumDims([x, y]) : diffDim(x, y);
        if (r === null) return null;
        out.push(r);
      }
      return out;
    }
    case 'Slice': {
      const src = dimsOf(g, inp(0));
      const starts = constInts(g, inp(1));
      const ends = constInts(g, inp(2));
      const steps = p.inputs[4] ? constInts(g, inp(4)) : [1];
      if (!src || !starts || !ends || !steps || steps[0] !== 1) return null;
      const n = src.length;
      const clamp = (a: number) => Math.min(Math.max(a < 0 ? a + n : a, 0), n);
      return src.slice(clamp(starts[0]), clamp(ends[0]));
    }
    default:
      return null;
  }
}

/**
 * A fresh symbolic dim for a size that cannot be known at build time, from g's own counter
 * (Graph.freshDim), so the same build always gives the same names and the same ONNX bytes.
 */
export function unknownDim(g: Graph, stem = 'unk'): string {
  return g.freshDim(stem);
}

// Sums of dims are named by their expression ("past+seq", "seq+1"): symbol terms sorted, the
// constant last. A symbol that is itself a product or holds other operators stays opaque, and
// the callers fall back to unknownDim rather than print an ambiguous name.
const PLAIN_SYMBOL = /^[^\s+\-*/()]+$/;

function sumTerms(d: Dim): { syms: string[]; c: number } | null {
  if (typeof d === 'number') return { syms: [], c: d };
  const syms: string[] = [];
  let c = 0;
  for (const raw of d.split('+')) {
    const t = raw.trim();
    if (/^\d+$/.test(t)) c += Number(t);
    else if (PLAIN_SYMBOL.test(t)) syms.push(t);
    else return null;
  }
  return { syms, c };
}

function sumName(syms: string[], c: number): Dim | null {
  if (syms.length === 0) return c;
  if (c < 0) return null;
  return [...syms.sort(), ...(c > 0 ? [String(c)] : [])].join('+');
}

/** a + b + ... as a dim: a number when all are numbers, else "past+seq"; null when unnameable. */
export function sumDims(ds: Dim[]): Dim | null {
  const syms: string[] = [];
  let c = 0;
  for (const d of ds) {
    const t = sumTerms(d);
    if (!t) return null;
    syms.push(...t.syms);
    c += t.c;
  }
  return sumName(syms, c);
}

/** a - b as a dim ("past+seq" - "past" = "seq"); null unless b's symbols all cancel against a's. */
export function diffDim(a: Dim, b: Dim): Dim | null {
  if (b === 0) return a;
  if (a === b) return 0;
  const ta = sumTerms(a);
  const tb = sumTerms(b);
  if (!ta || !tb) return null;
  for (const s of tb.syms) {
    const k = ta.syms.indexOf(s);
    if (k < 0) return null;
    ta.syms.splice(k, 1);
  }
  return sumName(ta.syms, ta.c - tb.c);
}

/** The factors of a product dim ("batch*(past+seq)" → batch, past+seq). */
export function dimFactors(d: Dim): Dim[] {
  if (typeof d === 'number') return [d];
  return d.split(/\*(?![^(]*\))/).map((t) => (/^\(.*\)$/.test(t) ? t.slice(1, -1) : t));
}

/** A product of symbols (and a constant) as a dim name, sums in parentheses: "batch*(past+seq)". */
export function productName(factors: (string | number)[]): string {
  return factors.map((t) => (typeof t === 'string' && t.includes('+') ? `(${t})` : String(t))).join('*');
}

export const isFloat = (dt: DType) => dt === 'float32' || dt === 'float64' || dt === 'float16' || dt === 'bfloat16';

/** A scalar constant of x's dtype (float32/float64/int64/int32). */
export function scalarLike(x: Value, v: number): Value {
  return x.graph.const(tensor(x.dtype, [], [v]), 'scalar');
}

/** A same-rank int64 vector constant. */
export function i64(g: Graph, xs: number[]): Value {
  return g.const(tensor('int64', [xs.length], xs), 'vec');
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (!a || !b || a.length !== b.length) return false;
  return a.every((d, i) => d === b[i]);
}

export function isStatic(s: Shape): s is number[] {
  return !!s && s.every((d) => typeof d === 'number');
}

/** Elementwise rule: output has the input's dtype and shape. */
export const sameAsInput = (inputs: (Value | null)[]) => {
  const x = inputs[0];
  if (!x) throw new Error('missing input 0');
  return [{ dtype: x.dtype, shape: x.shape ? [...x.shape] : null }];
};

/** ONNX TensorProto.DataType codes, for Cast's `to` and ConstantOfShape (one table, in onnx-tensor). */
export const onnxDType = ONNX_DTYPE;
export { dtypeFromOnnx };

/** Zeros with v's dtype and shape (static constant when the shape is static, else at run time). */
export function zerosLike(v: Value): Value {
  const g = v.graph;
  const t = tensor(v.dtype, [1], [0]);
  const shape = isStatic(v.shape) ? i64(g, v.shape) : g.op('Shape', [v])[0];
  return g.op('ConstantOfShape', [shape], { value: t })[0];
}

/** Shape of v as an int64 vector value: a constant when static, Shape(v) otherwise. */
export function shapeVec(v: Value): Value {
  return isStatic(v.shape) ? i64(v.graph, v.shape) : v.graph.op('Shape', [v])[0];
}

/** Reshape `x` to the shape of `like` (used by every view-like op's gradient). */
export function reshapeLike(x: Value, like: Value): Value {
  if (sameShape(x.shape, like.shape)) return x;
  return x.graph.op('Reshape', [x, shapeVec(like)])[0];
}
