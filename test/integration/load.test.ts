// Load (issue 15): 20 pipelines started at once on one local stack (a real Temporal dev server, a
// real S3 server, one cpu-pool and one gpu-pool worker) all finish, each with its artifacts under
// its own run id, and no workflow task of any of them timed out while the others' activities ran.
// All 20 run the same spec as a single run before them, so each must also end with the very same
// weights: concurrency changes when things run, never what they compute. The wall times (20 at
// once against one alone) are printed for bench/RESULTS.md, not asserted.

import { TruthGPT, type PipelineResult, type PipelineSpecInput } from '../../sdk';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;
let tg: TruthGPT;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-load' });
  tg = await TruthGPT.connect({ config: stack.config });
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
});

const N = 20;

const spec: PipelineSpecInput = {
  name: 'load',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  training: { workers: 1, rounds: 2, innerSteps: 5, batchSize: 4, contextLength: 32, evalBatches: 2 },
  quantization: [],
  evaluation: { batches: 2, speedRuns: 1, warmup: 0, samples: { prompts: ['The '], maxNewTokens: 4, temperature: 0 } },
};

const weightsOf = (r: PipelineResult) => r.training.checkpoint.files['model.safetensors'].sha256;

test(`${N} pipelines at once all finish, each under its own run id, with the weights of a single run and no workflow task timeout`, async () => {
  const t0 = Date.now();
  const single = await (await tg.startPipeline(spec, { workflowId: 'load-single' })).result();
  const singleMs = Date.now() - t0;

  const t1 = Date.now();
  const runs = await Promise.all(Array.from({ length: N }, (_, i) => tg.startPipeline(spec, { workflowId: `load-${String(i).padStart(2, '0')}` })));
  const results = await Promise.all(runs.map((r) => r.result()));
  const allMs = Date.now() - t1;

  results.forEach((r, i) => {
    const id = `load-${String(i).padStart(2, '0')}`;
    expect(r.workflowId).toBe(id);
    expect(r.training.checkpoint.prefix).toBe(`runs/${id}/global/r000002`);
    expect(r.reportKey.startsWith(`runs/${id}/`)).toBe(true);
    expect(weightsOf(r)).toBe(weightsOf(single));
  });
  for (const r of results) expect(await stack.s3.store.readManifest(r.training.checkpoint.prefix)).not.toBeNull();

  // No workflow task of any run (pipelines and their children) timed out or failed.
  const bad: string[] = [];
  for await (const w of tg.client.workflow.list()) {
    const history = await tg.client.workflow.getHandle(w.workflowId).fetchHistory();
    for (const e of history.events ?? []) {
      if (e.workflowTaskTimedOutEventAttributes || e.workflowTaskFailedEventAttributes) bad.push(`${w.workflowId} event ${e.eventId}`);
    }
  }
  expect(bad).toEqual([]);
  console.log(`load: 1 pipeline alone ${(singleMs / 1000).toFixed(1)} s; ${N} at once ${(allMs / 1000).toFixed(1)} s (${(allMs / singleMs).toFixed(1)}× one run, ${((allMs / N / singleMs) * 100).toFixed(0)}% of one run's time per run)`);
}, 900_000);
