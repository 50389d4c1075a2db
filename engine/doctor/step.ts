// A tiny real training step on the device a worker will use: the tiny-gpt preset's whole step
// graph (forward, autodiff backward, AdamW) compiled into one ORT session and run a few times.
// It is the only proof that ORT really loads the provider and the device computes finite numbers.

import { performance } from 'node:perf_hooks';
import { tensor } from '../graph/ir';
import { mulberry32 } from '../data/random';
import { gptParams, gptTrainLoss, type GptConfig } from '../models/gpt';
import { getPreset } from '../models/presets';
import { OptimConfigSchema } from '../optim';
import type { ExecutionProvider } from '../runtime/session';
import { buildTrainStep } from '../train/step';
import { Trainer, type Batch } from '../train/trainer';

export const TINY_STEP = { preset: 'tiny-gpt', batch: 2, seq: 32, steps: 3 } as const;

export interface TinyStepResult {
  ep: ExecutionProvider;
  deviceId: number;
  /** Graph build + session creation (kernel setup included). */
  compileMs: number;
  /** Wall time of each step; the first one includes ORT's first-run allocations. */
  stepMs: number[];
  losses: number[];
}

/**
 * Builds and runs `TINY_STEP.steps` training steps of tiny-gpt on `ep` (device `deviceId` for
 * cuda). Throws what createSession throws (CudaUnavailableError naming a missing library), or a
 * plain Error for a non-finite loss.
 */
export async function runTinyStep(ep: ExecutionProvider, deviceId = 0): Promise<TinyStepResult> {
  const cfg = getPreset(TINY_STEP.preset).config as GptConfig;
  const { batch: B, seq: T } = TINY_STEP;
  const t0 = performance.now();
  const step = buildTrainStep({ params: gptParams(cfg), loss: gptTrainLoss(cfg, B, T) }, OptimConfigSchema.parse({ optimizer: { kind: 'adamw', lr: 1e-3 } }));
  const trainer = await Trainer.create(step, { seed: 0, sessionConfig: { ep, deviceId, intraOpThreads: 1 } });
  const compileMs = performance.now() - t0;
  try {
    const rand = mulberry32(7);
    const stepMs: number[] = [];
    const losses: number[] = [];
    for (let i = 0; i < TINY_STEP.steps; i++) {
      // Random byte tokens; targets are the tokens shifted by one, as in language modelling. (B, T)
      const tokens = Array.from({ length: B * (T + 1) }, () => Math.floor(rand() * cfg.vocab_size));
      const rows = (off: number) => Array.from({ length: B }, (_, b) => tokens.slice(b * (T + 1) + off, b * (T + 1) + off + T)).flat();
      const feed: Batch = { tokens: tensor('int64', [B, T], rows(0)), targets: tensor('int64', [B, T], rows(1)) };
      const s = performance.now();
      const m = await trainer.run(feed);
      stepMs.push(performance.now() - s);
      losses.push(m.loss);
    }
    return { ep, deviceId, compileMs, stepMs, losses };
  } finally {
    await trainer.release();
  }
}
