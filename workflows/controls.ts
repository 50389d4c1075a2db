// The controls of a long training workflow (trainingWorkflow, fineTuneWorkflow): its stage in the
// TruthgptStage search attribute, pause/resume signals that take effect between rounds (or
// chunks), and the `progress` query the CLI's bar and the SDK's watch read.

import { condition, defineQuery, defineSignal, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import { TruthgptStage } from '../spec/temporal-names';

export interface TrainingProgress {
  stage: string;
  round: number;
  rounds: number;
  step: number;
  steps: number;
  tokensSeen: number;
  recentTrainLoss: number[];
  recentValLoss: number[];
  bestValLoss: number | null;
  /** Seconds to the last round at the recent pace; null before the first round ends. */
  etaSeconds: number | null;
  paused: boolean;
  checkpoint: string | null;
}

export const progressQuery = defineQuery<TrainingProgress>('progress');
export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');

export interface RunControls {
  readonly stage: string;
  readonly paused: boolean;
  /** Records the stage; the search attribute says 'paused' while a pause is pending. */
  setStage(stage: string): void;
  /** At a round boundary: waits, in stage 'paused', until a resume signal arrives. */
  waitWhilePaused(): Promise<void>;
}

/** Installs the pause/resume/progress handlers; `progress()` supplies the figures besides stage and pause. */
export function runControls(stage: string, paused: boolean, progress: () => Omit<TrainingProgress, 'stage' | 'paused'>): RunControls {
  const controls = {
    stage,
    paused,
    setStage(s: string) {
      controls.stage = s;
      upsertSearchAttributes([{ key: TruthgptStage, value: controls.paused ? 'paused' : s }]);
    },
    async waitWhilePaused() {
      if (!controls.paused) return;
      controls.setStage('paused');
      await condition(() => !controls.paused);
    },
  };
  setHandler(pauseSignal, () => {
    controls.paused = true;
  });
  setHandler(resumeSignal, () => {
    controls.paused = false;
  });
  setHandler(progressQuery, (): TrainingProgress => ({ stage: controls.stage, paused: controls.paused, ...progress() }));
  return controls;
}
