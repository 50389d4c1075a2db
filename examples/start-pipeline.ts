// Start a pipeline from a spec file and wait for its report.
//   npx tsx examples/start-pipeline.ts examples/tiny.json
// Connects with the same env config as the workers (TEMPORAL_ADDRESS, TRUTHGPT_*), so it talks
// to `npm start`'s local stack by default.

import fs from 'node:fs';
import YAML from 'yaml';
import { TruthGPT, type PipelineSpecInput } from '../sdk';

async function main(file = process.argv[2] ?? `${__dirname}/tiny.json`): Promise<void> {
  const spec = YAML.parse(fs.readFileSync(file, 'utf8')) as PipelineSpecInput; // YAML also reads JSON
  const tg = await TruthGPT.connect();
  try {
    const run = await tg.startPipeline(spec); // throws InvalidSpecError naming every bad field
    console.log(`started ${run.workflowId}\n  ${run.uiUrl}`);
    const result = await run.result();
    const last = result.training.valHistory[result.training.valHistory.length - 1];
    console.log(`trained ${result.training.rounds} rounds, val loss ${last.loss.toFixed(4)} (perplexity ${last.perplexity.toFixed(2)})`);
    for (const v of result.variants) console.log(`  ${v.name.padEnd(8)} ppl ${v.ppl.toFixed(3)}  ${(v.sizeBytes / 1024).toFixed(0)} KiB  ${v.tokensPerSec.toFixed(0)} tok/s${v.published ? '' : '  (refused)'}`);
    console.log(`report ${result.reportKey}`);
  } finally {
    await tg.close();
  }
}

main().catch((err) => {
  console.error(`${err.name}: ${err.message}`);
  process.exit(1);
});
