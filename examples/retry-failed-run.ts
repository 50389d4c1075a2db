// Continue a failed, cancelled or terminated pipeline from its last committed checkpoint.
//   npx tsx examples/retry-failed-run.ts pipeline-tiny-20251126-145200
// The new run trains only the rounds that were not committed, then quantizes, evaluates and
// reports; its memo and result name the run it continues.

import { TruthGPT } from '../sdk';

async function main(id = process.argv[2]): Promise<void> {
  if (!id) throw new Error('usage: retry-failed-run.ts RUN_ID (see `truthgpt runs --status FAILED`)');
  const tg = await TruthGPT.connect();
  try {
    const run = await tg.retryFromCheckpoint(id);
    console.log(`started ${run.workflowId}, continuing ${id}\n  ${run.uiUrl}`);
    const r = await run.result();
    const from = r.training.resumedFrom;
    console.log(`resumed ${from?.runId} at round ${from?.round}; finished ${r.training.rounds} rounds, best val loss ${r.training.bestValLoss?.toFixed(4)}`);
    console.log(`report ${r.reportKey}`);
  } finally {
    await tg.close();
  }
}

main().catch((err) => {
  console.error(`${err.name}: ${err.message}`);
  process.exit(1);
});
