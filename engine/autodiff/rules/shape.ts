// View-like and layout ops. Their gradients move dY back into x's layout: the inverse transpose,
// a reshape to x's shape, a split for a concat, a pad for a slice.

import type { Dim, Graph, Value } from '../../graph/ir';
import { registerOp, type GradContext, type ValueInfo } from '../../graph/registry';
import { broadcastShapes, sumToShape } from './broadcast';
import { attrInt, attrInts, constInts, dimFactors, dimsOf, i64, isStatic, need, normAxis, productName, reshapeLike, sumDims, unknownDim, zerosLike } from './common';

const dyOf = (ctx: GradContext) => need(ctx.gradOutputs[0], ctx.node.opType, 'output gradient');
const x0 = (ctx: GradContext) => need(ctx.inputs[0], ctx.node.opType, 'data');
const unknown = (x: Value): ValueInfo[] => [{ dtype: x.dtype, shape: null }];

registerOp('Identity', { infer: (inputs) => [{ ...infoOf(need(inputs[0], 'Identity', 'input')) }], grad: (ctx) => [dyOf(ctx)] });

function infoOf(x: Value): ValueInfo {
  return { dtype: x.dtype, shape: x.shape ? [...x.shape] : null };
}

registerOp('Transpose', {
  infer: (inputs, attrs) => {
    const x = need(inputs[0], 'Transpose', 'data');
    if (!x.shape) return unknown(x);
    const perm = attrInts(attrs, 'perm') ?? [...x.shape.keys()].reverse();
    if (perm.length !== x.shape.length) throw new Error(`Transpose: perm [${perm}] does not match rank ${x.shape.length} of ${x.name}`);
    return [{ dtype: x.dtype, shape: perm.map((p) => x.shape![p]) }];
  },
  grad: (ctx) => {
    const r = x0(ctx).shape!.length;
    const perm = attrInts(ctx.attrs, 'perm') ?? [...Array(r).keys()].reverse();
    const inv = new Array<number>(r);
    perm.forEach((p, i) => (inv[p] = i));
    return [ctx.graph.op('Transpose', [dyOf(ctx)], { perm: inv })[0]];
  },
});

/** Output dims of Reshape, resolving 0 (copy) and -1 (infer) with symbolic dims where possible. */
function reshapeDims(g: Graph, input: Dim[] | null, target: Dim[], allowZero: boolean, op: string): Dim[] {
  const out = target.map((d, i) => {
    if (d === 0 && !allowZero) {
      if (!input) return unknownDim(g, 'reshape');
      return input[i];
    }
    return d;
  });
  const hole = out.indexOf(-1);
  if (hole < 0) return out;
  if (!input) {
    out[hole] = unknownDim(g, 'reshape');
    return out;
  }
  // Cancel equal symbols, divide the static products; what is left of the input's symbols names
  // the hole as their product ("B*T", "B*(past+seq)"), so a flatten keeps a readable symbolic dim.
  const syms: string[] = [];
  let pin = 1;
  for (const d of input) {
    for (const t of dimFactors(d)) {
      if (typeof t === 'number' || /^\d+$/.test(t)) pin *= Number(t);
      else syms.push(t);
    }
  }
  let pout = 1;
  let extra = false;
  out.forEach((d, i) => {
    if (i === hole) return;
    for (const t of dimFactors(d)) {
      if (typeof t === 'number' || /^\d+$/.test(t)) pout *= Number(t);
      else {
        const k = syms.indexOf(t);
        if (k >= 0) syms.splice(k, 1);
        else extra = true;
      }
    }
  });
  if (extra) out[hole] = unknownDim(g, 'reshape');
  else if (syms.length > 0) {
    const ratio = pin / pout;
    out[hole] = ratio === 1 ? productName(syms) : Number.isInteger(ratio) ? productName([...syms, ratio]) : unknownDim(g, 'reshape');
  }
  else {
    if (pout === 0 || pin % pout !== 0) throw new Error(`${op}: cannot reshape [${input}] to [${target}]`);
    out[hole] = pin / pout;
  }
  return out;
}

registerOp('Reshape', {
  infer: (inputs, attrs, g) => {
    const x = need(inputs[0], 'Reshape', 'data');
    const target = dimsOf(g, need(inputs[1], 'Reshape', 'shape'));
    if (!target) {
      const len = inputs[1]!.shape && typeof inputs[1]!.shape[0] === 'number' ? inputs[1]!.shape[0] : null;
      return [{ dtype: x.dtype, shape: len === null ? null : Array.from({ length: len }, () => unknownDim(g, 'reshape')) }];
    }
    return [{ dtype: x.dtype, shape: reshapeDims(g, x.shape, target, attrInt(attrs, 'allowzero', 0) === 1, 'Reshape') }];
  },
  grad: (ctx) => [reshapeLike(dyOf(ctx), x0(ctx)), null],
});

registerOp('Flatten', {
  infer: (inputs, attrs, g) => {
    const x = need(inputs[0], 'Flatten', 'input');
    if (!x.shape) return [{ dtype: x.dtype, shape: [unknownDim(g, 'flat'), unknownDim(g, 'flat')] }];
    const axis = attrInt(attrs, 'axis', 1);
    const a = axis < 0 ? axis + x.shape.length : axis;
    const prod = (ds: Dim[]) => {
      const n = ds.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
      const syms = ds.filter((d) => typeof d === 'string');
      if (syms.length === 0) return n;
      return n === 1 ? productName(syms) : unknownDim(g, 'flat');
    };
    return [{ dtype: x.dtype, shape: [prod(x.shape.slice(0, a)), prod(x.shape.slice(a))] }];
  },
  grad: (ctx) => [reshapeLike(dyOf(ctx), x0(ctx))],
});

registerOp('Squeeze', {
  infer: (inputs, _attrs, g) => {
    const x = need(inputs[0], 'Squeeze', 'data');
    if (!x.shape) return unknown(x);
    const r = x.shape.length;
    const axesIn = inputs[1] ? constInts(g, inputs[1]) : null;
    if (inputs[1] && !axesIn) return unknown(x);
    const axes = axesIn ? axesIn.map((a) => normAxis(a, r, 'Squeeze')) : x.shape.flatMap((d, i) => (d === 1 ? [i] : []));
    for (const a of axes) {
      if (typeof x.shape[a] === 'number' && x.shape[a] !== 1) throw new Error(`Squeeze: axis ${a} of ${x.name} [${x.shape}] is not 1`);
    }
    return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.includes(i)) }];
  },
  grad: (ctx) => [reshapeLike(dyOf(ctx), x0(ctx)), null],
});

registerOp('Unsqueeze', {
  infer: (inputs, _attrs, g) => {
    const x = need(inputs[0], 'Unsqueeze', 'data');
    const axesIn = constInts(g, need(inputs[1], 'Unsqueeze', 'axes'));
    if (!x.shape || !axesIn) return unknown(x);
    const r = x.shape.length + axesIn.length;
    const axes = axesIn.map((a) => normAxis(a, r, 'Unsqueeze'));
    const out: Dim[] = [];
    let j = 0;
    for (let i = 0; i < r; i++) out.push(axes.includes(i) ? 1 : x.shape[j++]);
    return [{ dtype: x.dtype, shape: out }];
  },
  grad: (ctx) => [reshapeLike(dyOf(ctx), x0(ctx)), null],
});

registerOp('Concat', {
  infer: (inputs, attrs, g) => {
    const xs = inputs.map((x, i) => need(x, 'Concat', `#${i}`));
    if (xs.some((x) => !x.shape)) return unknown(xs[0]);
    const r = xs[0].shape!.length;
    const axis = normAxis(attrInt(attrs, 'axis', 0), r, 'Concat');
    const out = [...xs[0].shape!];
    for (const x of xs) {
      if (x.shape!.length !== r) throw new Error(`Concat: ${x.name} has rank ${x.shape!.length}, expected ${r}`);
    }
    // The sum of the parts, named by its expression when symbolic: past (B, h, past, d) ++ new
    // (B, h, seq, d) gives (B, h, past+seq, d).
    out[axis] = sumDims(xs.map((x) => x.shape![axis])) ?? unknownDim(g, 'concat');
    return [{ dtype: xs[0].dtype, shape: out }];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const xs = ctx.inputs.map((x, i) => need(x, 'Concat', `#${i}`));
    const axis = normAxis(attrInt(ctx.attrs, 'axis', 0), xs[0].shape!.length, 'Concat');
    if (xs.length === 1) return [dyOf(ctx)];
    const sizes = xs.map((x) => x.shape![axis]);
    const split = sizes.every((d): d is number => typeof d === 'number')
      ? i64(g, sizes)
      : g.op('Concat', xs.map((x) => g.op('Shape', [x], { start: axis, end: axis + 1 })[0]), { axis: 0 })[0];
    const parts = g.op('Split', [dyOf(ctx), split], { axis }, { outputs: xs.length });
    return parts.map((p, i) => (ctx.needsGrad[i] ? p : null));
  },
});

registerOp('Split', {
  infer: (inputs, attrs, g) => {
    const x = need(inputs[0], 'Split', 'input');
    if (!x.shape) return unknown(x);
    const axis = normAxis(attrInt(attrs, 'axis', 0), x.shape.length, 'Split');
    const d = x.shape[axis];
    let sizes: Dim[];
    const given = inputs[1] ? constInts(g, inputs[1]) : null;
    const n = attrInt(attrs, 'num_outputs', 0);
    if (given) sizes = given;
    else if (inputs[1]) {
      const len = inputs[1].shape?.[0];
      sizes = Array.from({ length: typeof len === 'number' ? len : 1 }, () => unknownDim(g, 'split'));
    } else if (n > 0) {
      if (typeof d !== 'number') sizes = Array.from({ length: n }, () => unknownDim(g, 'split'));
      else {
        const each = Math.ceil(d / n);
        sizes = Array.from({ length: n }, (_, i) => Math.max(0, Math.min(each, d - each * i)));
      }
    } else throw new Error('Split: give the split sizes input or the num_outputs attribute');
    if (given && typeof d === 'number' && given.reduce((a, b) => a + b, 0) !== d) {
      throw new Error(`Split: sizes [${given}] do not add up to ${d} (axis ${axis} of ${x.name})`);
    }
    return sizes.map((s) => {
      const shape = [...x.shape!];
      shape[axis] = s;
      return { dtype: x.dtype, shape };
    });
  },
  grad: (ctx) => {
    const x = x0(ctx);
    const axis = normAxis(attrInt(ctx.attrs, 'axis', 0), x.shape!.length, 'Split');
    const parts = ctx.outputs.map((o, i) => ctx.gradOutputs[i] ?? zerosLike(o));
    return [ctx.graph.op('Concat', parts, { axis })[0], null];
  },
});

const INT_MAX = 2 ** 63;

/** Static per-axis (start, end, step) of a Slice, clamped as ONNX specifies; null if not constant. */
export function sliceParams(ctx: { graph: GradContext['graph'] }, inputs: (Value | null)[], rank: number) {
  const g = ctx.graph;
  const starts = constInts(g, inputs[1]);
  const ends = constInts(g, inputs[2]);
  const axes = inputs[3] ? constInts(g, inputs[3]) : starts ? starts.map((_, i) => i) : null;
  const steps = inputs[4] ? constInts(g, inputs[4]) : starts ? starts.map(() => 1) : null;
  if (!starts || !ends || !axes || !steps) return null;
  return axes.map((a, i) => ({ axis: normAxis(a, rank, 'Slice'), start: starts[i], end: ends[i], step: steps[i] }));
}

function clampRange(dim: number, start: number, end: number, step: number): [number, number] {
  if (step === 0) throw new Error('Slice: step 0');
  const s0 = start < 0 ? start + dim : start;
  const e0 = end < 0 ? end + dim : end;
  if (step > 0) return [Math.min(Math.max(s0, 0), dim), Math.min(Math.max(e0, 0), dim)];
  return [Math.min(Math.max(s0, -1), dim - 1), Math.min(Math.max(e0, -1), dim - 1)];
}

registerOp('Slice', {
  infer: (inputs, _attrs, g) => {
    const x = need(inputs[0], 'Slice', 'data');
    if (!x.shape) return unknown(x);
    const params = sliceParams({ graph: g }, inputs, x.shape.length);
    if (!params) return [{ dtype: x.dtype, shape: x.shape.map(() => unknownDim(g, 'slice')) }];
    const out = [...x.shape];
    for (const { axis, start, end, step } of params) {
      const d = x.shape[axis];
      if (typeof d !== 'number') {
        out[axis] = start === 0 && step === 1 && end >= INT_MAX / 2 ? d : unknownDim(g, 'slice');
        continue;
      }
      const [s, e] = clampRange(d, start, end, step);
      out[axis] = Math.max(0, Math.ceil((e - s) / step));
    }
    return [{ dtype: x.dtype, shape: out }];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const x = x0(ctx);
    const dy = dyOf(ctx);
    const r = x.shape!.length;
    const params = sliceParams(ctx, ctx.inputs, r);
    if (!params) throw new Error(`Slice ${ctx.node.name}: gradient needs constant starts/ends/axes/steps`);
    // Unit steps: dX is dY padded with zeros before and after the slice on each sliced axis. On a
    // symbolic axis the pads are still known when start ≥ 0 and end runs to the end or is negative
    // (x[:, 1:], x[:, :-1]), as long as the slice is not clamped at run time.
    const unitPads = (): number[] | null => {
      const pads = new Array<number>(2 * r).fill(0);
      for (const { axis, start, end, step } of params) {
        if (step !== 1) return null;
        const d = x.shape![axis];
        if (typeof d === 'number') {
          const [s, e] = clampRange(d, start, end, 1);
          pads[axis] = s;
          pads[r + axis] = d - Math.max(e, s);
        } else if (start >= 0 && (end < 0 || end >= INT_MAX / 2)) {
          pads[axis] = start;
          pads[r + axis] = end < 0 ? -end : 0;
        } else return null;
      }
      return pads;
    };
    const pads = unitPads();
    if (pads) return [g.op('Pad', [dy, i64(g, pads)])[0], null, null, null, null];
    if (!isStatic(x.shape)) throw new Error(`Slice ${ctx.node.name}: strided gradient needs a static input shape`);
    // Strided (or reversed) slice: scatter dY's elements to their flat positions in x.
    const xs = x.shape;
    const picked: number[][] = xs.map((d) => [...Array(d).keys()]);
    for (const { axis, start, end, step } of params) {
      const [s, e] = clampRange(xs[axis], start, end, step);
      const idx: number[] = [];
      for (let i = s; step > 0 ? i < e : i > e; i += step) idx.push(i);
      picked[axis] = idx;
    }
    const strides = xs.map((_, i) => xs.slice(i + 1).reduce((a, b) => a * b, 1));
    let flat = [0];
    picked.forEach((idx, ax) => (flat = flat.flatMap((base) => idx.map((i) => base + i * strides[ax]))));
    const n = xs.reduce((a, b) => a * b, 1);
    const zeros = g.op('ConstantOfShape', [i64(g, [n])], { value: { dtype: x.dtype, dims: [1], data: x.dtype === 'float64' ? new Float64Array(1) : new Float32Array(1) } })[0];
    const upd = g.op('Reshape', [dy, i64(g, [-1])])[0];
    const scattered = g.op('ScatterElements', [zeros, i64(g, flat), upd], { axis: 0 })[0];
    return [g.op('Reshape', [scattered, i64(g, xs)])[0], null, null, null, null];
  },
});

registerOp('Pad', {
  infer: (inputs, attrs, g) => {
    const x = need(inputs[0], 'Pad', 'data');
    const pads = constInts(g, need(inputs[1], 'Pad', 'pads'));
    if (!x.shape || !pads) return unknown(x);
    const r = x.shape.length;
    const axes = inputs[3] ? constInts(g, inputs[3])?.map((a) => normAxis(a, r, 'Pad')) : [...Array(r).keys()];
    if (!axes) return unknown(x);
    void attrs;
    const out = [...x.shape];
    axes.forEach((a, i) => {
      const d = out[a];
      out[a] = typeof d === 'number' ? d + pads[i] + pads[i + axes.length] : unknownDim(g, 'pad');
    });
    return [{ dtype: x.dtype, shape: out }];
  },
  grad: (ctx) => {
    const g = ctx.graph;
    const x = x0(ctx);
    const mode = ctx.attrs.mode && ctx.attrs.mode.type === 'string' ? ctx.attrs.mode.value : 'constant';
    const pads = constInts(g, ctx.inputs[1]);
    if (mode !== 'constant' || !pads || ctx.inputs[3] || pads.some((p) => p < 0)) {
      throw new Error(`Pad ${ctx.node.name}: gradient supports constant mode with constant non-negative pads on all axes`);
    }
    const r = x.shape!.length;
    const starts = pads.slice(0, r);
    // A negative end counts from the padded end, so this works for symbolic dims too.
    const ends = pads.slice(r).map((p) => (p > 0 ? -p : INT_MAX / 2));
    const axes = [...Array(r).keys()];
    return [g.op('Slice', [dyOf(ctx), i64(g, starts), i64(g, ends), i64(g, axes)])[0], null, null, null];
  },
});

registerOp('Expand', {
  infer: (inputs, _attrs, g) => {
    const x = need(inputs[0], 'Expand', 'input');
    const target = dimsOf(g, need(inputs[1], 'Expand', 'shape'));
    if (!target) return unknown(x);
    return [{ dtype: x.dtype, shape: broadcastShapes([x.shape, target], 'Expand') }];
  },
  grad: (ctx) => [sumToShape(dyOf(ctx), x0(ctx)), null],
});

registerOp('Tile', {
  infer: (inputs, _attrs, g) => {
    const x = need(inputs[0], 'Tile', 'input');
    const reps = constInts(g, need(inputs[1], 'Tile', 'repeats'));
    if (!x.shape || !reps) return unknown(x);
    return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (typeof d === 'number' ? d * reps[i] : reps[i] === 1 ? d : unknownDim(g, 'tile'))) }];
  },
});

registerOp('Shape', {
  infer: (inputs, attrs, g) => {
    const x = need(inputs[0], 'Shape', 'data');
    if (!x.shape) return [{ dtype: 'int64', shape: [unknownDim(g, 'rank')] }];
    const r = x.shape.length;
    const clamp = (a: number) => Math.min(Math.max(a < 0 ? a + r : a, 0), r);
    const n = Math.max(0, clamp(attrInt(attrs, 'end', r)) - clamp(attrInt(attrs, 'start', 0)));
    return [{ dtype: 'int64', shape: [n] }];
  },
  grad: () => [null],
});

registerOp('Size', { infer: () => [{ dtype: 'int64', shape: [] }], grad: () => [null] });
