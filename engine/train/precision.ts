// Mixed precision for the training step (spec `precision: fp16 | bf16`): fp32 master weights stay
// the step's `param:` inputs and the optimizer runs on them in fp32; the forward and the backward
// compute in half precision, as torch.autocast + GradScaler would.
//
// `autocast` rewrites the forward + backward nodes after autodiff has appended the backward (so
// the gradient rules never see a half dtype). Each node is put in one of three classes:
//   half     MatMul, Gemm, Add/Sub/Mul/Div, Sum, Gelu, Tanh, Erf, MultiHeadAttention, ...: every
//            float input is taken in half (a weight is Cast down once, where first read), the
//            outputs are half.
//   fp32     what AMP keeps in float32 (FP32_OPS): Softmax / LogSoftmax (attention probabilities
//            and their backward: exp of differences overflows and underflows in half), the loss
//            (SoftmaxCrossEntropyLoss and every node after it: a mean over B·T tokens), LayerNorm
//            and its statistics (ReduceMean/ReduceSum/Sqrt/Reciprocal: variances of small
//            differences lose all digits in half), ScatterND (the embedding gradient sums many
//            rows into one), constants made by ConstantOfShape / Cast-to-float (masks, counts),
//            arithmetic on values made from integers (dropout's hashed uniforms, masks, counts:
//            exact only in fp32), and every op not listed (a new op stays fp32 until someone
//            decides otherwise). The nodes a gradient rule appends for an fp32 op are fp32 too.
//            Half inputs are Cast up.
//   neutral  data movement (Reshape, Transpose, Gather, Slice, Concat, Where, ...): half when a
//            float input is half, else left in fp32.
// Two ways to materialize the result, one analysis:
//   'half'     the real thing: values change dtype and Casts are inserted; for a CUDA worker (the
//              CPU EP has no half kernels for most of these ops: docs/mixed-precision.md).
//   'emulate'  every value stays float32 and each half value is rounded through a Cast to half and
//              back (Cast float→half→float), so values round and overflow exactly as the half
//              graph's would at every op output, while kernels compute in fp32. It verifies
//              numerics on CPU; it is slower than fp32, never faster.
//
// Dynamic loss scaling (fp16 only; bf16 has fp32's range): the backward is seeded with dL/dloss =
// S = 2^(16 + e), gradients are Cast to fp32 and multiplied by 1/S; when the global gradient norm
// is not finite (some gradient overflowed), the update is skipped (params and moments keep their
// values, a Where per output), e ← e − 1 and the good-step counter resets; after `growthInterval`
// consecutive finite steps e ← e + 1. As torch.amp.GradScaler(init_scale=2^16, growth_factor=2,
// backoff_factor=0.5, growth_interval=N). The state is three float32 scalars the StepRunner
// carries and checkpoints save like the moments (exact in float32):
//   @amp.scale_exp   e (zero at the start, so S starts at 2^16)
//   @amp.good_steps  finite steps since the last change of S
//   @amp.skipped     steps skipped so far: Adam's bias correction counts applied updates only
//                    (t = step − skipped + 1), as torch's AdamW whose step() a skipped step never calls.

import { gradients } from '../autodiff/gradients';
import { cudaFallbacks, cudaKernelSource, summarizeFallbacks } from '../doctor/cuda-opset';
import { EngineError } from '../errors';
import type { DType, Graph, Node, TensorData, Value } from '../graph/ir';

export type Precision = 'fp32' | 'fp16' | 'bf16';
/** How half values are materialized (see the file comment). */
export type HalfMode = 'half' | 'emulate';

export interface MixedPrecision {
  precision: 'fp16' | 'bf16';
  mode: HalfMode;
  /** fp16: consecutive finite steps before the loss scale doubles (torch's growth_interval). */
  growthInterval?: number;
}

export const DEFAULT_GROWTH_INTERVAL = 2000;
/** log2 of the initial loss scale (torch GradScaler's init_scale 2^16). */
export const INITIAL_SCALE_LOG2 = 16;
export const AMP_STATE = { scaleExp: '@amp.scale_exp', goodSteps: '@amp.good_steps', skipped: '@amp.skipped' } as const;

const HALF_DTYPE: Record<MixedPrecision['precision'], DType> = { fp16: 'float16', bf16: 'bfloat16' };
const ONNX_TYPE: Partial<Record<DType, number>> = { float32: 1, float16: 10, bfloat16: 16 };

const HALF_OPS = new Set(['MatMul', 'Gemm', 'Add', 'Sub', 'Mul', 'Div', 'Sum', 'Neg', 'Abs', 'Max', 'Min', 'Gelu', 'FastGelu', 'Tanh', 'Erf', 'Relu', 'Sigmoid', 'MultiHeadAttention']);
const NEUTRAL_OPS = new Set(['Reshape', 'Transpose', 'Identity', 'Squeeze', 'Unsqueeze', 'Flatten', 'Slice', 'Gather', 'GatherElements', 'Split', 'Expand', 'Tile', 'Concat', 'Where', 'Pad', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Shape', 'Size']);
/** What AMP keeps in fp32 by name; any op in none of the three lists is fp32 as well. */
export const FP32_OPS = new Set(['Softmax', 'LogSoftmax', 'SoftmaxCrossEntropyLoss', 'LayerNormalization', 'SimplifiedLayerNormalization', 'ReduceMean', 'ReduceSum', 'ReduceSumSquare', 'Sqrt', 'Reciprocal', 'Pow', 'Exp', 'Log', 'ScatterND', 'ScatterElements', 'ConstantOfShape', 'Cast']);
/** Ops whose outputs, and everything computed from them in the forward, are the loss: fp32. */
const LOSS_OPS = new Set(['SoftmaxCrossEntropyLoss', 'LogSoftmax']);

type Kind = 'half' | 'fp32' | 'neutral';

const isFloat = (d: DType) => d === 'float32' || d === 'float16' || d === 'bfloat16';

/** float32 → IEEE binary16 bits, round to nearest even; overflow → ±inf, as a Cast to float16. */
export function toFloat16Bits(x: number): number {
  const f32 = new Float32Array([x]);
  const u = new Uint32Array(f32.buffer)[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    if (rest > half || (rest === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && r & 1)) r++;
  return sign | r;
}

/** IEEE binary16 bits → number. */
export function fromFloat16Bits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function toBfloat16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export const fromBfloat16Bits = (b: number): number => new Float32Array(new Uint32Array([b << 16]).buffer)[0];

/** `x` rounded to the half type and back to float32, as the emulation's Cast pair computes it. */
export function roundToHalf(x: number, precision: MixedPrecision['precision']): number {
  return precision === 'fp16' ? fromFloat16Bits(toFloat16Bits(x)) : fromBfloat16Bits(toBfloat16Bits(x));
}

export interface Autocast {
  /** The float32 value to read for `v` after the pass (a Cast up of a half value, or the emulation's rounded copy). */
  float32(v: Value): Value;
  /** Node count per class, for reports and tests. */
  counts: Record<Kind, number>;
}

export interface AutocastOptions {
  /** Nodes left exactly as they are (the loss-scale bookkeeping). */
  keep?: Set<Node>;
  /** For each node a gradient rule appended, the forward node whose rule it was (gradients' onRule). */
  ruleOf?: Map<Node, Node>;
}

/**
 * Rewrites every node of `g` into the half / fp32 classes above (call it once forward and
 * backward exist, before the optimizer). Graph inputs stay as they are: params are fp32 masters.
 */
export function autocast(g: Graph, mp: MixedPrecision, opts: AutocastOptions = {}): Autocast {
  const half = HALF_DTYPE[mp.precision];
  const emulate = mp.mode === 'emulate';
  const keep = opts.keep ?? new Set<Node>();
  const ruleOf = opts.ruleOf ?? new Map<Node, Node>();
  const isHalf = new Set<string>();
  const alias = new Map<string, string>();
  const down = new Map<string, string>();
  const up = new Map<string, string>();
  const counts: Record<Kind, number> = { half: 0, fp32: 0, neutral: 0 };

  // The loss tail: forward nodes reading (transitively) a loss op's output.
  const lossValues = new Set<string>();
  const lossNodes = new Set<Node>();
  for (const n of g.nodes) {
    if (ruleOf.has(n)) continue;
    if (LOSS_OPS.has(n.opType) || n.inputs.some((x) => lossValues.has(x))) {
      lossNodes.add(n);
      for (const o of n.outputs) if (o) lossValues.add(o);
    }
  }
  // Arithmetic on values made from integers (a Cast from int/bool, then only such values and
  // constants): dropout's uniform draws (a 24-bit hash × 2^-24: up to 2^24 before the scaling, far
  // past fp16's 65504), masks, token counts. Exact in fp32 only, so fp32.
  const fromInts = new Set<string>();
  const bookkeeping = new Set<Node>();
  for (const n of g.nodes) {
    const floats = n.inputs.filter((x) => x && isFloat(g.value(x).dtype));
    const intCast = n.opType === 'Cast' && n.inputs[0] && !isFloat(g.value(n.inputs[0]).dtype);
    if (intCast || (floats.length > 0 && floats.every((x) => fromInts.has(x) || g.initializers.has(x)) && floats.some((x) => fromInts.has(x)))) {
      bookkeeping.add(n);
      for (const o of n.outputs) if (o && isFloat(g.value(o).dtype)) fromInts.add(o);
    }
  }
  const kindOf = (n: Node): Kind => {
    const fwd = ruleOf.get(n);
    if (bookkeeping.has(n) || lossNodes.has(n) || (fwd && (lossNodes.has(fwd) || kindOf(fwd) === 'fp32'))) return 'fp32';
    if (FP32_OPS.has(n.opType)) return 'fp32';
    if (HALF_OPS.has(n.opType)) return 'half';
    if (NEUTRAL_OPS.has(n.opType)) return 'neutral';
    return 'fp32';
  };

  // Named here: the default node name counts nodes, and the node list is being rebuilt.
  let casts = 0;
  const castTo = (name: string, to: DType): string => g.op('Cast', [g.value(name)], { to: ONNX_TYPE[to]! }, { name: `amp_cast_${casts++}` })[0].name;
  const roundTrip = (name: string): string => castTo(castTo(name, half), 'float32');
  const halfConst = (t: TensorData): TensorData => {
    const src = t.data as Float32Array;
    if (emulate) return { dtype: 'float32', dims: t.dims, data: src.map((x) => roundToHalf(x, mp.precision)) };
    const bits = half === 'float16' ? toFloat16Bits : toBfloat16Bits;
    return { dtype: half, dims: t.dims, data: Uint16Array.from(src, (x) => bits(x)) };
  };
  /** `name` (float32, not half) as a half value: a converted constant, a Cast, or a rounded copy; once per value. */
  const toHalf = (name: string): string => {
    let h = down.get(name);
    if (h) return h;
    const init = g.initializers.get(name);
    if (init && init.dtype === 'float32') h = g.const(halfConst(init), `${name}_${mp.precision}`).name;
    else h = emulate ? roundTrip(name) : castTo(name, half);
    down.set(name, h);
    isHalf.add(h);
    return h;
  };
  const toFloat = (name: string): string => {
    if (emulate || !isHalf.has(name)) return name;
    let u = up.get(name);
    if (!u) up.set(name, (u = castTo(name, 'float32')));
    return u;
  };

  const nodes = g.nodes.splice(0);
  for (const n of nodes) {
    n.inputs = n.inputs.map((x) => alias.get(x) ?? x);
    if (keep.has(n)) {
      g.nodes.push(n);
      continue;
    }
    const floatIn = n.inputs.map((x) => !!x && isFloat(g.value(x).dtype));
    let kind = kindOf(n);
    if (kind === 'neutral' && !n.inputs.some((x, i) => floatIn[i] && isHalf.has(x))) kind = 'fp32';
    counts[kind]++;
    if (kind === 'fp32') {
      n.inputs = n.inputs.map((x, i) => (floatIn[i] ? toFloat(x) : x));
      g.nodes.push(n);
      continue;
    }
    n.inputs = n.inputs.map((x, i) => (floatIn[i] && !isHalf.has(x) ? toHalf(x) : x));
    g.nodes.push(n);
    for (const o of n.outputs) {
      if (!o) continue;
      const v = g.value(o);
      if (!isFloat(v.dtype)) continue;
      if (!emulate) {
        v.dtype = half;
        isHalf.add(o);
      } else if (kind === 'half') {
        const r = roundTrip(o);
        alias.set(o, r);
        isHalf.add(r);
      } else isHalf.add(o);
    }
  }
  return {
    counts,
    float32: (v) => {
      const name = alias.get(v.name) ?? v.name;
      return g.value(toFloat(name));
    },
  };
}

export interface MixedGradients {
  grads: Map<string, Value>;
  /** fp16: the update-skip condition (true when a gradient overflowed) is made from the grad norm by `skipOn`. */
  scaling: LossScaling | null;
  autocast: Autocast;
}

export interface LossScaling {
  /** True when `gradNorm` (of the unscaled fp32 gradients) is not finite: the step must not update. */
  skipOn(gradNorm: Value): Value;
  /** The step count Adam's bias correction uses: `step − skipped` (only applied updates count). */
  optimizerStep: Value;
  /** Appends the scale update and the `state_out:@amp.*` outputs; call once the grad norm exists. */
  finish(): void;
  state: { key: string; shape: number[] }[];
}

/**
 * Gradients of `loss` w.r.t. `wrt` with the forward and backward in half precision (autocast), as
 * float32 values ready for the optimizer: Cast up and, for fp16, unscaled.
 */
export function mixedGradients(g: Graph, loss: Value, wrt: Value[], step: Value, mp: MixedPrecision, opts: { recompute?: { start: number; end: number }[] } = {}): MixedGradients {
  const keep = new Set<Node>();
  const kept = <T>(build: () => T): T => {
    const before = g.nodes.length;
    const out = build();
    for (const n of g.nodes.slice(before)) keep.add(n);
    return out;
  };
  let scale: Value | null = null;
  let scaling: LossScaling | null = null;
  if (mp.precision === 'fp16') {
    const e = g.input(`state:${AMP_STATE.scaleExp}`, 'float32', []);
    const good = g.input(`state:${AMP_STATE.goodSteps}`, 'float32', []);
    const skipped = g.input(`state:${AMP_STATE.skipped}`, 'float32', []);
    scale = kept(() => g.op('Pow', [g.scalar(2), g.op('Add', [e, g.scalar(INITIAL_SCALE_LOG2)])[0]])[0]); // S = 2^(16 + e)
    const interval = mp.growthInterval ?? DEFAULT_GROWTH_INTERVAL;
    let skip: Value | null = null;
    scaling = {
      state: Object.values(AMP_STATE).map((key) => ({ key, shape: [] })),
      optimizerStep: kept(() => g.op('Sub', [step, skipped])[0]),
      skipOn: (gradNorm) => {
        // Not finite: inf (an overflowed gradient, or a sum of squares past float32) or NaN.
        skip = g.op('Or', [g.op('IsInf', [gradNorm])[0], g.op('IsNaN', [gradNorm])[0]])[0];
        return skip;
      },
      finish: () => {
        if (!skip) throw new Error('mixed precision: skipOn was never called (the optimizer must guard the update)');
        const one = g.scalar(1);
        const zero = g.scalar(0);
        const good1 = g.op('Add', [good, one])[0];
        const grow = g.op('GreaterOrEqual', [good1, g.scalar(interval)])[0];
        const eOk = g.op('Where', [grow, g.op('Add', [e, one])[0], e])[0];
        g.op('Where', [skip, g.op('Sub', [e, one])[0], eOk], {}, { outputNames: [`state_out:${AMP_STATE.scaleExp}`] });
        g.op('Where', [skip, zero, g.op('Where', [grow, zero, good1])[0]], {}, { outputNames: [`state_out:${AMP_STATE.goodSteps}`] });
        g.op('Add', [skipped, g.op('Cast', [skip], { to: 1 })[0]], {}, { outputNames: [`state_out:${AMP_STATE.skipped}`] });
        for (const k of Object.values(AMP_STATE)) g.output(g.value(`state_out:${k}`));
        g.output(g.op('Identity', [scale!], {}, { outputNames: ['loss_scale'] })[0]);
      },
    };
  }
  const ruleOf = new Map<Node, Node>();
  const raw = gradients(g, loss, wrt, {
    seed: scale ?? undefined,
    recompute: opts.recompute,
    onRule: (fwd, added) => {
      for (const n of added) ruleOf.set(n, fwd);
    },
  });
  const ac = autocast(g, mp, { keep, ruleOf });
  const inv = scale ? g.op('Div', [g.scalar(1), scale])[0] : null;
  const grads = new Map<string, Value>();
  for (const [name, v] of raw) {
    const g32 = ac.float32(v);
    grads.set(name, inv ? g.op('Mul', [g32, inv])[0] : g32);
  }
  return { grads, scaling, autocast: ac };
}

/**
 * The MixedPrecision a worker builds for a spec's `precision` (undefined for fp32 / absent): the
 * real half graph on a CUDA worker; on a CPU worker the emulation when `emulation` is on (the
 * worker's TRUTHGPT_HALF_EMULATION), else a config error naming the field: the CPU EP has no bf16
 * kernels and computes fp16 through Casts it inserts (docs/mixed-precision.md), so it is no place
 * to train in half precision.
 */
export function mixedPrecisionFor(precision: Precision | undefined, lossScale: { growthInterval: number } | undefined, ep: 'cpu' | 'cuda', emulation: boolean, field = 'precision'): MixedPrecision | undefined {
  if (precision === undefined || precision === 'fp32') return undefined;
  if (ep !== 'cuda' && !emulation) {
    throw new EngineError('config', `${field}: ${precision} training needs a CUDA worker (TRUTHGPT_EP=cuda); this worker runs the CPU execution provider (TRUTHGPT_HALF_EMULATION=1 emulates the rounding on CPU to verify numerics, not for speed)`);
  }
  return { precision, mode: ep === 'cuda' ? 'half' : 'emulate', growthInterval: lossScale?.growthInterval ?? DEFAULT_GROWTH_INTERVAL };
}

/**
 * Checks a half-precision step against the CUDA EP's kernel table (engine/doctor/cuda-opset.ts)
 * and prints, one stderr line each, the ops that would run on the CPU instead; returns the lines.
 */
export function reportCudaFallbacks(step: { graph: Graph }, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): string[] {
  const lines = summarizeFallbacks(cudaFallbacks(step.graph));
  log(lines.length ? `mixed precision: ${lines.length} op kind(s) of the step have no CUDA kernel and fall back to the CPU EP (${cudaKernelSource()}):` : `mixed precision: every op of the step has a CUDA kernel (${cudaKernelSource()})`);
  for (const l of lines) log(`  ${l}`);
  return lines;
}
