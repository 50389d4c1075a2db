// Issue 15, part 1: every object of every user-facing spec refuses unknown keys, and the error line
// names the key's full path and the nearest known key. Each row of the table is one typo in one
// kind of nested object and the exact line the user gets for it.

import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { checkScheduleOptions } from '../../sdk/schedules';
import { editDistance, unknownKeyMessage } from '../../spec/issues';
import { parseFineTuneSpec } from '../../spec/lora';
import { InvalidSpecError, parsePipelineSpec } from '../../spec/pipeline';
import { parsePostTrainingSpec } from '../../spec/post-training';
import { parseTrainingSpec } from '../../spec/training';

const EXAMPLES = path.resolve(__dirname, '../../examples');
type Spec = Record<string, any>;
const tiny = (): Spec => JSON.parse(fs.readFileSync(path.join(EXAMPLES, 'tiny.json'), 'utf8'));

/** The issue lines parsePipelineSpec throws for `edit` applied to examples/tiny.json. */
function pipelineLines(edit: (s: Spec) => void): string[] {
  const s = tiny();
  edit(s);
  try {
    parsePipelineSpec(s);
  } catch (err) {
    if (err instanceof InvalidSpecError) return err.issues;
    throw err;
  }
  throw new Error('the spec parsed');
}

const TRAINING_KEYS = 'workers, rounds, innerSteps, batchSize, contextLength, targetLength, optimizer, outer, evalEvery, evalBatches, checkpoint, seed, threads, heartbeatTimeoutSeconds, shardTimeoutMinutes, roundsPerRun, activationCheckpointing, stepsPerRun, ortMemory, precision, lossScale';

describe('a typo in any object of a pipeline spec is one line naming its path and the nearest key', () => {
  const rows: [string, (s: Spec) => void, string][] = [
    // The three typos of the issue.
    ['model config', (s) => (s.model.config.n_layr = 12), 'spec.model.config.n_layr: unknown key (did you mean n_layer?)'],
    ['training (no close key: the known ones are listed)', (s) => (s.training.lerning_rate = 5), `spec.training.lerning_rate: unknown key (known keys: ${TRAINING_KEYS})`],
    ['quant variant', (s) => (s.quantization[0].maxPPlIncrease = 0.001), 'spec.quantization.0.maxPPlIncrease: unknown key (did you mean maxPplIncrease?)'],
    // One per nested object kind.
    ['pipeline top level', (s) => (s.quantisation = []), 'spec.quantisation: unknown key (did you mean quantization?)'],
    ['model', (s) => (s.model.presett = 'tiny-gpt'), 'spec.model.presett: unknown key (did you mean preset?)'],
    ['dataset', (s) => (s.dataset.valFration = 0.1), 'spec.dataset.valFration: unknown key (did you mean valFraction?)'],
    ['corpus (brown)', (s) => (s.dataset.corpus.categoris = ['humor']), 'spec.dataset.corpus.categoris: unknown key (did you mean categories?)'],
    ['corpus (jsonl)', (s) => (s.dataset.corpus = { kind: 'jsonl', path: 'a.jsonl', text_field: 'body' }), 'spec.dataset.corpus.text_field: unknown key (did you mean textField?)'],
    ['tokenizer (byte)', (s) => (s.dataset.tokenizer = { kind: 'byte', size: 3 }), 'spec.dataset.tokenizer.size: unknown key (known keys: kind)'],
    ['optimizer config', (s) => (s.training.optimizer = { optimizer: { kind: 'adamw', lr: 1e-3 }, shedule: { kind: 'constant' } }), 'spec.training.optimizer.shedule: unknown key (did you mean schedule?)'],
    ['AdamW', (s) => (s.training.optimizer = { optimizer: { kind: 'adamw', lr: 1e-3, beta_1: 0.9 } }), 'spec.training.optimizer.optimizer.beta_1: unknown key (did you mean beta1?)'],
    ['SGD', (s) => (s.training.optimizer = { optimizer: { kind: 'sgd', lr: 0.1, momentm: 0.9 } }), 'spec.training.optimizer.optimizer.momentm: unknown key (did you mean momentum?)'],
    [
      'LR schedule',
      (s) => (s.training.optimizer = { optimizer: { kind: 'adamw', lr: 1e-3 }, schedule: { kind: 'warmup_cosine', warmup_steps: 1, decay_steps: 9, min_lr: 0, min_Lr: 0 } }),
      'spec.training.optimizer.schedule.min_Lr: unknown key (did you mean min_lr?)',
    ],
    ['decay rule', (s) => (s.training.optimizer = { optimizer: { kind: 'adamw', lr: 1e-3 }, decay: { min_rnk: 2 } }), 'spec.training.optimizer.decay.min_rnk: unknown key (did you mean min_rank?)'],
    ['outer optimizer (nesterov)', (s) => (s.training.outer = { kind: 'nesterov', momentun: 0.9 }), 'spec.training.outer.momentun: unknown key (did you mean momentum?)'],
    ['outer optimizer (average)', (s) => (s.training.outer = { kind: 'average', lr: 1 }), 'spec.training.outer.lr: unknown key (known keys: kind, compression)'],
    ['outer compression', (s) => (s.training.outer = { kind: 'nesterov', compresion: 'int8' }), 'spec.training.outer.compresion: unknown key (did you mean compression?)'],
    ['ORT memory options', (s) => (s.training.ortMemory = { pattern: false, arenna: false }), 'spec.training.ortMemory.arenna: unknown key (did you mean arena?)'],
    ['LoRA ORT memory options', (s) => (s.lora = { train: { steps: 2, batchSize: 2, contextLength: 8, ortMemory: { patern: false } } }), 'spec.lora.train.ortMemory.patern: unknown key (did you mean pattern?)'],
    ['checkpoint policy', (s) => (s.training.checkpoint = { everyStep: 5 }), 'spec.training.checkpoint.everyStep: unknown key (did you mean everySteps?)'],
    ['evaluation', (s) => (s.evaluation.batchs = 2), 'spec.evaluation.batchs: unknown key (did you mean batches?)'],
    ['samples', (s) => (s.evaluation.samples.max_new_tokens = 8), 'spec.evaluation.samples.max_new_tokens: unknown key (did you mean maxNewTokens?)'],
    ['int8-static calibration', (s) => (s.quantization = [{ method: 'int8-static', calibration: { percentil: 99.9 } }]), 'spec.quantization.0.calibration.percentil: unknown key (did you mean percentile?)'],
    ['int4', (s) => (s.quantization = [{ method: 'int4', block_size: 32 }]), 'spec.quantization.0.block_size: unknown key (did you mean blockSize?)'],
    ['LoRA stage', (s) => (s.lora = { train: { steps: 2, batchSize: 2, contextLength: 8 }, nmae: 'x' }), 'spec.lora.nmae: unknown key (did you mean name?)'],
    ['LoRA config', (s) => (s.lora = { lora: { r: 4, lora_alpa: 8 }, train: { steps: 2, batchSize: 2, contextLength: 8 } }), 'spec.lora.lora.lora_alpa: unknown key (did you mean lora_alpha?)'],
    ['LoRA train', (s) => (s.lora = { train: { steps: 2, batchSize: 2, contextLength: 8, stepsPerActvity: 1 } }), 'spec.lora.train.stepsPerActvity: unknown key (did you mean stepsPerActivity?)'],
    ['LoRA dataset', (s) => (s.lora = { dataset: { name: 'x', corpus: { kind: 'brown' }, seeed: 1 }, train: { steps: 2, batchSize: 2, contextLength: 8 } }), 'spec.lora.dataset.seeed: unknown key (did you mean seed?)'],
  ];
  test.each(rows)('%s', (_kind, edit, line) => {
    expect(pipelineLines(edit)).toEqual([line]);
  });

  test('a misspelt required key is reported missing and unknown', () => {
    expect(pipelineLines((s) => (s.training.optimizer = { optimizer: { kind: 'adamw', lr: 1e-3 }, schedule: { kind: 'warmup_cosine', warmup_steps: 1, decay_step: 9, min_lr: 0 } }))).toEqual([
      'spec.training.optimizer.schedule.decay_steps: Invalid input: expected number, received undefined',
      'spec.training.optimizer.schedule.decay_step: unknown key (did you mean decay_steps?)',
    ]);
  });

  test('two unknown keys in one object are two lines', () => {
    expect(pipelineLines((s) => Object.assign(s.model.config, { n_layr: 2, n_haed: 2 }))).toEqual([
      'spec.model.config.n_layr: unknown key (did you mean n_layer?)',
      'spec.model.config.n_haed: unknown key (did you mean n_head?)',
    ]);
  });

  test('under training, the keys a pipeline holds at its top are not suggested', () => {
    expect(pipelineLines((s) => (s.training.nme = 'x'))).toEqual([`spec.training.nme: unknown key (known keys: ${TRAINING_KEYS})`]);
  });
});

const trainingBase = { model: { preset: 'tiny-gpt' }, dataset: { name: 'brown-humor', corpus: { kind: 'brown' } }, rounds: 1, innerSteps: 2, batchSize: 2, contextLength: 16 };
const fineTuneBase = { base: { kind: 'checkpoint', prefix: 'runs/x/global/r000001' }, dataset: { kind: 'ref', prefix: 'datasets/x' }, train: { steps: 2, batchSize: 2, contextLength: 8 } };

describe('training, fine-tune, post-training and schedule specs', () => {
  const rows: [string, () => unknown, string][] = [
    ['training spec', () => parseTrainingSpec({ ...trainingBase, batch_size: 2 }), 'invalid training spec: spec.batch_size: unknown key (did you mean batchSize?)'],
    ['training model config', () => parseTrainingSpec({ ...trainingBase, model: { preset: 'tiny-gpt', config: { n_embed: 64 } } }), 'invalid training spec: spec.model.config.n_embed: unknown key (did you mean n_embd?)'],
    ['fine-tune spec', () => parseFineTuneSpec({ ...fineTuneBase, continueFromAdaptor: true }), 'invalid fine-tune spec: spec.continueFromAdaptor: unknown key (did you mean continueFromAdapter?)'],
    ['fine-tune base (onnx)', () => parseFineTuneSpec({ ...fineTuneBase, base: { kind: 'onnx', key: 'm.onnx', objective: { kind: 'causal' }, input_name: 'ids' } }), 'invalid fine-tune spec: spec.base.input_name: unknown key (did you mean inputName?)'],
    [
      'fine-tune base objective (mlm)',
      () => parseFineTuneSpec({ ...fineTuneBase, base: { kind: 'onnx', key: 'm.onnx', objective: { kind: 'mlm', mask_id: 3, maskId: 3 } } }),
      'invalid fine-tune spec: spec.base.objective.mask_id: unknown key (did you mean maskId?)',
    ],
    ['fine-tune dataset source', () => parseFineTuneSpec({ ...fineTuneBase, dataset: { kind: 'spec', spec: { name: 'x', corpus: { kind: 'text', path: 'a.txt', pth: 'b' } } } }), 'invalid fine-tune spec: spec.dataset.spec.corpus.pth: unknown key (did you mean path?)'],
    ['post-training spec', () => parsePostTrainingSpec({ quant: [{ method: 'int8-dynamic', kernal: 'matmul-integer' }] }), 'invalid post-training spec: postTraining.quant.0.kernal: unknown key (did you mean kernel?)'],
    ['schedule options', () => checkScheduleOptions({ id: 'x', every: '1h', datsetPrefix: 'datasets/x-' }), 'invalid schedule: datsetPrefix: unknown key (did you mean datasetPrefix?)'],
  ];
  test.each(rows)('%s', (_kind, parse, message) => {
    expect(parse).toThrow(message);
    try {
      parse();
    } catch (err) {
      expect((err as Error).message).toBe(message);
    }
  });
});

describe('suggestions', () => {
  test('edit distance counts insertions, deletions, substitutions and adjacent swaps', () => {
    expect(editDistance('n_layr', 'n_layer')).toBe(1);
    expect(editDistance('n_laeyr', 'n_layer')).toBe(1);
    expect(editDistance('lerning_rate', 'learning_rate')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
  });

  test('the nearest key within max(2, len/3) edits is suggested, else the known keys are listed', () => {
    expect(unknownKeyMessage('bta1', ['beta1', 'beta2'])).toBe('unknown key (did you mean beta1?)');
    expect(unknownKeyMessage('ab', ['xy', 'zz'])).toBe('unknown key (did you mean xy?)'); // 2 edits: always close enough
    expect(unknownKeyMessage('abc', ['xyz'])).toBe('unknown key (known keys: xyz)');
    // Nine characters allow three edits, not four.
    expect(unknownKeyMessage('abcdefghi', ['abcdefxyz'])).toBe('unknown key (did you mean abcdefxyz?)');
    expect(unknownKeyMessage('abcdefghi', ['abcdewxyz'])).toBe('unknown key (known keys: abcdewxyz)');
    // A case slip is nearer than a real edit.
    expect(unknownKeyMessage('BatchSize', ['batchSize', 'batchSizes'])).toBe('unknown key (did you mean batchSize?)');
  });
});

test('every committed example spec still parses', () => {
  const files = fs.readdirSync(EXAMPLES).filter((f) => /\.(ya?ml|json)$/.test(f));
  expect(files.length).toBeGreaterThanOrEqual(3);
  for (const f of files) expect(() => parsePipelineSpec(YAML.parse(fs.readFileSync(path.join(EXAMPLES, f), 'utf8')))).not.toThrow();
});
