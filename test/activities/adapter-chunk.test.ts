// One helper says where a fine-tune chunk trains, for trainAdapter (GPT LoRA) and
// trainClassifierLora (BERT classifier LoRA), which each computed it before: the chunks the
// workflows schedule (ceil(steps / stepsPerActivity) of them) tile the steps exactly, and each
// chunk's snapshots and result go under its own finetunes/<id>/chunks/cNNNNNN.

import { adapterChunk } from '../../activities/shard-loop';

test('adapterChunk: the chunks tile [0, steps) with no gap or overlap; keys under the chunk folder', () => {
  for (const [steps, stepsPerActivity] of [[80, 40], [10, 4], [7, 7], [5, 100], [1, 1]]) {
    const chunks = Array.from({ length: Math.ceil(steps / stepsPerActivity) }, (_, c) => adapterChunk('ft-1', c, { steps, stepsPerActivity }));
    expect(chunks[0].startStep).toBe(0);
    for (let c = 1; c < chunks.length; c++) expect(chunks[c].startStep).toBe(chunks[c - 1].endStep);
    expect(chunks[chunks.length - 1].endStep).toBe(steps);
    for (const ch of chunks) expect(ch.endStep - ch.startStep).toBeGreaterThan(0);
  }
  const at = adapterChunk('ft-1', 2, { steps: 10, stepsPerActivity: 4 });
  expect({ span: at.span, startStep: at.startStep, endStep: at.endStep }).toEqual({ span: 'chunk', startStep: 8, endStep: 10 });
  expect(at.snapshots).toBe('finetunes/ft-1/chunks/c000002');
  expect(at.finalPrefix).toBe('finetunes/ft-1/chunks/c000002/final');
  expect(at.snapshotKey(9)).toBe('finetunes/ft-1/chunks/c000002/step-000009');
});
