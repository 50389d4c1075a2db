import { progressLine } from '../../sdk/cli/progress';
import type { RunProgress } from '../../sdk/index';
import type { TrainingProgress } from '../../workflows/controls';

const child = (over: Partial<TrainingProgress>): TrainingProgress => ({
  stage: 'train',
  round: 2,
  rounds: 6,
  step: 120,
  steps: 360,
  tokensSeen: 1000,
  recentTrainLoss: [3.1, 2.9],
  recentValLoss: [3.0],
  bestValLoss: 3.0,
  etaSeconds: 10,
  paused: false,
  checkpoint: null,
  ...over,
});

const snapshot = (stage: 'train' | 'lora', training: TrainingProgress | null, lora: TrainingProgress | null, retrying: RunProgress['retrying'] = []): RunProgress => ({
  workflowId: 'pipeline-demo-1',
  status: 'RUNNING',
  pipeline: { name: 'demo', stage, stages: [], trainingWorkflowId: 'pipeline-demo-1-train', loraWorkflowId: 'pipeline-demo-1-lora', paused: false, continues: [], resumedFrom: null },
  training,
  lora,
  retrying,
  uiUrl: 'http://127.0.0.1:8233/namespaces/default/workflows/pipeline-demo-1',
});

describe('progress bar line', () => {
  test('during training it shows the training child: round, step, latest losses', () => {
    const line = progressLine(snapshot('train', child({}), null), 1234.4);
    expect(line).toEqual({ stage: 'train:train', round: '2/6', step: 120, steps: 360, tokensPerSec: '1234', train: '2.900', val: '3.000', retry: '' });
  });

  test('during the LoRA stage it follows the fine-tune child, not the finished training', () => {
    const done = child({ stage: 'done', round: 6, step: 360 });
    const lora = child({ stage: 'train', round: 1, rounds: 4, step: 50, steps: 200, recentTrainLoss: [2.4], recentValLoss: [2.35] });
    const line = progressLine(snapshot('lora', done, lora), null);
    expect(line).toMatchObject({ stage: 'lora:train', round: '1/4', step: 50, steps: 200, tokensPerSec: '-', train: '2.400', val: '2.350' });
  });

  test('a retrying activity shows with its attempt and its last error (the most-tried one when several)', () => {
    const retrying = [
      { workflowId: 'pipeline-demo-1-train', activity: 'evaluate', attempt: 2, lastFailure: 'connect ECONNREFUSED 127.0.0.1:4568' },
      { workflowId: 'pipeline-demo-1-train', activity: 'trainShard', attempt: 5, lastFailure: `connect ECONNREFUSED 127.0.0.1:4568\n${'x'.repeat(300)}` },
    ];
    const line = progressLine(snapshot('train', child({}), null, retrying), null);
    expect(line.retry).toBe('retrying trainShard (attempt 5): connect ECONNREFUSED 127.0.0.1:4568');
  });
});
