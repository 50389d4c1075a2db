// Runs a training-step graph for N steps over a batch iterator. Parameters and optimizer state
// ping-pong between steps: each run's `param_out:*` / `state_out:*` tensors are fed straight back
// as the next run's `param:*` / `state:*` inputs, so nothing is copied between steps.

import * as ort from 'onnxruntime-node';
import type { TensorData } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { initParams } from '../models/blocks';
import { paramIn, paramOut, stateIn, stateOut } from '../optim';
import { frozenIn, type TrainStep } from './step';

export type Batch = Record<string, TensorData>;

export interface StepMetrics {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

export interface TrainerOptions {
  threads?: number;
  /** Initial weights by parameter name; missing ones are drawn from the specs' init with `seed`. */
  weights?: Map<string, Float32Array>;
  seed?: number;
  /** Step index to start from (resume); optimizer state then comes from `state`. */
  startStep?: number;
  state?: Map<string, Float32Array>;
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

export class Trainer {
  private feeds: Record<string, ort.Tensor> = {};
  private stepIndex: number;

  private constructor(
    readonly step: TrainStep,
    private readonly session: ort.InferenceSession,
    opts: TrainerOptions,
  ) {
    this.stepIndex = opts.startStep ?? 0;
    const init = initParams([...step.trainable, ...step.frozen].filter((s) => !opts.weights?.has(s.name)), opts.seed ?? 0);
    const weight = (name: string) => opts.weights?.get(name) ?? init.get(name)!;
    for (const s of step.trainable) this.feeds[paramIn(s.name)] = checkedTensor(paramIn(s.name), weight(s.name), s.shape);
    for (const s of step.frozen) this.feeds[frozenIn(s.name)] = checkedTensor(frozenIn(s.name), weight(s.name), s.shape);
    for (const s of step.state) {
      const given = opts.state?.get(s.key);
      const data = given ?? new Float32Array(s.shape.reduce((a, b) => a * b, 1));
      this.feeds[stateIn(s.key)] = checkedTensor(stateIn(s.key), data, s.shape);
    }
  }

  /** Compiles the step graph into one ORT session. */
  static async create(step: TrainStep, opts: TrainerOptions = {}): Promise<Trainer> {
    const session = await ort.InferenceSession.create(serializeModel(step.graph).model, {
      executionProviders: ['cpu'],
      intraOpNumThreads: opts.threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      ...opts.sessionOptions,
    });
    return new Trainer(step, session, opts);
  }

  /** One optimizer step on `batch`. */
  async run(batch: Batch): Promise<StepMetrics> {
    for (const name of this.step.batchInputs) {
      const t = batch[name];
      if (!t) throw new Error(`trainer: batch has no "${name}" (the step graph needs ${this.step.batchInputs.join(', ')})`);
      this.feeds[name] = new ort.Tensor(t.dtype === 'int64' ? 'int64' : 'float32', t.data as Float32Array, t.dims);
    }
    this.feeds.step = new ort.Tensor('float32', Float32Array.of(this.stepIndex), []);
    const out = await this.session.run(this.feeds);
    for (const s of this.step.trainable) this.feeds[paramIn(s.name)] = out[paramOut(s.name)];
    for (const s of this.step.state) this.feeds[stateIn(s.key)] = out[stateOut(s.key)];
    const scalar = (n: string) => (out[n].data as Float32Array)[0];
    const m = { step: this.stepIndex, loss: scalar('loss'), gradNorm: scalar('grad_norm'), lr: scalar('lr') };
    if (!Number.isFinite(m.loss)) throw new Error(`trainer: loss is ${m.loss} at step ${m.step}`);
    this.stepIndex++;
    return m;
  }

  /** Runs up to `steps` steps, pulling one batch per step; stops early if the iterator ends. */
  async train(batches: Iterator<Batch> | Iterable<Batch>, steps: number, onStep?: (m: StepMetrics) => void): Promise<StepMetrics[]> {
    const it = Symbol.iterator in batches ? (batches as Iterable<Batch>)[Symbol.iterator]() : (batches as Iterator<Batch>);
    const history: StepMetrics[] = [];
    for (let i = 0; i < steps; i++) {
      const next = it.next();
      if (next.done) break;
      const m = await this.run(next.value);
      history.push(m);
      onStep?.(m);
    }
    return history;
  }

  get nextStep(): number {
    return this.stepIndex;
  }

  /** Current weights of the trainable parameters (copies). */
  params(): Map<string, Float32Array> {
    return new Map(this.step.trainable.map((s) => [s.name, (this.feeds[paramIn(s.name)].data as Float32Array).slice()]));
  }

  /** Current optimizer state by key (copies), e.g. for a checkpoint. */
  optimizerState(): Map<string, Float32Array> {
    return new Map(this.step.state.map((s) => [s.key, (this.feeds[stateIn(s.key)].data as Float32Array).slice()]));
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

function checkedTensor(name: string, data: Float32Array, shape: number[]): ort.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`trainer: ${name} has ${data.length} values, shape [${shape.join(', ')}] needs ${n}`);
  return new ort.Tensor('float32', data, shape);
}
