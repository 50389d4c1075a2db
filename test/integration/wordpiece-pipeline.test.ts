// A BERT masked-LM run with a WordPiece tokenizer we train, through the product on a real Temporal
// dev server, a real S3 server and both pool workers (issue 12, tokenizers): the pipeline's
// prepareDataset trains the WordPiece on the corpus with the `tokenizers` library, stores it as the
// dataset's tokenizer.json, and the tiny-bert preset pretrains on its ids (masking with its [MASK]).

import { readTokenizer, newestDataset } from '../../artifacts/datasets';
import { TruthGPT } from '../../sdk';
import { withInProcessStack, type InProcessStack } from '../helpers/stack';

let stack: InProcessStack;
let tg: TruthGPT;

beforeAll(async () => {
  stack = await withInProcessStack({ bucket: 'truthgpt-wordpiece-pipeline' });
  tg = await TruthGPT.connect({ config: stack.config });
}, 180_000);

afterAll(async () => {
  await tg?.close();
  await stack?.close();
});

test('BERT masked-LM pretraining on Brown with a WordPiece tokenizer trained in the pipeline: the dataset keeps its tokenizer.json and the masked-token loss falls', async () => {
  const training = { workers: 1, rounds: 2, innerSteps: 30, batchSize: 8, contextLength: 64, evalBatches: 8, optimizer: { optimizer: { kind: 'adamw' as const, lr: 2e-3 } } };
  const r = await (
    await tg.startPipeline({
      name: 'bert-mlm-wordpiece',
      model: { family: 'bert', task: 'mlm', preset: 'tiny-bert', config: { vocab_size: 1000 } },
      dataset: { name: 'brown-humor-wp', corpus: { kind: 'brown', categories: ['humor'] }, tokenizer: { kind: 'wordpiece', vocabSize: 1000 }, valFraction: 0.2 },
      training,
    })
  ).result();
  const [first, , last] = r.training.valHistory;
  console.log(`BERT MLM, WordPiece 1000: val masked-token loss ${first.loss.toFixed(4)} → ${last.loss.toFixed(4)} (perplexity ${first.perplexity.toFixed(1)} → ${last.perplexity.toFixed(1)})`);
  expect(last.loss).toBeLessThan(first.loss);

  // The dataset's tokenizer is the trained tokenizer.json itself, with BERT's specials first.
  const dataset = (await newestDataset(stack.s3.store, 'datasets/brown-humor-wp-'))!;
  expect([dataset.vocabSize, dataset.eot]).toEqual([1000, 3]);
  const ref = await readTokenizer(stack.s3.store, dataset);
  expect(ref).toMatchObject({ kind: 'hf', key: `${dataset.prefix}/tokenizer.json` });
  expect((ref as { id: string }).id).toMatch(/^wordpiece-1000-[0-9a-f]{12}$/);
  const file = JSON.parse((await stack.s3.store.getVerified(dataset.prefix, 'tokenizer.json')).toString('utf8')) as { model: { type: string }; added_tokens: { id: number; content: string }[] };
  expect(file.model.type).toBe('WordPiece');
  expect(file.added_tokens.map((t) => [t.id, t.content])).toEqual([[0, '[PAD]'], [1, '[UNK]'], [2, '[CLS]'], [3, '[SEP]'], [4, '[MASK]']]);
}, 600_000);
