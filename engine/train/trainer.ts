// Runs a training-step graph for N steps over a batch iterator, on the runtime's StepRunner
// (parameters and optimizer state ping-pong between two pre-allocated buffer sets).

import type * as ort from 'onnxruntime-node';
import type { TensorData } from '../graph/ir';
import { serializeModel } from '../graph/onnx';
import { initParams } from '../models/blocks';
import { createSession, StepRunner, type SessionConfig } from '../runtime';
import type { TrainStep } from './step';

export type Batch = Record<string, TensorData>;

export interface StepMetrics {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
}

export interface TrainerOptions {
  /** Session settings (threads, EP, optimization level); ignored when `session` is given. */
  sessionConfig?: SessionConfig;
  /** A session already created from `serializeModel(step.graph)` (e.g. with profiling on). */
  session?: ort.InferenceSession;
  /** Initial weights by parameter name; missing ones are drawn from the specs' init with `seed`. */
  weights?: Map<string, Float32Array>;
  seed?: number;
  /** Step index to start from (resume); optimizer state then comes from `state`. */
  startStep?: number;
  state?: Map<string, Float32Array>;
}

export class Trainer {
  private constructor(
    readonly step: TrainStep,
    readonly runner: StepRunner,
  ) {}

  /** Compiles the step graph into one ORT session and loads weights and optimizer state. */
  static async create(step: TrainStep, opts: TrainerOptions = {}): Promise<Trainer> {
    const session = opts.session ?? (await createSession(serializeModel(step.graph).model, { graphOptimizationLevel: 'all', ...opts.sessionConfig }));
    const all = [...step.trainable, ...step.frozen];
    const init = initParams(all.filter((s) => !opts.weights?.has(s.name)), opts.seed ?? 0);
    const weight = (name: string) => opts.weights?.get(name) ?? init.get(name)!;
    const runner = new StepRunner(session, {
      params: Object.fromEntries(step.trainable.map((s) => [s.name, weight(s.name)])),
      frozen: { ...Object.fromEntries(step.frozen.map((s) => [s.name, weight(s.name)])), ...Object.fromEntries(step.fixed ?? []) },
      state: opts.state ? Object.fromEntries(opts.state) : undefined,
      step: opts.startStep ?? 0,
    });
    return new Trainer(step, runner);
  }

  /** One optimizer step on `batch`. Throws NonFiniteLossError (weights kept) on a NaN/inf loss. */
  async run(batch: Batch): Promise<StepMetrics> {
    const r = await this.runner.run(batch);
    return { step: r.step, loss: r.loss, gradNorm: r.gradNorm, lr: r.scalars.lr };
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
    return this.runner.step;
  }

  /** Current weights of the trainable parameters (copies). */
  params(): Map<string, Float32Array> {
    return new Map(Object.entries(this.runner.getParams()));
  }

  /** Current optimizer state by key (copies), e.g. for a checkpoint. */
  optimizerState(): Map<string, Float32Array> {
    return new Map(Object.entries(this.runner.getState()));
  }

  async release(): Promise<void> {
    await this.runner.release();
  }
}
