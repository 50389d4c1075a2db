// The durability check the pipeline tests of each model variant share: a run paused once round 1
// is done (so it is held at a round boundary whatever the machine's load), cancelled, then retried
// from its checkpoint with `retryFromCheckpoint`.

import { RunFailedError, type PipelineResult, type PipelineSpecInput, type TruthGPT } from '../../sdk';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `spec` to a pause after round ≥ 1, cancels it, retries it; the round it was paused at and the retried run's result. */
export async function pauseCancelRetry(tg: TruthGPT, spec: PipelineSpecInput): Promise<{ workflowId: string; pausedAt: number; retried: PipelineResult }> {
  const run = await tg.startPipeline(spec);
  let p = await run.progress();
  for (let i = 0; i < 1200 && !(p.training && p.training.round >= 1); i++) {
    await sleep(100);
    p = await run.progress();
  }
  await run.pause();
  for (let i = 0; i < 1200 && p.training?.stage !== 'paused'; i++) {
    await sleep(100);
    p = await run.progress();
  }
  if (p.training?.stage !== 'paused') throw new Error(`pauseCancelRetry: ${run.workflowId} did not pause (stage ${p.training?.stage ?? 'none'})`);
  const pausedAt = p.training.round;
  await run.cancel();
  const err = await run.result().catch((e: unknown) => e);
  if (!(err instanceof RunFailedError)) throw new Error(`pauseCancelRetry: the cancelled run ${run.workflowId} ended with ${String(err)}, not RunFailedError`);
  const retried = await (await tg.retryFromCheckpoint(run.workflowId)).result();
  return { workflowId: run.workflowId, pausedAt, retried };
}
