// A deliberately incompatible edit of trainingWorkflow for test/replay.test.ts: it schedules
// createModel before prepareDataset. Replaying a recorded history against it must fail, which is
// what proves the replay test would catch such a change to the real workflow.

import { proxyActivities } from '@temporalio/workflow';
import type { TrainingActivities } from '../../../activities/training';
import type { TrainingInput } from '../../../workflows/training';

const cpu = proxyActivities<TrainingActivities>({ taskQueue: 'truthgpt-cpu', startToCloseTimeout: '1 minute' });

export async function trainingWorkflow(input: TrainingInput): Promise<void> {
  const ref = { runId: input.runId ?? 'x', spec: input.spec };
  await cpu.createModel(ref);
  await cpu.prepareDataset({ runId: ref.runId, dataset: { ...input.spec.dataset, shards: input.spec.workers } });
}
