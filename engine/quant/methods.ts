// The three quantized forms of a Linear site, as emitters for rewriteSites:
//   int8 dynamic  – int8 per-channel weights, activations quantized at run time;
//   int8 static   – QDQ pairs with calibrated activation ranges (ORT fuses them into integer kernels);
//   int4          – com.microsoft.MatMulNBits, 4-bit block-wise weights, float activations.
// Every emitted node gets a name under the original node's ("<node>/q_…"), so new value names can
// never collide with names the rest of the graph uses.

import { tensor, type Graph, type Value } from '../graph/ir';
import type { LinearSite, SiteEmitter } from './rewrite';
import { quantizeInt4Blocks, quantizeInt8PerChannel } from './weights';

const MS = 'com.microsoft';
const FLOAT = 1; // TensorProto.FLOAT, for Cast

function namer(out: Graph, site: LinearSite) {
  return {
    node: (tag: string) => ({ name: `${site.node.name}/q_${tag}` }),
    init: (tag: string) => out.uniqueName(`${site.weightName}/q_${tag}`),
  };
}

export function int8DynamicEmitter(kernel: 'dynamic-quantize-matmul' | 'matmul-integer', reduceRange: boolean): SiteEmitter {
  return (site, out, x) => {
    const { q, scale } = quantizeInt8PerChannel(site.W, site.K, site.N, reduceRange);
    const nm = namer(out, site);
    const wq = out.initializer(nm.init('int8'), { dtype: 'int8', dims: [site.K, site.N], data: q });
    const ws = out.initializer(nm.init('scale'), { dtype: 'float32', dims: [site.N], data: scale });
    if (kernel === 'dynamic-quantize-matmul') {
      return out.op('DynamicQuantizeMatMul', [x, wq, ws], {}, { domain: MS, ...nm.node('dqmm') })[0]; // (..., K) @ (K, N) → (..., N)
    }
    const [xq, xs, xzp] = out.op('DynamicQuantizeLinear', [x], {}, nm.node('dql')); // uint8 (..., K), scalar scale, scalar zp
    const acc = out.op('MatMulInteger', [xq, wq, xzp], {}, nm.node('mmi'))[0]; // int32 (..., N)
    const accF = out.op('Cast', [acc], { to: FLOAT }, nm.node('cast'))[0];
    const rescale = out.op('Mul', [xs, ws], {}, nm.node('scale'))[0]; // (N): x_scale · w_scale[n]
    return out.op('Mul', [accF, rescale], {}, nm.node('rescale'))[0];
  };
}

/** Activation quantization parameters from a calibrated range [lo, hi]. */
export interface ActivationQParams {
  scale: number;
  zeroPoint: number;
}

export function activationQParams(lo: number, hi: number, type: 'int8' | 'uint8', reduceRange: boolean): ActivationQParams {
  const [qmin, qmax] = type === 'int8' ? (reduceRange ? [-64, 63] : [-128, 127]) : reduceRange ? [0, 127] : [0, 255];
  // The range must contain 0 so that zero (padding, ReLU floors) is exact.
  const a = Math.min(lo, 0);
  const b = Math.max(hi, 0);
  const scale = b > a ? (b - a) / (qmax - qmin) : 1;
  const zeroPoint = Math.max(qmin, Math.min(qmax, Math.round(qmin - a / scale)));
  return { scale: Math.fround(scale), zeroPoint };
}

/**
 * S8S8 (or U8S8) QDQ: x → QuantizeLinear → DequantizeLinear, weight int8 per-channel →
 * DequantizeLinear(axis 1), then the original float MatMul. One activation pair is shared by all
 * sites reading the same tensor (q, k, v projections of one input).
 */
export function qdqEmitter(ranges: Map<string, { lo: number; hi: number }>, type: 'int8' | 'uint8', reduceRange: boolean): SiteEmitter {
  const shared = new Map<string, Value>();
  return (site, out, x) => {
    const nm = namer(out, site);
    let xdq = shared.get(x.name);
    if (!xdq) {
      const r = ranges.get(x.name);
      if (!r) throw new Error(`int8-static: no calibration range for activation "${x.name}" (input of ${site.node.name})`);
      const qp = activationQParams(r.lo, r.hi, type, reduceRange);
      const s = out.initializer(out.uniqueName(`${x.name}/q_scale`), tensor('float32', [], [qp.scale]));
      const zp = out.initializer(out.uniqueName(`${x.name}/q_zero_point`), tensor(type, [], [qp.zeroPoint]));
      const xq = out.op('QuantizeLinear', [x, s, zp], {}, nm.node('q'))[0];
      xdq = out.op('DequantizeLinear', [xq, s, zp], {}, nm.node('dq'))[0];
      shared.set(x.name, xdq);
    }
    const { q, scale } = quantizeInt8PerChannel(site.W, site.K, site.N, reduceRange);
    const wq = out.initializer(nm.init('int8'), { dtype: 'int8', dims: [site.K, site.N], data: q });
    const ws = out.initializer(nm.init('scale'), { dtype: 'float32', dims: [site.N], data: scale });
    const wzp = out.initializer(nm.init('zero_point'), { dtype: 'int8', dims: [site.N], data: new Int8Array(site.N) });
    const wdq = out.op('DequantizeLinear', [wq, ws, wzp], { axis: 1 }, nm.node('wdq'))[0]; // (K, N) float
    return out.op('MatMul', [xdq, wdq], {}, nm.node('matmul'))[0]; // (..., K) @ (K, N) → (..., N)
  };
}

export function int4Emitter(blockSize: number, symmetric: boolean, accuracyLevel: number): SiteEmitter {
  return (site, out, x) => {
    const w = quantizeInt4Blocks(site.W, site.K, site.N, blockSize, symmetric);
    const nm = namer(out, site);
    const b = out.initializer(nm.init('int4'), { dtype: 'uint8', dims: [site.N, w.kBlocks, w.blob], data: w.packed });
    const s = out.initializer(nm.init('scales'), { dtype: 'float32', dims: [site.N * w.kBlocks], data: w.scales });
    const inputs = [x, b, s];
    if (w.zeroPoints) inputs.push(out.initializer(nm.init('zero_points'), { dtype: 'uint8', dims: [w.zeroPoints.length], data: w.zeroPoints }));
    const attrs = { K: site.K, N: site.N, bits: 4, block_size: blockSize, accuracy_level: accuracyLevel };
    return out.op('MatMulNBits', inputs, attrs, { domain: MS, ...nm.node('nbits') })[0]; // (..., K) @ dequant(B)ᵀ → (..., N)
  };
}
