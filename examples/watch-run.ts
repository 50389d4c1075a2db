// Watch a running pipeline: its stage and, while it trains, round, step and losses.
//   npx tsx examples/watch-run.ts pipeline-tiny-20251126-145200
// `truthgpt watch ID` draws the same information as a progress bar.

import { TruthGPT } from '../sdk';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(id = process.argv[2]): Promise<void> {
  if (!id) throw new Error('usage: watch-run.ts RUN_ID (see `truthgpt runs`)');
  const tg = await TruthGPT.connect();
  try {
    const run = await tg.getPipeline(id); // UnknownRunError for a wrong id
    let last = '';
    for (;;) {
      const p = await run.progress();
      const t = p.training;
      const line = `${p.status.padEnd(9)} ${p.pipeline?.stage ?? '-'}${t ? `  round ${t.round}/${t.rounds}  step ${t.step}/${t.steps}  val ${t.recentValLoss.at(-1)?.toFixed(4) ?? '-'}` : ''}`;
      if (line !== last) console.log(line);
      last = line;
      if (p.status !== 'RUNNING') break;
      await sleep(500);
    }
    const stages = (await run.progress()).pipeline?.stages ?? [];
    for (const s of stages) console.log(`  ${s.stage.padEnd(13)} ${s.status.padEnd(9)} ${s.summary}`);
  } finally {
    await tg.close();
  }
}

main().catch((err) => {
  console.error(`${err.name}: ${err.message}`);
  process.exit(1);
});
