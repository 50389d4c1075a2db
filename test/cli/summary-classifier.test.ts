// The end-of-run summary of a BERT classifier run: its int8 variant's accuracy against fp32 (not
// GPT's perplexity table), and no report line (post-training's report is GPT-only so far).

import type { PipelineResult } from '../../workflows/pipeline';
import { summarize } from '../../sdk/cli/progress';

test('a classifier run summarizes its variants by accuracy and prints no empty report key', () => {
  const r = {
    workflowId: 'pipeline-bert-spam-1',
    name: 'bert-spam',
    continues: [],
    training: { workflowId: 'pipeline-bert-spam-1-train', rounds: 2, steps: 80, tokensSeen: 81920, bestValLoss: 0.3796, valHistory: [], checkpoint: { prefix: 'runs/pipeline-bert-spam-1/global/r000002', files: {} }, resumedFrom: null, wallMs: 1000 },
    lora: null,
    variants: [],
    classifierVariants: [
      { name: 'int8', method: 'int8-dynamic', examples: 606, fp32Accuracy: 0.8927, fp32MacroF1: 0.88, accuracy: 0.8927, macroF1: 0.88, drop: 0, maxAccuracyDrop: 0.01, flips: 0, published: true, rejectedReason: null, prefix: 'runs/pipeline-bert-spam-1/models/int8', bytes: 176755, fp32Bytes: 223636 },
    ],
    reportKey: '',
    stages: [{ stage: 'train', status: 'done', workflowId: null, summary: 'ok', startedAt: '', endedAt: '' }],
    wallMs: 2000,
  } as unknown as PipelineResult;
  const text = summarize(r, 'http://ui', 'truthgpt');
  expect(text).toContain('val accuracy');
  expect(text).toMatch(/int8\s+│?\s*int8-dynamic\s+│?\s*89\.27%\s+│?\s*89\.27%\s+│?\s*0\.880\s+│?\s*606\s+│?\s*173 KiB\s+│?\s*yes/);
  expect(text).not.toContain('val ppl');
  expect(text).not.toContain('report ');
  expect(text).toContain('model     runs/pipeline-bert-spam-1/global/r000002');
});
