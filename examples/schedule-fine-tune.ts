// A recurring LoRA fine-tune on a Temporal Schedule: publish a dataset version, schedule a
// fine-tune of a trained checkpoint on the newest version under a prefix, fire it now, wait for
// the run, then delete the schedule (the run and its adapter stay).
//   npx tsx examples/schedule-fine-tune.ts runs/pipeline-tiny-20251126-145200/global/r000003
// The base is any committed checkpoint: a pipeline result's `training.checkpoint.prefix`, or a
// merged fine-tune. Each later firing would end "no new data" until a new dataset version is
// published under the prefix (`truthgpt schedule list` shows the schedule meanwhile).

import {
  deleteSchedule,
  describeSchedule,
  publishDataset,
  scheduleFineTune,
  triggerSchedule,
  TruthGPT,
  type FineTuneResult,
} from '../sdk';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(base = process.argv[2]): Promise<void> {
  if (!base) throw new Error('usage: schedule-fine-tune.ts CHECKPOINT_PREFIX (e.g. a pipeline\'s runs/<id>/global/r000003)');
  const tg = await TruthGPT.connect();
  const id = `fiction-${Date.now()}`;
  let scheduled = false;
  try {
    // A dataset version: datasets/<name>-<spec hash>; the schedule takes the newest under its prefix.
    const dataset = await publishDataset(tg.client, { name: 'sched-fiction', corpus: { kind: 'brown', categories: ['mystery', 'science_fiction'] }, valFraction: 0.1 });
    console.log(`published ${dataset.prefix}`);

    await scheduleFineTune(tg.client, {
      id,
      every: '1 minute', // short, for the example; a cron such as '0 3 * * *' in production
      base: { kind: 'checkpoint', prefix: base },
      datasetPrefix: 'datasets/sched-fiction-',
      lora: { r: 8, lora_alpha: 16 },
      train: { steps: 40, stepsPerActivity: 20, batchSize: 8, contextLength: 32, evalBatches: 4 },
      note: 'examples/schedule-fine-tune.ts',
    });
    scheduled = true;
    console.log(`scheduled ${id} every minute`);
    await triggerSchedule(tg.client, id); // fire now (overlap SKIP: not while a run is going)

    let runs: string[] = [];
    for (let i = 0; i < 600 && !runs.length; i++) {
      await sleep(200);
      runs = (await describeSchedule(tg.client, id)).recentRuns;
    }
    if (!runs.length) throw new Error(`schedule ${id} started no run within two minutes; are the workers running?`);
    console.log(`run ${runs[0]}\n  ${tg.uiUrl(runs[0])}`);
    const r = (await tg.client.workflow.getHandle(runs[0]).result()) as FineTuneResult;
    if (r.status === 'completed') {
      console.log(`fine-tuned ${r.steps} steps: val loss ${r.valLossBefore.toFixed(4)} → ${r.valLossAfter.toFixed(4)}, ${(r.trainableFraction * 100).toFixed(2)}% trainable`);
      console.log(`adapter ${r.adapter.prefix}\nmerged ${r.merged.prefix}`);
    } else {
      console.log(`skipped: ${r.reason}`);
    }
  } finally {
    if (scheduled) {
      await deleteSchedule(tg.client, id);
      console.log(`deleted schedule ${id}`);
    }
    await tg.close();
  }
}

main().catch((err) => {
  console.error(`${err.name}: ${err.message}`);
  process.exit(1);
});
