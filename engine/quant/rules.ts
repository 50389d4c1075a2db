// Shape rules for the quantization ops the quantizer emits (no gradients: quantized graphs are
// inference-only). Registered in the shared op table so the IR can build and re-load them:
// ai.onnx DynamicQuantizeLinear, MatMulInteger, QuantizeLinear, DequantizeLinear and the
// com.microsoft contrib ops DynamicQuantizeMatMul and MatMulNBits.

import type { Attr, DType, Value } from '../graph/ir';
import { lookupOp, registerOp, type ValueInfo } from '../graph/registry';
import '../autodiff/rules';

const MS = 'com.microsoft';

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
  },
  MS,
);

// A (..., K) float times B packed (N, k_blocks, blob); the output is (..., N) of A's dtype.
registerOp(
  'MatMulNBits',
  {
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
