// `ortMemory`: how onnxruntime allocates a training step's memory, a field of training specs and of
// a fine-tune's `train`. It reaches the step session only (not evaluation sessions) and changes
// allocation, never arithmetic: a step gives the same bits either way (test/engine/ort-memory.test.ts).
//   pattern  ORT's memory pattern (enableMemPattern): from the second run on it allocates one block
//            planned from the first run, while the arena still holds the first run's blocks.
//   arena    ORT's CPU memory arena (enableCpuMemArena): freed blocks are kept for reuse.
// Both default on (ORT's defaults, what every step ran with before the field existed). Measured at
// medium size (bench/RESULTS.md, "ORT memory options"): both off cut a LoRA step's peak RSS.

import { z } from 'zod';

export const OrtMemorySchema = z
  .strictObject({
    pattern: z.boolean().default(true),
    arena: z.boolean().default(true),
  })
  .optional();
export type OrtMemory = z.output<typeof OrtMemorySchema>;

/** True when `o` asks for something other than ORT's defaults (absent: the defaults). */
export const ortMemoryIsDefault = (o: OrtMemory): boolean => o === undefined || (o.pattern && o.arena);

/**
 * Session options for a step session (engine/runtime SessionConfig's memPattern / cpuArena); empty
 * for the defaults, so the session is created exactly as before.
 */
export function ortMemorySession(o: OrtMemory): { memPattern?: boolean; cpuArena?: boolean } {
  return ortMemoryIsDefault(o) ? {} : { memPattern: o!.pattern, cpuArena: o!.arena };
}

/**
 * A compiled-step cache key with the options appended only when they differ from the defaults, so
 * keys of existing specs (and a worker's cached sessions) stay as they were.
 */
export const ortMemoryKey = (key: string, o: OrtMemory): string => (ortMemoryIsDefault(o) ? key : `${key}|ortMemory:${o!.pattern ? 'pattern' : 'nopattern'},${o!.arena ? 'arena' : 'noarena'}`);
