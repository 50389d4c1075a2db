// LoraConfig: the one schema for low-rank adapters. Field names are PEFT's LoraConfig keys (r,
// lora_alpha, lora_dropout, target_modules, use_rslora, fan_in_fan_out, bias) so a config maps
// one to one onto adapter_config.json; `family` and `seed` are ours (defaults, init, dropout).

import { z } from 'zod';
import { EngineError } from '../errors';

export const MODEL_FAMILIES = ['gpt', 'bert', 't5'] as const;
export type ModelFamily = (typeof MODEL_FAMILIES)[number];

/** PEFT's default target modules per architecture (peft/utils/constants.py, gpt2 / bert / t5). */
export const DEFAULT_TARGETS: Record<ModelFamily, string[]> = {
  gpt: ['c_attn'],
  bert: ['query', 'value'],
  t5: ['q', 'v'],
};

/** How a LoRA step stores the frozen base's linear weights (see `baseQuantization`). */
export const BASE_QUANTIZATIONS = ['none', 'int8', 'int4'] as const;
export type BaseQuantization = (typeof BASE_QUANTIZATIONS)[number];

export const LoraConfigSchema = z
  .strictObject({
    r: z.number().int().positive().default(8),
    lora_alpha: z.number().positive().default(8),
    lora_dropout: z.number().min(0).lt(1).default(0),
    /**
     * A list matches a module whose name equals an entry or ends with `.<entry>` (PEFT's rule);
     * a single string is a regular expression the whole name must match; `all-linear` picks
     * every linear layer except the output head. Absent: the family's PEFT default.
     */
    target_modules: z.union([z.array(z.string().min(1)).min(1), z.string().min(1)]).optional(),
    /** rsLoRA (Kalajdzievski 2023): scale alpha/√r instead of alpha/r, stable at large r. */
    use_rslora: z.boolean().default(false),
    /** Only 'none' is supported: base biases stay frozen and no adapter bias is trained. */
    bias: z.literal('none').default('none'),
    family: z.enum(MODEL_FAMILIES).optional(),
    /** Seeds A's Kaiming-uniform init and the dropout masks. */
    seed: z.number().int().nonnegative().default(0),
    /**
     * Keep the frozen base's linear layers in int8 or int4 while training (QLoRA-style,
     * quantized-base.ts): quantized matmuls forward and for the input gradient, the quantized
     * weights fed as inputs and no float copy of them in the step. Absent: 'none' (float32).
     * Evaluation and merging use the float base.
     */
    baseQuantization: z.enum(BASE_QUANTIZATIONS).optional(),
    /** int4 base: edge of the square tiles that share one scale (32 or 128). Absent: 32. */
    baseBlockSize: z.union([z.literal(32), z.literal(128)]).optional(),
    /** int4 base: symmetric codes (true, absent) or a zero point per tile (false). */
    baseSymmetric: z.boolean().optional(),
  })
  .superRefine((c, ctx) => {
    for (const k of ['baseBlockSize', 'baseSymmetric'] as const) {
      if (c[k] !== undefined && c.baseQuantization !== 'int4') ctx.addIssue({ code: 'custom', path: [k], message: `only applies to baseQuantization: int4 (got ${c.baseQuantization ?? 'none'})` });
    }
    if (typeof c.target_modules === 'string' && c.target_modules !== 'all-linear') {
      try {
        new RegExp(c.target_modules);
      } catch (e) {
        ctx.addIssue({ code: 'custom', path: ['target_modules'], message: `not a valid regular expression: ${(e as Error).message}` });
      }
    }
  });
export type LoraConfig = z.infer<typeof LoraConfigSchema>;
export type LoraConfigInput = z.input<typeof LoraConfigSchema>;

/** The factor on (x·Aᵀ)·Bᵀ: alpha/r, or alpha/√r with rsLoRA. */
export function loraScale(cfg: Pick<LoraConfig, 'r' | 'lora_alpha' | 'use_rslora'>): number {
  return cfg.use_rslora ? cfg.lora_alpha / Math.sqrt(cfg.r) : cfg.lora_alpha / cfg.r;
}

/** Parses a config and names the offending field in the error (`lora.r: ...`). */
export function parseLoraConfig(input: unknown, where = 'lora'): LoraConfig {
  const res = LoraConfigSchema.safeParse(input);
  if (res.success) return res.data;
  const msg = res.error.issues.map((i) => `${[where, ...i.path].join('.')}: ${i.message}`).join('; ');
  throw new EngineError('config', msg);
}

/** Adapter tensor names inside our graphs and checkpoints: `<module>.lora_A.weight` (r, in), `<module>.lora_B.weight` (out, r). */
export const loraAName = (module: string) => `${module}.lora_A.weight`;
export const loraBName = (module: string) => `${module}.lora_B.weight`;
export const isAdapterParam = (name: string) => name.endsWith('.lora_A.weight') || name.endsWith('.lora_B.weight');
