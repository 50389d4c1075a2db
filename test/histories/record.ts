// Re-records the workflow histories that test/replay.test.ts replays:
//   npx tsx test/histories/record.ts [train] [pipeline] [lora] [bert] [t5] [pretraining] [memory] [variants]     (no argument: all eight)
// Runs tiny real workflows (real Temporal dev server, S3 server and both pool workers, as the
// integration tests do) and writes each execution's history as JSON next to this file:
//   train      replay-train-run*.json: trainingWorkflow, 2 workers × 2 rounds with a continue-as-new, paused and resumed
//   pipeline   replay-pipeline*.json: pipelineWorkflow (no LoRA) and its children (training, post-training)
//   lora       replay-pipeline-lora*.json: pipelineWorkflow with a LoRA stage and its fineTuneWorkflow child
//   bert       replay-pipeline-bert*.json: pipelineWorkflow of a BERT classifier imported from
//              test/fixtures/hf-io/bert_spam: a round of fine-tuning, a LoRA stage of two chunks, int8
//              gated on accuracy, and its training child
//   t5         replay-pipeline-t5*.json: pipelineWorkflow of the T5 imported from test/fixtures/t5-tiny,
//              a round of seq2seq fine-tuning on opposites.jsonl (run from the repository root: the
//              corpus path is relative), int8 gated on exact match, and its training child
//   pretraining replay-pipeline-mlm.json, replay-pipeline-span.json: pipelineWorkflow of a BERT mlm
//              run (tiny-bert, byte tokenizer, Brown humor) and of a T5 span-corruption run (the
//              imported T5 on opposites.jsonl's inputs), one round each, recorded before their
//              report existed (patched('family-report-pretraining'))
//   memory     replay-pipeline-memory.json: pipelineWorkflow of a memory-augmented GPT (model.variant),
//              one round, recorded while its post-training was skipped (patched('memory-post-training'))
//   variants   replay-pipeline-domain*.json: pipelineWorkflow of a GPT domain-head classifier (tiny-gpt,
//              byte tokenizer, SpamAssassin), one round, its classifier report (patched('family-report-domain-head'))
// Only the named groups' files are rewritten. Re-record only on purpose: a history that no longer
// replays means running workflows would break, so new groups are added beside the old ones.

import { DefaultLogger, Runtime } from '@temporalio/worker';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../infra/config';
import { ensureTemporalCli } from '../../infra/temporal';
import { importModel, TruthGPT, type PipelineSpecInput } from '../../sdk';
import { startTraining, waitTraining } from '../../sdk/cli/run-commands';
import type { TrainingSpecInput } from '../../spec/training';
import { createPoolWorker } from '../../workers/worker';
import { withS3 } from '../helpers/s3';
import { withTemporal } from '../helpers/temporal';

const OUT = __dirname;

const model = { preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } };
const dataset = { name: 'brown-humor', corpus: { kind: 'brown' as const, categories: ['humor'] }, valFraction: 0.2 };
const training = {
  workers: 2,
  rounds: 2,
  innerSteps: 5,
  batchSize: 4,
  contextLength: 32,
  evalBatches: 1,
  checkpoint: { everySteps: 100, everySeconds: 0 },
};
const trainingSpec: TrainingSpecInput = { name: 'replay-train', model, dataset, ...training, roundsPerRun: 1 };
const pipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe',
  model,
  dataset,
  training,
  quantization: [{ method: 'int8-dynamic', maxPplIncrease: 0.5 }],
  evaluation: { batches: 1, speedRuns: 1, warmup: 0, calibrationBatches: 1, samples: { prompts: ['The '], maxNewTokens: 4 } },
};

/** The LoRA stage on its own fiction dataset: a few steps, two chunks (a pause point between). */
const loraPipelineSpec: PipelineSpecInput = {
  ...pipelineSpec,
  name: 'replay-pipe-lora',
  lora: {
    dataset: { name: 'brown-mystery', corpus: { kind: 'brown', categories: ['mystery'] }, valFraction: 0.2 },
    lora: { r: 4, lora_alpha: 8 },
    train: { steps: 4, stepsPerActivity: 2, batchSize: 4, contextLength: 32, evalBatches: 1 },
  },
};

/** A BERT classifier from the imported spam fixture: full fine-tune, LoRA (two chunks), int8 gated on accuracy. */
const bertPipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe-bert',
  model: { from: 'models/replay-bert', task: 'classification' },
  dataset: { name: 'spam', corpus: { kind: 'spam-assassin' }, valFraction: 0.05 },
  training: { workers: 1, rounds: 1, innerSteps: 3, batchSize: 4, contextLength: 32 },
  lora: { lora: { r: 2, lora_alpha: 4 }, train: { steps: 4, stepsPerActivity: 2, batchSize: 4, contextLength: 32 } },
  quantization: [{ method: 'int8-dynamic', maxAccuracyDrop: 1 }],
};

/** The imported tiny T5: a seq2seq round on source/target pairs, int8 gated on exact match. */
const t5PipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe-t5',
  model: { from: 'models/replay-t5', task: 'seq2seq' },
  dataset: { name: 'opposites', corpus: { kind: 'jsonl', path: 'test/fixtures/t5-tiny/opposites.jsonl', textField: 'input', targetField: 'target' }, valFraction: 0.25 },
  training: { workers: 1, rounds: 1, innerSteps: 3, batchSize: 4, contextLength: 8, targetLength: 4, evalBatches: 1 },
  quantization: [{ method: 'int8-dynamic', maxExactMatchDrop: 1 }],
};

/** Pretraining runs (no LoRA, no quantization): BERT mlm from scratch, T5 span corruption from the import. */
const mlmPipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe-mlm',
  model: { family: 'bert', task: 'mlm', preset: 'tiny-bert', config: { vocab_size: 259 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, valFraction: 0.2 },
  training: { workers: 1, rounds: 1, innerSteps: 3, batchSize: 4, contextLength: 32, evalBatches: 1 },
};
const spanPipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe-span',
  model: { from: 'models/replay-t5', task: 'span-corruption' },
  dataset: { name: 'opposites-text', corpus: { kind: 'jsonl', path: 'test/fixtures/t5-tiny/opposites.jsonl', textField: 'input' }, valFraction: 0.25 },
  training: { workers: 1, rounds: 1, innerSteps: 3, batchSize: 4, contextLength: 16, evalBatches: 1 },
};

/** A memory-augmented GPT (8 slots read by layer 1): one round, no stage after training. */
const memoryPipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe-memory',
  model: { ...model, config: { ...model.config, n_layer: 2 }, variant: { kind: 'memory', n_memory: 8, memory_layers: [1] } },
  dataset,
  training: { ...training, workers: 1, rounds: 1 },
};

const domainPipelineSpec: PipelineSpecInput = {
  name: 'replay-pipe-domain',
  model: { ...model, variant: { kind: 'domain-head', n_classes: 2 } },
  dataset: { name: 'spam', corpus: { kind: 'spam-assassin' }, valFraction: 0.05 },
  training: { workers: 1, rounds: 1, innerSteps: 3, batchSize: 4, contextLength: 32 },
};

const GROUPS = {
  train: ['replay-train'],
  pipeline: ['replay-pipeline', 'replay-pipeline-train', 'replay-pipeline-post'],
  lora: ['replay-pipeline-lora', 'replay-pipeline-lora-lora'],
  bert: ['replay-pipeline-bert', 'replay-pipeline-bert-train'],
  t5: ['replay-pipeline-t5', 'replay-pipeline-t5-train'],
  pretraining: ['replay-pipeline-mlm', 'replay-pipeline-span'],
  memory: ['replay-pipeline-memory'],
  variants: ['replay-pipeline-domain', 'replay-pipeline-domain-train'],
};
type Group = keyof typeof GROUPS;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  for (const a of args) if (!(a in GROUPS)) throw new Error(`unknown group ${a}; choose from ${Object.keys(GROUPS).join(', ')}`);
  const groups = (args.length ? args : Object.keys(GROUPS)) as Group[];
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const [temporal, s3] = await Promise.all([withTemporal(), withS3({ bucket: 'truthgpt-replay' })]);
  const config = loadConfig({
    TRUTHGPT_TEMPORAL_PORT: String(temporal.port),
    TRUTHGPT_S3_PORT: String(s3.server.port),
    TRUTHGPT_S3_BUCKET: 'truthgpt-replay',
    TRUTHGPT_STATE_DIR: s3.dir,
  });
  const workers = await Promise.all([createPoolWorker(config, 'workflows'), createPoolWorker(config, 'cpu'), createPoolWorker(config, 'gpu')]);
  const running = workers.map((w) => w.run());
  const tg = await TruthGPT.connect({ config });
  const cli = await ensureTemporalCli();
  try {
    if (groups.includes('train')) {
      const trainId = await startTraining(temporal.client, trainingSpec, { workflowId: 'replay-train' });
      const handle = temporal.client.workflow.getHandle(trainId);
      await handle.signal('pause');
      await handle.signal('resume');
      const t = await waitTraining(temporal.client, trainId);
      if (t.status !== 'completed') throw new Error(`training failed: ${t.error.message}`);
    }
    if (groups.includes('pipeline')) await (await tg.startPipeline(pipelineSpec, { workflowId: 'replay-pipeline' })).result();
    if (groups.includes('lora')) await (await tg.startPipeline(loraPipelineSpec, { workflowId: 'replay-pipeline-lora' })).result();
    if (groups.includes('bert')) {
      await importModel(path.join(__dirname, '..', 'fixtures', 'hf-io', 'bert_spam'), { name: 'replay-bert', config });
      await (await tg.startPipeline(bertPipelineSpec, { workflowId: 'replay-pipeline-bert' })).result();
    }
    if (groups.includes('t5')) {
      await importModel(path.join(__dirname, '..', 'fixtures', 't5-tiny', 'model'), { name: 'replay-t5', config });
      await (await tg.startPipeline(t5PipelineSpec, { workflowId: 'replay-pipeline-t5' })).result();
    }
    if (groups.includes('pretraining')) {
      await (await tg.startPipeline(mlmPipelineSpec, { workflowId: 'replay-pipeline-mlm' })).result();
      await importModel(path.join(__dirname, '..', 'fixtures', 't5-tiny', 'model'), { name: 'replay-t5', config });
      await (await tg.startPipeline(spanPipelineSpec, { workflowId: 'replay-pipeline-span' })).result();
    }
    if (groups.includes('memory')) await (await tg.startPipeline(memoryPipelineSpec, { workflowId: 'replay-pipeline-memory' })).result();
    if (groups.includes('variants')) await (await tg.startPipeline(domainPipelineSpec, { workflowId: 'replay-pipeline-domain' })).result();

    // Every run of every execution (continue-as-new makes several runs of one id).
    const ids = groups.flatMap((g) => GROUPS[g]);
    const mine = (f: string) => ids.some((id) => f === `${id}.json` || new RegExp(`^${id}-run\\d+\\.json$`).test(f));
    for (const file of fs.readdirSync(OUT).filter(mine)) fs.rmSync(path.join(OUT, file));
    for (const id of ids) {
      const runs = [];
      for await (const w of temporal.client.workflow.list({ query: `WorkflowId = '${id}'` })) runs.push(w);
      runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
      for (const [i, w] of runs.entries()) {
        // The CLI writes the standard JSON history format (historyToJSON trips over the two
        // protobufjs copies in this install).
        const { stdout } = await promisify(execFile)(cli, ['workflow', 'show', '--address', temporal.address, '-w', id, '-r', w.runId, '-o', 'json'], { maxBuffer: 64 << 20 });
        const file = path.join(OUT, `${id}${runs.length > 1 ? `-run${i + 1}` : ''}.json`);
        fs.writeFileSync(file, stdout);
        console.log(`${path.relative(process.cwd(), file)}: ${w.type}, ${JSON.parse(stdout).events.length} events`);
      }
    }
  } finally {
    await tg.close();
    for (const w of workers) w.worker.shutdown();
    await Promise.allSettled(running);
    await Promise.allSettled([temporal.close(), s3.close()]);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
