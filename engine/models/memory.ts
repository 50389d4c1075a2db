// How much memory one GPT training step needs, estimated before anything is allocated, so that a
// spec which cannot fit is refused when it is parsed (spec/training.ts) and a worker refuses to
// compile a step that cannot fit it (engine/train/shard.ts compileLmTrainStep).
//
//   bytes ≈ 4·P·S  +  2 · 4·(L·N·(A·C + M·H + K·n_head·T) + 2·N·V)  +  BASE + L·LAYER
//
//   P        parameters (counted in closed form below; equal to countParams(gptParams(cfg)))
//   S        parameter-sized float32 buffers alive at the peak of a step, 6.5 + 3.5·k for an
//            optimizer with k moments (AdamW k = 2: 13.5; SGD with momentum 10; without 6.5):
//              the weights the step reads, and the StepRunner's second set it writes (two buffer
//                sets swap roles every step, engine/runtime/step-runner.ts)            2 (+ 2k)
//              the copy of every param_out/state_out onnxruntime-node returns from a run
//                (step-runner.ts: a binding limit; dropped, but alive at the peak)    1 (+ k)
//              the weights the runner was loaded from (a checkpoint's, held by the caller)     1
//              gradients inside ORT                                                             1
//              ORT's temporaries for clipping and the update (measured, not derived)  1.5 (+ k/2)
//   N = B·T  rows of a batch; C = n_embd, H = the MLP's hidden width (×2 for SwiGLU's gate and
//            up), T = the context length, V = vocab_size, L = n_layer.
//   L·N·(…)  what the forward keeps for the backward, per layer (engine/models/gpt.ts block): the
//            residual stream, both norm outputs, qkv and its per-head transposes, the scaled q,
//            the attention output and its merge, the projections: about A = 14 rows of C; the
//            MLP's pre-activation and activation, M = 2 rows of H; the attention probabilities and
//            the scores or their gradient, K = 2 (B, n_head, T, T) tensors.
//            With `attention: 'fused'` (engine/autodiff/rules/attention.ts) no (T, T) tensor is
//            kept for the backward, which recomputes one block of 128 query rows at a time; the
//            measured peaks still hold about one (B, n_head, T, T) float tensor per layer more than
//            the rest of the formula (measured, not derived: what holds it inside ORT was not
//            identified), so K = 0.5 (counted twice like the rest: one tensor per layer).
//   2·N·V    logits and their softmax (the loss keeps both for the backward).
//   2 · …    from the second step on, ORT runs from a memory pattern (one block planned from the
//            first run) while its arena keeps the first run's blocks: activations count twice.
//            With `ortMemory: { pattern: false, arena: false }` they count once (either alone: twice).
//   Activation checkpointing, k blocks per recomputed segment (`block`: k = 1): L·N·(…) becomes
//            ⌈L/k⌉·N·C (each segment's input) + min(L, 2k)·N·(…) (a segment's recomputed blocks and
//            their gradients while its backward runs; fitted, not derived: 2k, not k, matched).
//   BASE     Node, onnxruntime and a session's fixed cost (160 MiB), and LAYER = 2.2 MiB per
//            layer: the graph in JS, its ONNX bytes and ORT's session hold about 200 nodes per
//            layer (≈ 11 KiB each). A 10 000-layer model needs 21 GiB before its first step.
//
// Measured against peak RSS (VmHWM) of real steps, `npm run bench -- memory` (bench/RESULTS.md):
// 2026-12-02, AMD EPYC (AVX2), 2 cores shared with other jobs, onnxruntime-node 1.30 CPU, 4 steps
// each; peak RSS includes Node itself (about 100 MiB). The first four sizes fitted S, K and LAYER;
// the last three were predicted before they ran.
//
//   size                                        params   estimate   measured   est / meas
//   6L×512, V 8192, B 4 × T 64, AdamW           23.1 M   1541 MiB   1593 MiB   0.97
//   the same with SGD (no momentum)             23.1 M    923 MiB    920 MiB   1.00
//   4L×128, V 256, B 16 × T 512, AdamW           0.9 M   1975 MiB   1921 MiB   1.03
//   200L×32, V 259, B 8 × T 32, AdamW            2.6 M   1057 MiB    862 MiB   1.23
//   tiny-gpt 2L×64, B 8 × T 64, AdamW            0.1 M    188 MiB    167 MiB   1.12
//   6L×384, V 256, B 8 × T 256, AdamW           10.8 M   1820 MiB   1799 MiB   1.01
//   Llama-style 4L×256 (RoPE, RMSNorm, SwiGLU,
//     GQA 8/2, untied), V 2048, B 8 × T 128      3.8 M    660 MiB    649 MiB   1.02
//
// Fused attention, the same way (2026-12-03, AVX-512 EPYC, load 4–6): K = 0.5 was fitted on the
// first row (two runs); the second was predicted. Explicit at the same sizes: 3109 MiB (est / meas
// 1.24: the explicit K = 2 over-counts at T 1024) and 1632 MiB (1.11).
//
//   6L×384, 12 heads, V 256, B 2 × T 1024, fused  11.1 M   2123 MiB   2068, 2081 MiB   1.03, 1.02
//   6L×384, 6 heads, V 256, B 8 × T 256, fused    10.8 M   1604 MiB   1635 MiB         0.98
//
// Checkpointing and the ORT memory options, the same way (2026-12-03 14:41–14:48 UTC, load 9–11;
// `npm run bench -- memory --ac <off|block> --ort-memory <default|off>`): est / meas over tiny,
// medium, activations, params and llama, with the default rows of the same run at 1.04–1.13:
//
//   checkpointing off,   pattern + arena off    1.15 1.18 1.18 1.09 1.14
//   checkpointing block, ORT default            1.14 1.06 1.14 0.97 1.07
//   checkpointing block, pattern + arena off    1.19 1.20 1.19 1.09 1.04
//
// The estimate is for one training session; a worker also holds what else it has cached (an
// evaluation session, other specs' steps), which the limit's headroom has to cover.

import type { ActivationCheckpointing } from '../train/checkpointing';
import type { GptConfig } from './gpt';
import { gptOptions } from './gpt';

/** Floats the forward keeps per row and per layer, in units of C, H and n_head·T (A, M, K above; K with fused attention). */
export const ACTIVATION_ROWS = { perEmbd: 14, perHidden: 2, perAttention: 2, perAttentionFused: 0.5 } as const;
/** Node, onnxruntime and a session's fixed cost. */
export const BASE_BYTES = 160 * 2 ** 20;
/** Graph, ONNX bytes and session bookkeeping per layer (about 200 nodes). */
export const PER_LAYER_BYTES = 2.2 * 2 ** 20;

/** The optimizer as the estimate needs it: its kind, and for SGD whether it keeps momentum. */
export type OptimizerMemoryKind = { kind: 'adamw' } | { kind: 'sgd'; momentum?: number };

export interface TrainStepMemory {
  /** Total estimate in bytes. */
  bytes: number;
  params: number;
  /** Parameter-sized float32 buffers alive at the peak (S above). */
  paramCopies: number;
  paramBytes: number;
  activationBytes: number;
  baseBytes: number;
}

/** Parameters of a GPT config in closed form (the same count as countParams(gptParams(cfg)), without building the list). */
export function gptParamCount(cfg: GptConfig): number {
  const o = gptOptions(cfg);
  const C = cfg.n_embd;
  const kvC = o.nKvHead * (C / cfg.n_head);
  const bias = cfg.bias ? 1 : 0;
  const normP = C * (o.norm === 'layernorm' && cfg.bias ? 2 : 1);
  const fcOut = o.mlp === 'swiglu' ? 2 * o.nInner : o.nInner;
  const layer = 2 * normP + C * (C + 2 * kvC) + bias * (C + 2 * kvC) + C * C + bias * C + C * fcOut + bias * fcOut + o.nInner * C + bias * C;
  const embed = cfg.vocab_size * C + (o.pos === 'learned' ? cfg.block_size * C : 0);
  return embed + cfg.n_layer * layer + normP + (o.tie ? 0 : cfg.vocab_size * C);
}

/** Optimizer moments per parameter: AdamW m and v; SGD its momentum buffer when it has one. */
export function optimizerSlots(opt: OptimizerMemoryKind): number {
  return opt.kind === 'adamw' ? 2 : (opt.momentum ?? 0) > 0 ? 1 : 0;
}

/**
 * Bytes one training step of `cfg` at batch (B, T) needs at its peak, with the formula and the
 * assumptions stated at the top of this file.
 * @example estimateTrainStepBytes(getPreset('tiny-gpt').config as GptConfig, 8, 64, { kind: 'adamw' }).bytes
 */
export interface TrainStepMemoryOptions {
  /** The step's activation checkpointing (training.activationCheckpointing); default off. */
  activationCheckpointing?: ActivationCheckpointing;
  /**
   * ORT's memory pattern and CPU arena on the step session (a spec's `ortMemory`; both on by
   * default, as ORT's). Only both off is credited: the one setting measured (bench memory
   * --ort-memory off); either alone counts as the default.
   */
  ortMemory?: { pattern: boolean; arena: boolean };
}

export function estimateTrainStepBytes(cfg: GptConfig, batchSize: number, contextLength: number, optimizer: OptimizerMemoryKind, opts: TrainStepMemoryOptions = {}): TrainStepMemory {
  const o = gptOptions(cfg);
  const P = gptParamCount(cfg);
  const k = optimizerSlots(optimizer);
  const paramCopies = 6.5 + 3.5 * k;
  const N = batchSize * contextLength;
  const hidden = o.mlp === 'swiglu' ? 2 * o.nInner : o.nInner;
  const K = cfg.attention === 'fused' ? ACTIVATION_ROWS.perAttentionFused : ACTIVATION_ROWS.perAttention;
  const perLayer = N * (ACTIVATION_ROWS.perEmbd * cfg.n_embd + ACTIVATION_ROWS.perHidden * hidden + K * cfg.n_head * contextLength);
  // Checkpointing k blocks per segment keeps each segment's input (N, C) and, while a segment's
  // backward runs, its k recomputed blocks and their gradients: about 2k layers' worth, at most L.
  const ac = opts.activationCheckpointing ?? 'off';
  const perSegment = ac === 'off' ? 0 : ac === 'block' ? 1 : ac;
  const segments = perSegment ? Math.ceil(cfg.n_layer / perSegment) : 0;
  const layersAlive = perSegment ? Math.min(cfg.n_layer, 2 * perSegment) : cfg.n_layer;
  const copies = opts.ortMemory && !opts.ortMemory.pattern && !opts.ortMemory.arena ? 1 : 2;
  const activationBytes = copies * 4 * (segments * N * cfg.n_embd + layersAlive * perLayer + 2 * N * cfg.vocab_size);
  const paramBytes = 4 * P * paramCopies;
  const baseBytes = BASE_BYTES + cfg.n_layer * PER_LAYER_BYTES;
  return { bytes: paramBytes + activationBytes + baseBytes, params: P, paramCopies, paramBytes, activationBytes, baseBytes };
}

/** `bytes` in GiB with one decimal, as error messages print it. */
export const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
