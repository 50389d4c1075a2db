// A frozen base in int8 or int4 under LoRA (QLoRA-style, `lora.baseQuantization`): every base
// linear layer y = x·W that reads a frozen weight becomes
//
//     int8:  y = DynamicQuantizeMatMul(x, Wq, s)          Wq int8 (in, out), s (out): W ≈ Wq·diag(s)
//     int4:  y = MatMulNBits(x, P, s[, zp])                P: 4-bit codes of W in tiles of bs × bs
//
// with the quantized tensors fed as `frozen:` graph INPUTS (`<param>.int8`, `<param>.q4`, ...),
// not initializers: ORT then keeps no copy of its own and prepacks nothing, and the caller can
// drop the float weights once `quantizeBase` has run (gpt-base.ts reloads them for merge/export).
// The input gradient runs on a transposed quantized copy, fed too, declared only for the layers
// whose input gradient is really built (engine/quant/rules.ts `transposedCopy`):
//
//     int8:  dx = DynamicQuantizeMatMul(dy ⊙ s, Wqᵀ, 1)
//     int4:  dx = MatMulNBits(dy, Pᵀ, s[, zp])             Pᵀ: the same tiles, packed along out
//
// int8 is symmetric per output channel (engine/quant/weights.ts, the post-training quantizer).
// int4 shares one scale (and zero point) per square tile, so Pᵀ holds exactly the codes of P and
// the backward is the exact gradient of the quantized forward (quantizeInt4Tiles). With its weight
// an input, ORT's CPU MatMulNBits dequantizes it per call and runs a float GEMM (accuracy level
// ignored; measured equal to a float MatMul on the dequantized weight to 3e-7).
// Adapters stay float32; embeddings and a tied head stay float (they are not MatMuls on a 2-D weight).

import type { Graph, TensorData } from '../graph/ir';
import { transposedCopy } from '../quant/rules';
import { quantizeInt4Tiles, quantizeInt8PerChannel, type Int4Weights } from '../quant/weights';
import { findLinearSites, type ModuleNamer } from './targets';

const MS = 'com.microsoft';

export interface BaseQuantOptions {
  kind: 'int8' | 'int4';
  /** int4: tile edge (32 or 128; default 32). */
  blockSize?: number;
  /** int4: symmetric codes (no zero points; default) or asymmetric with a zero point per tile. */
  symmetric?: boolean;
}

/** One quantized linear weight (in, out) = (K, N) and the tensors a step feeds for it. */
export interface QuantizedLinear {
  K: number;
  N: number;
  /** Forward tensors, by input name without `frozen:`, in the op's input order after x. */
  forward: [string, TensorData][];
  /** The transposed copy for the input gradient, likewise. */
  transposed: [string, TensorData][];
}

/** A frozen base's linear layers, quantized once; nothing of it is a float copy of W. */
export interface QuantizedBase {
  kind: 'int8' | 'int4';
  blockSize: number;
  /** By base parameter name (`h.0.attn.c_attn.weight`). */
  linears: Map<string, QuantizedLinear>;
}

/**
 * Quantizes the (in, out) weights of `weights` that `shapes` names. The float arrays are only
 * read, so the caller may drop them afterwards.
 * @example const q = quantizeBase(weights, quantizableWeights(base), { kind: 'int4', blockSize: 32 })
 */
export function quantizeBase(weights: Map<string, Float32Array>, shapes: Map<string, number[]>, opts: BaseQuantOptions): QuantizedBase {
  const bs = opts.blockSize ?? 32;
  if (opts.kind === 'int4' && bs !== 32 && bs !== 128) throw new Error(`lora.baseBlockSize: must be 32 or 128, got ${bs}`);
  const linears = new Map<string, QuantizedLinear>();
  for (const [name, shape] of shapes) {
    const W = weights.get(name);
    if (!W) throw new Error(`lora.baseQuantization: the base has no weight ${name}`);
    const [K, N] = shape;
    if (shape.length !== 2 || W.length !== K * N) throw new Error(`lora.baseQuantization: weight ${name} has ${W.length} values, expected [${shape}]`);
    if (opts.kind === 'int8') {
      const { q, scale } = quantizeInt8PerChannel(W, K, N);
      const qt = new Int8Array(K * N);
      for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) qt[n * K + k] = q[k * N + n];
      linears.set(name, {
        K,
        N,
        forward: [
          [`${name}.int8`, { dtype: 'int8', dims: [K, N], data: q }], // (in, out)
          [`${name}.scale`, { dtype: 'float32', dims: [N], data: scale }], // (out)
        ],
        transposed: [[`${name}.int8T`, { dtype: 'int8', dims: [N, K], data: qt }]], // (out, in)
      });
    } else {
      const t = quantizeInt4Tiles(W, K, N, bs, opts.symmetric ?? true);
      linears.set(name, { K, N, forward: nbitsTensors(`${name}.q4`, t.forward, N), transposed: nbitsTensors(`${name}.q4T`, t.transposed, K) });
    }
  }
  return { kind: opts.kind, blockSize: bs, linears };
}

/** MatMulNBits' B (rows, kBlocks, blob), scales (rows·kBlocks) and zero points, as fed tensors. */
function nbitsTensors(stem: string, w: Int4Weights, rows: number): [string, TensorData][] {
  const out: [string, TensorData][] = [
    [stem, { dtype: 'uint8', dims: [rows, w.kBlocks, w.blob], data: w.packed }],
    [`${stem}.scales`, { dtype: 'float32', dims: [rows * w.kBlocks], data: w.scales }],
  ];
  if (w.zeroPoints) out.push([`${stem}.zp`, { dtype: 'uint8', dims: [w.zeroPoints.length], data: w.zeroPoints }]);
  return out;
}

/** Every tensor a step over `q` may feed, by input name without `frozen:` (TrainableModel.fixed). */
export function quantizedInputs(q: QuantizedBase): Map<string, TensorData> {
  return new Map([...q.linears.values()].flatMap((l) => [...l.forward, ...l.transposed]));
}

/** Bytes of the quantized base (forward and transposed copies). */
export function quantizedBytes(q: QuantizedBase): number {
  let n = 0;
  for (const t of quantizedInputs(q).values()) n += t.data.byteLength;
  return n;
}

/**
 * Rewrites, in place, every MatMul of `g` whose weight value `paramOf` maps to a linear of `q`
 * into its quantized op over `frozen:` inputs. Returns the weight values it replaced, which the
 * graph then no longer reads.
 */
export function quantizeLinearsAsInputs(g: Graph, q: QuantizedBase, paramOf: (value: string) => string | undefined): string[] {
  const namer: ModuleNamer = (weight) => (paramOf(weight) !== undefined && q.linears.has(paramOf(weight)!) ? weight : null);
  const replaced: string[] = [];
  const input = ([name, t]: [string, TensorData]) => g.values.get(`frozen:${name}`) ?? g.input(`frozen:${name}`, t.dtype, t.dims);
  for (const site of findLinearSites(g, namer)) {
    const node = site.node;
    if (node.opType !== 'MatMul') continue; // Gemm sites (transposed or scaled weights) stay float
    const lin = q.linears.get(paramOf(site.weight)!)!;
    if (lin.K !== site.inFeatures || lin.N !== site.outFeatures) throw new Error(`lora.baseQuantization: ${site.weight} is ${site.inFeatures}×${site.outFeatures} in the graph, ${lin.K}×${lin.N} quantized`);
    const fwd = lin.forward.map(input);
    // Same node object, new op: its outputs, its place in the graph and every consumer stay.
    node.domain = MS;
    if (q.kind === 'int8') {
      node.opType = 'DynamicQuantizeMatMul';
      node.inputs = [node.inputs[0], ...fwd.map((v) => v.name)]; // (..., in) @ (in, out) → (..., out)
    } else {
      node.opType = 'MatMulNBits';
      node.inputs = [node.inputs[0], ...fwd.map((v) => v.name)]; // (..., in) @ deq(P) (in, out) → (..., out)
      node.attrs = { K: { type: 'int', value: lin.K }, N: { type: 'int', value: lin.N }, bits: { type: 'int', value: 4 }, block_size: { type: 'int', value: q.blockSize }, accuracy_level: { type: 'int', value: 0 } };
    }
    transposedCopy(g, fwd[0].name, () => lin.transposed.map(input));
    replaced.push(site.weight);
  }
  if (replaced.length && !g.opsets.has(MS)) g.opsets.set(MS, 1);
  return replaced;
}

/**
 * Rewrites, in place, every MatMul of `g` whose weight `weightOf` knows (an imported graph's
 * float initializer) into an int8 DynamicQuantizeMatMul over int8 initializers. Returns the value
 * names of the weights it replaced, which the graph then no longer reads.
 * @example quantizeFrozenLinears(g, (v) => floatInitializer(g, v))
 */
export function quantizeFrozenLinears(g: Graph, weightOf: (value: string) => Float32Array | undefined): string[] {
  const namer: ModuleNamer = (weight) => (weightOf(weight) ? weight : null);
  const replaced = new Set<string>();
  for (const site of findLinearSites(g, namer)) {
    const node = site.node;
    if (node.opType !== 'MatMul') continue;
    const W = weightOf(site.weight)!;
    const [K, N] = [site.inFeatures, site.outFeatures];
    if (W.length !== K * N) throw new Error(`lora.baseQuantization: weight ${site.weight} has ${W.length} values, expected ${K}×${N}`);
    const { q, scale } = quantizeInt8PerChannel(W, K, N);
    const stem = site.weight.replace(/^frozen:/, '');
    const wq = g.initializer(g.uniqueName(`${stem}.int8`), { dtype: 'int8', dims: [K, N], data: q }); // (in, out)
    const ws = g.initializer(g.uniqueName(`${stem}.scale`), { dtype: 'float32', dims: [N], data: scale }); // (out)
    node.opType = 'DynamicQuantizeMatMul';
    node.domain = MS;
    node.inputs = [node.inputs[0], wq.name, ws.name]; // (..., in) @ (in, out) → (..., out)
    replaced.add(site.weight);
  }
  if (replaced.size && !g.opsets.has(MS)) g.opsets.set(MS, 1);
  return [...replaced];
}
