// trainingWorkflow end to end: a real Temporal dev server, a real S3 server and both pool workers
// (created in this process with the code the worker processes run). A tiny byte-level GPT learns
// Brown-corpus text with two DiLoCo workers, across a continue-as-new; a bad spec fails at once
// naming its field; a paused run waits and resumes.

import { MANIFEST_NAME } from '../../infra/store';
import { startTraining, waitTraining } from '../../sdk/cli/run-commands';
import type { TrainingSpecInput } from '../../spec/training';
import { TruthgptBestValLoss, TruthgptStage } from '../../spec/temporal-names';
import type { TrainingProgress } from '../../workflows/controls';
import { storedSha256s, type S3Fixture } from '../helpers/s3';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';
import type { TemporalFixture } from '../helpers/temporal';

let stack: InProcessStack;
let temporal: TemporalFixture;
let s3: S3Fixture;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-train', logLevel: 'WARN' });
  ({ temporal, s3 } = stack);
}, 180_000);

afterAll(async () => {
  await stack?.close();
});

// Byte vocabulary (256 bytes + 3 specials), 2 layers × 32 wide, context 32, batch 8.
const spec = (over: Partial<TrainingSpecInput> = {}): TrainingSpecInput => ({
  name: 'brown-tiny',
  model: { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  workers: 2,
  rounds: 3,
  innerSteps: 40,
  batchSize: 8,
  contextLength: 32,
  optimizer: { optimizer: { kind: 'adamw', lr: 3e-3, weight_decay: 0.01 }, grad_clip: 1 },
  outer: { kind: 'nesterov', lr: 0.7, momentum: 0.9 },
  evalEvery: 1,
  evalBatches: 8,
  checkpoint: { everySteps: 20, everySeconds: 0 },
  heartbeatTimeoutSeconds: 20,
  roundsPerRun: 2,
  ...over,
});

test('two DiLoCo workers train a tiny GPT on Brown text: val loss falls, across a continue-as-new', async () => {
  const id = await startTraining(temporal.client, spec(), { workflowId: 'brown-diloco' });
  const r = await waitTraining(temporal.client, id);
  if (r.status !== 'completed') throw new Error(`run failed: ${JSON.stringify(r.error)}`);

  // Evaluated before training and after each of the 3 rounds; the loss falls well below ln(259) ≈ 5.56.
  expect(r.valHistory.map((v) => v.round)).toEqual([0, 1, 2, 3]);
  const losses = r.valHistory.map((v) => v.loss);
  expect(losses[0]).toBeGreaterThan(5.3);
  expect(losses[3]).toBeLessThan(losses[0] - 1.5);
  expect(losses[3]).toBeLessThan(losses[1]);
  expect(r.bestValLoss).toBe(Math.min(...losses));
  expect(r.valHistory[3].perplexity).toBeCloseTo(Math.exp(losses[3]), 6);
  expect(r.rounds).toBe(3);
  expect(r.steps).toBe(120);
  expect(r.tokensSeen).toBe(3 * 2 * 40 * 8 * 32);
  expect(r.continuedAsNew).toBe(1); // roundsPerRun 2 → one continue-as-new before round 3
  expect(r.trainHistory).toHaveLength(3);

  // The final checkpoint is committed in S3 and its files hash to what the result reports.
  expect(r.checkpoint.prefix).toBe(`runs/${id}/global/r000003`);
  expect(Object.keys(r.checkpoint.files).sort()).toEqual(['checkpoint.json', 'model.safetensors', 'optimizer.safetensors']);
  expect(await storedSha256s(s3.store, r.checkpoint.prefix)).toEqual(Object.fromEntries(Object.entries(r.checkpoint.files).map(([n, f]) => [n, f.sha256])));
  const doc = JSON.parse((await s3.store.getVerified(r.checkpoint.prefix, 'checkpoint.json')).toString());
  expect([doc.round, doc.step, doc.modelConfig.n_embd]).toEqual([3, 120, 32]);
  // Each shard's in-round snapshots were superseded by its committed result and removed.
  const shardKeys = (await s3.store.list(`runs/${id}/shards/`)).map((o) => o.key);
  expect(shardKeys.filter((k) => k.endsWith(MANIFEST_NAME)).length).toBe(6);
  expect(shardKeys.some((k) => k.includes('/step-'))).toBe(false);

  // Every payload in both runs' histories is small (refs and metrics, no tensors).
  const desc = await temporal.client.workflow.getHandle(id).describe();
  expect(desc.searchAttributes[TruthgptStage.name]).toEqual(['done']);
  expect((desc.searchAttributes[TruthgptBestValLoss.name] as number[])[0]).toBeCloseTo(r.bestValLoss!, 6);
  const history = await temporal.client.workflow.getHandle(id).fetchHistory();
  const biggest = Math.max(...(history.events ?? []).map((e) => JSON.stringify(e).length));
  expect(biggest).toBeLessThan(64 * 1024);

  // The first run of this dataset spec built it (the pause test below reuses it).
  expect(r.dataset.reused).toBe(false);
}, 600_000);

test('a model whose vocabulary is smaller than the dataset fails at once, naming the field', async () => {
  const id = await startTraining(temporal.client, spec({ model: { preset: 'tiny-gpt', config: { vocab_size: 200, n_embd: 32, n_head: 2, block_size: 32 } } }), {
    workflowId: 'brown-bad-vocab',
  });
  const r = await waitTraining(temporal.client, id);
  expect(r.status).toBe('failed');
  if (r.status !== 'failed') return;
  expect(r.error.type).toBe('InvalidConfig');
  expect(r.error.message).toContain('spec.model.config.vocab_size: 200 is smaller than the dataset');
}, 120_000);

test('pause holds the run before its next round, progress says so, resume finishes it (dataset reused)', async () => {
  const id = await startTraining(temporal.client, spec({ rounds: 1, innerSteps: 10, evalBatches: 2 }), { workflowId: 'brown-paused' });
  const handle = temporal.client.workflow.getHandle(id);
  await handle.signal('pause');
  let p: TrainingProgress | undefined;
  for (let i = 0; i < 240 && p?.stage !== 'paused'; i++) {
    await new Promise((r) => setTimeout(r, 250));
    p = await handle.query<TrainingProgress>('progress');
  }
  expect(p).toMatchObject({ stage: 'paused', paused: true, round: 0, rounds: 1, steps: 10 });
  expect(p!.recentValLoss).toHaveLength(1); // the initial evaluation ran
  expect((await handle.describe()).searchAttributes[TruthgptStage.name]).toEqual(['paused']);
  await new Promise((r) => setTimeout(r, 1000));
  expect((await handle.query<TrainingProgress>('progress')).round).toBe(0); // still holding
  await handle.signal('resume');
  const r = await waitTraining(temporal.client, id);
  if (r.status !== 'completed') throw new Error(`run failed: ${JSON.stringify(r.error)}`);
  expect(r.rounds).toBe(1);
  expect(r.dataset.reused).toBe(true);
}, 300_000);
