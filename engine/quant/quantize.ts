// Post-training quantization of an exported inference graph: pick the Linear sites (MatMul/Gemm
// with constant weights, minus the exclude list), calibrate if the method is static, rewrite, and
// report what changed. Validation against a perplexity bound lives in validate.ts.

import './rules';
import type { Graph } from '../graph/ir';
import { EngineError } from '../errors';
import type { SessionConfig } from '../runtime';
import type { Feeds } from '../eval/lm';
import { calibrateRanges } from './calibrate';
import { QuantConfigSchema, type QuantConfig, type QuantConfigInput } from './config';
import { int4Emitter, int8DynamicEmitter, qdqEmitter } from './methods';
import { findLinearSites, rewriteSites, rewriteSitesAsync, weightBytes, type SiteEmitter, type SkippedSite } from './rewrite';

export interface QuantizedNode {
  node: string;
  weight: string;
  /** Weight as (K, N): inputs × outputs. */
  shape: [number, number];
  /** The op(s) now doing the product. */
  kernel: string;
}

export interface QuantReport {
  method: QuantConfig['method'];
  config: QuantConfig;
  quantized: QuantizedNode[];
  skipped: SkippedSite[];
  /** Initializer bytes (the weight payload of the model file) before and after. */
  weightBytesBefore: number;
  weightBytesAfter: number;
  /** before / after. */
  compression: number;
}

export interface QuantizeOptions {
  /** Batches of graph feeds for int8-static calibration (cut to calibration.batches). */
  calibration?: Feeds[];
  sessionConfig?: SessionConfig;
  /** Awaited after each quantized Linear (a heartbeat; it may throw to stop). */
  onSite?: (done: number, of: number) => void | Promise<void>;
}

function kernelName(cfg: QuantConfig): string {
  switch (cfg.method) {
    case 'int8-dynamic':
      return cfg.kernel === 'dynamic-quantize-matmul' ? 'com.microsoft.DynamicQuantizeMatMul' : 'DynamicQuantizeLinear+MatMulInteger';
    case 'int8-static':
      return `QDQ ${cfg.activationType === 'int8' ? 'S8S8' : 'U8S8'} + MatMul`;
    case 'int4':
      return `com.microsoft.MatMulNBits(bits=4, block_size=${cfg.blockSize}${cfg.symmetric ? '' : ', zero points'})`;
  }
}

/**
 * Quantizes `src` (left untouched) per `config` and returns the new graph with its report.
 * @example const { graph, report } = await quantizeGraph(exportGpt(cfg, w), { method: 'int4', blockSize: 32 })
 */
export async function quantizeGraph(src: Graph, configIn: QuantConfigInput, opts: QuantizeOptions = {}): Promise<{ graph: Graph; report: QuantReport }> {
  const parsed = QuantConfigSchema.safeParse(configIn);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new EngineError('config', `quant config: ${issue.path.join('.') || 'method'}: ${issue.message}`);
  }
  const cfg = parsed.data;
  const { sites, skipped } = findLinearSites(src, cfg.exclude);
  let emit: SiteEmitter;
  switch (cfg.method) {
    case 'int8-dynamic':
      emit = int8DynamicEmitter(cfg.kernel, cfg.reduceRange);
      break;
    case 'int4':
      emit = int4Emitter(cfg.blockSize, cfg.symmetric, cfg.accuracyLevel);
      break;
    case 'int8-static': {
      const feeds = (opts.calibration ?? []).slice(0, cfg.calibration.batches);
      if (feeds.length === 0) throw new EngineError('config', 'quant config: calibration: int8-static needs calibration batches (options.calibration is empty)');
      const activations = [...new Set(sites.map((s) => s.x))];
      const ranges = await calibrateRanges(src, activations, feeds, cfg.calibration, opts.sessionConfig);
      emit = qdqEmitter(ranges, cfg.activationType, cfg.reduceRange);
      break;
    }
  }
  const graph = opts.onSite ? await rewriteSitesAsync(src, sites, emit, opts.onSite) : rewriteSites(src, sites, emit);
  const kernel = kernelName(cfg);
  const before = weightBytes(src);
  const after = weightBytes(graph);
  return {
    graph,
    report: {
      method: cfg.method,
      config: cfg,
      quantized: sites.map((s) => ({ node: s.node.name, weight: s.weightName, shape: [s.K, s.N], kernel })),
      skipped,
      weightBytesBefore: before,
      weightBytesAfter: after,
      compression: before / after,
    },
  };
}
