// Shape rules for the quantization ops the quantizer emits. Registered in the shared op table so
// the IR can build and re-load them: ai.onnx DynamicQuantizeLinear, MatMulInteger, QuantizeLinear,
// DequantizeLinear and the com.microsoft contrib ops DynamicQuantizeMatMul and MatMulNBits.
// DynamicQuantizeMatMul and MatMulNBits also have a gradient rule for their float input A, which
// is what a LoRA step over an int8 or int4 frozen base needs (engine/lora/quantized-base.ts); the
// quantized weights have none. Their input gradient runs on a transposed quantized copy of the
// weight: an initializer built here, or a graph input registered with `transposedCopy`.

import type { Attr, DType, Graph, Value } from '../graph/ir';
import { lookupOp, registerOp, type GradContext, type ValueInfo } from '../graph/registry';
import '../autodiff/rules';

const MS = 'com.microsoft';

/** Per graph: quantized weight value name → a thunk that declares its transposed copy's inputs. */
const transposed = new WeakMap<Graph, Map<string, () => Value[]>>();

/**
 * Registers how to get the transposed copy of quantized weight `b` (a graph input): `make` is
 * called by the gradient rule, only when an input gradient is really built, and returns
 * DynamicQuantizeMatMul's [Bᵀ] or MatMulNBits' [Bᵀ, scales, zero points?].
 */
export function transposedCopy(g: Graph, b: string, make: () => Value[]): void {
  let m = transposed.get(g);
  if (!m) transposed.set(g, (m = new Map()));
  let made: Value[] | null = null;
  m.set(b, () => (made ??= make()));
}

const registeredCopy = (g: Graph, b: string): Value[] | undefined => transposed.get(g)?.get(b)?.();

function need(x: Value | null | undefined, op: string, what: string): Value {
  if (!x) throw new Error(`${op}: missing required input ${what}`);
  return x;
}

function intAttr(attrs: Record<string, Attr>, name: string, op: string, def?: number): number {
  const a = attrs[name];
  if (!a) {
    if (def === undefined) throw new Error(`${op}: missing attribute ${name}`);
    return def;
  }
  if (a.type !== 'int') throw new Error(`${op}: attribute ${name} must be an int, got ${a.type}`);
  return a.value;
}

/** MatMul's broadcasting shape rule, with another output dtype. */
function matmulShape(a: Value, b: Value, dtype: DType): ValueInfo[] {
  const def = lookupOp('MatMul');
  if (!def) throw new Error('MatMul has no shape rule (engine/autodiff/rules not loaded)');
  const [info] = def.infer([a, b], {}, a.graph);
  return [{ dtype, shape: info.shape }];
}

// y = saturate(round(x / scale) + zero_point): uint8 (or the zero point's type) by default.
registerOp('QuantizeLinear', {
  infer: (inputs, attrs) => {
    const x = need(inputs[0], 'QuantizeLinear', 'x');
    const zp = inputs[2];
    const a = attrs.output_dtype;
    let dtype: DType = zp?.dtype ?? 'uint8';
    if (a && a.type === 'int' && a.value === 3) dtype = 'int8';
    return [{ dtype, shape: x.shape }];
  },
});

registerOp('DequantizeLinear', {
  infer: (inputs) => {
    const x = need(inputs[0], 'DequantizeLinear', 'x');
    const scale = need(inputs[1], 'DequantizeLinear', 'x_scale');
    return [{ dtype: scale.dtype, shape: x.shape }];
  },
});

// Outputs: y (uint8, x's shape), y_scale (float scalar), y_zero_point (uint8 scalar).
registerOp('DynamicQuantizeLinear', {
  infer: (inputs) => {
    const x = need(inputs[0], 'DynamicQuantizeLinear', 'x');
    return [
      { dtype: 'uint8', shape: x.shape },
      { dtype: 'float32', shape: [] },
      { dtype: 'uint8', shape: [] },
    ];
  },
});

registerOp('MatMulInteger', {
  infer: (inputs) => matmulShape(need(inputs[0], 'MatMulInteger', 'A'), need(inputs[1], 'MatMulInteger', 'B'), 'int32'),
});

// A float (..., K) times int8/uint8 B (K, N) dequantized with per-column b_scale; float output.
registerOp(
  'DynamicQuantizeMatMul',
  {
    infer: (inputs) => matmulShape(need(inputs[0], 'DynamicQuantizeMatMul', 'A'), need(inputs[1], 'DynamicQuantizeMatMul', 'B'), need(inputs[0], 'DynamicQuantizeMatMul', 'A').dtype),
    grad: dynamicQuantizeMatMulGrad,
  },
  MS,
);

/**
 * Y = A·(B·diag(s)) with B int8 (K, N), zero point 0 and s per column (or one scale), so
 * dA = dY·diag(s)·Bᵀ = (dY ⊙ s)·Bᵀ: one more DynamicQuantizeMatMul on the transposed int8 copy
 * with scale 1. The copy is an initializer of its own when B is one (built once, here), else a
 * Transpose. dY is quantized per tensor at run time like any activation, which is the price of
 * running the input gradient on the int8 kernel too.
 */
function dynamicQuantizeMatMulGrad(ctx: GradContext): (Value | null)[] {
  const g = ctx.graph;
  const op = `DynamicQuantizeMatMul ${ctx.node.name}`;
  const [, b, scale, zp] = ctx.inputs;
  if (ctx.needsGrad[2] || ctx.needsGrad[4]) throw new Error(`${op}: gradients for b_scale or bias are not supported (only A's)`);
  if (!ctx.needsGrad[0]) return [null, null, null, null, null];
  if (zp && !isZeroInitializer(g, zp.name)) throw new Error(`${op}: the gradient needs B's zero point to be absent or a constant 0`);
  const B = need(b, 'DynamicQuantizeMatMul', 'B');
  const s = need(scale, 'DynamicQuantizeMatMul', 'b_scale');
  const dy = need(ctx.gradOutputs[0], 'DynamicQuantizeMatMul', 'output gradient');
  if (!B.shape || B.shape.length !== 2 || B.shape.some((d) => typeof d !== 'number')) throw new Error(`${op}: the gradient needs a 2-D B of static shape, got [${B.shape}]`);
  const [K, N] = B.shape as number[];
  const init = g.initializers.get(B.name);
  const registered = registeredCopy(g, B.name);
  let bt: Value;
  if (registered) bt = registered[0]; // (N, K), fed
  else if (init) {
    const src = init.data as Int8Array | Uint8Array;
    const data = src instanceof Int8Array ? new Int8Array(K * N) : new Uint8Array(K * N);
    for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) data[n * K + k] = src[k * N + n];
    bt = g.initializer(g.uniqueName(`${B.name}.T`), { dtype: B.dtype, dims: [N, K], data }); // (N, K)
  } else bt = g.op('Transpose', [B], { perm: [1, 0] })[0]; // (K, N) → (N, K)
  const dyScaled = g.op('Mul', [dy, s])[0]; // (..., N) ⊙ (N)
  const one = g.const({ dtype: 'float32', dims: [], data: Float32Array.of(1) }, 'one');
  const da = g.op('DynamicQuantizeMatMul', [dyScaled, bt, one], {}, { domain: MS })[0]; // (..., N) @ (N, K) → (..., K)
  return [da, null, null, null, null];
}

function isZeroInitializer(g: Graph, name: string): boolean {
  const t = g.initializers.get(name);
  return !!t && Array.from(t.data as ArrayLike<number>).every((v) => v === 0);
}

// A (..., K) float times B packed (N, k_blocks, blob); the output is (..., N) of A's dtype.
registerOp(
  'MatMulNBits',
  {
    grad: matMulNBitsGrad,
    infer: (inputs, attrs) => {
      const a = need(inputs[0], 'MatMulNBits', 'A');
      const K = intAttr(attrs, 'K', 'MatMulNBits');
      const N = intAttr(attrs, 'N', 'MatMulNBits');
      if (!a.shape) return [{ dtype: a.dtype, shape: null }];
      const last = a.shape[a.shape.length - 1];
      if (typeof last === 'number' && last !== K) throw new Error(`MatMulNBits: A ${a.name} has last dim ${last}, attribute K is ${K}`);
      return [{ dtype: a.dtype, shape: [...a.shape.slice(0, -1), N] }];
    },
  },
  MS,
);

/**
 * Y = A·W with W (K, N) the dequantized B, so dA = dY·Wᵀ: one more MatMulNBits with K and N
 * swapped on Wᵀ's own packing (N, K), which must be registered with `transposedCopy` (the packed
 * layout blocks along K, so Wᵀ is a second quantization, engine/quant/weights.ts
 * quantizeInt4Tiles). With B a graph input ORT's CPU kernel dequantizes it and runs a float GEMM.
 */
function matMulNBitsGrad(ctx: GradContext): (Value | null)[] {
  const g = ctx.graph;
  const op = `MatMulNBits ${ctx.node.name}`;
  if (ctx.needsGrad.slice(1).some(Boolean)) throw new Error(`${op}: gradients for B, scales, zero points or bias are not supported (only A's)`);
  if (!ctx.needsGrad[0]) return ctx.inputs.map(() => null);
  if (ctx.inputs[4] || ctx.inputs[5]) throw new Error(`${op}: the gradient does not support g_idx or bias inputs`);
  const copy = registeredCopy(g, need(ctx.inputs[1], 'MatMulNBits', 'B').name);
  if (!copy) throw new Error(`${op}: the input gradient needs a transposed 4-bit copy of ${ctx.inputs[1]!.name} (register one with transposedCopy)`);
  const dy = need(ctx.gradOutputs[0], 'MatMulNBits', 'output gradient');
  const K = intAttr(ctx.attrs, 'K', 'MatMulNBits');
  const N = intAttr(ctx.attrs, 'N', 'MatMulNBits');
  const attrs = { K: N, N: K, bits: intAttr(ctx.attrs, 'bits', 'MatMulNBits', 4), block_size: intAttr(ctx.attrs, 'block_size', 'MatMulNBits'), accuracy_level: intAttr(ctx.attrs, 'accuracy_level', 'MatMulNBits', 0) };
  const da = g.op('MatMulNBits', [dy, ...copy], attrs, { domain: MS })[0]; // (..., N) @ (N, K) → (..., K)
  return [da, ...ctx.inputs.slice(1).map(() => null)];
}
