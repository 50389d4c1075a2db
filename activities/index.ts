// Every activity, built from injected dependencies (docs/ARCHITECTURE.md): a worker passes its real store and
// execution provider, a test passes a store on a temporary bucket. Workflows `import type` from here.

import type { ArtifactStore } from '../infra/store';
import type { Pool } from '../spec/temporal-names';
import { createClassifierLoraActivities } from './classifier-lora';
import { createClassifierPostActivities } from './classifier-post';
import { createDemoActivities } from './demo';
import { createFamilyReportActivities } from './family-report';
import { createFineTuneActivities } from './fine-tune';
import { createPipelineActivities } from './pipeline';
import { createPostTrainingActivities } from './post-training';
import { createT5LoraActivities } from './t5-lora';
import { createT5PostActivities } from './t5-post';
import { createTrainingActivities } from './training';

export interface ActivityDeps {
  store: ArtifactStore;
  /** Execution provider of this worker's ONNX Runtime sessions. */
  ep: 'cpu' | 'cuda';
  deviceId: number;
  /** Which pool this worker serves; activities that care can refuse the wrong one. */
  pool: Pool;
  /** What one training step may use on this worker, in bytes (TRUTHGPT_WORKER_MEMORY_GB). */
  memoryLimitBytes?: number;
  /** A CPU worker runs fp16/bf16 steps emulated (TRUTHGPT_HALF_EMULATION; engine/train/precision.ts) instead of refusing them. */
  halfEmulation?: boolean;
}

export function createActivities(deps: ActivityDeps) {
  return {
    ...createDemoActivities(deps),
    ...createTrainingActivities(deps),
    ...createFineTuneActivities(deps),
    ...createPipelineActivities(deps),
    ...createPostTrainingActivities(deps),
    ...createClassifierPostActivities(deps),
    ...createClassifierLoraActivities(deps),
    ...createT5PostActivities(deps),
    ...createT5LoraActivities(deps),
    ...createFamilyReportActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
