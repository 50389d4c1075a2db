// Drives a training-step session: one session.run = one optimizer step.
//
// Graph I/O convention (engine/optim's buildTrainStep emits it):
//   inputs   param:<name>, state:<name>, frozen:<name> (fixed weights, e.g. a LoRA base),
//            free-form batch inputs, scalar `step` (float32 or int64)
//   outputs  param_out:<name>, state_out:<name>, `loss`, `grad_norm`, other scalars (e.g. `lr`)
// A state input `state:@flat.<slot>` (engine/optim/flat.ts) is one 1-D buffer holding that slot
// for every `param:` input without a `state:<param>.<slot>` input of its own, concatenated in
// input order; the runner shows it as per-tensor views `<param>.<slot>` in getState/setState, so
// checkpoints, resumes and callers never see the layout (a per-tensor checkpoint loads into a
// flat graph and back).
// Params and optimizer state live in two pre-allocated buffer sets that swap roles every step
// (outputs of step k are the inputs of step k+1). ORT-node 1.30 writes pre-allocated outputs in
// place, so weights never need copying on our side; its binding nevertheless returns a fresh copy
// of every output (measured: the returned tensor's ArrayBuffer is not ours), which we drop. That
// copy is an ORT-node limit no JS code can avoid.

import type * as ort from 'onnxruntime-node';
import { Tensor } from 'onnxruntime-node';
import type { TensorData } from '../graph/ir';
import { EngineError } from '../errors';

export interface StepRunnerInit {
  /** Initial weights by name (without the `param:` prefix); copied in. */
  params: Record<string, Float32Array>;
  /** Initial optimizer state by name (without `state:`); missing entries start at zero. */
  state?: Record<string, Float32Array>;
  /** Weights that do not train, by name (without `frozen:`); fed unchanged every step. A
   * non-float32 input (a quantized LoRA base) takes a TensorData of its dtype. */
  frozen?: Record<string, Float32Array | TensorData>;
  /** Value fed as `step` on the first run (default 0); it increases by one per step. */
  step?: number;
  /**
   * Most steps one session.run makes (default 1). Above 1 the session must be a K-step graph
   * (engine/train/ksteps.ts: batch inputs stacked as (k, ...), per-step outputs as (k)).
   */
  stepsPerRun?: number;
}

export interface StepResult {
  /** The `step` input this run used. */
  step: number;
  loss: number;
  gradNorm: number;
  /** Every scalar output, by name (loss, grad_norm, lr, ...). */
  scalars: Record<string, number>;
}

export class NonFiniteLossError extends EngineError {
  constructor(
    readonly step: number,
    readonly loss: number,
    /** The first step of the K-step run it happened in (default: `step`): the buffers hold the values before it. */
    readonly runStart = step,
  ) {
    const left = runStart === step ? 'this step' : `step ${runStart}, where this multi-step run began`;
    super('non-finite', `training step ${step}: loss is ${loss}; params and optimizer state were left at their values before ${left}`, { details: { step } });
  }
}

interface Slot {
  name: string; // without prefix
  input: string;
  output: string;
  dims: number[];
  /** Two buffers, one Tensor over each; `cur` indexes the one holding current values. */
  bufs: [Float32Array, Float32Array];
  tensors: [ort.Tensor, ort.Tensor];
  /** What callers see: the whole buffer under `name`, or a flat buffer's per-parameter pieces. */
  views: View[];
}

interface View {
  name: string;
  offset: number;
  size: number;
  dims: number[];
}

const PARAM = 'param:';
const STATE = 'state:';
const FROZEN = 'frozen:';
/** Flat state keys (engine/optim/names.ts): `@flat.<slot>`. */
const FLAT = '@flat.';

/** ORT tensor types for the IR dtypes a batch may carry. */
const ORT_TYPE: Partial<Record<TensorData['dtype'], ort.Tensor.Type>> = {
  float32: 'float32',
  float64: 'float64',
  float16: 'float16',
  int64: 'int64',
  int32: 'int32',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

function toTensor(name: string, t: ort.Tensor | TensorData): ort.Tensor {
  if (t instanceof Tensor) return t;
  const d = t as TensorData;
  const type = ORT_TYPE[d.dtype];
  if (!type) throw new Error(`batch input "${name}": dtype ${d.dtype} cannot be fed to ORT`);
  return new Tensor(type, d.data as Float32Array, d.dims);
}

/** Batch feeds of consecutive steps stacked along a new leading axis: k × (...) → (k, ...). */
function stackFeeds(name: string, parts: (ort.Tensor | TensorData)[]): ort.Tensor {
  const ts = parts.map((t) => toTensor(name, t));
  const dims = ts[0].dims;
  const type = ts[0].type;
  for (const [i, t] of ts.entries()) {
    if (t.type !== type || t.dims.join() !== dims.join()) throw new Error(`batch input "${name}": step ${i} of the run is ${t.type} [${t.dims}], step 0 is ${type} [${dims}]`);
  }
  const first = ts[0].data as Float32Array;
  const Ctor = first.constructor as new (n: number) => Float32Array;
  const data = new Ctor(first.length * ts.length);
  ts.forEach((t, i) => data.set(t.data as Float32Array, i * first.length));
  return new Tensor(type, data, [ts.length, ...dims]);
}

function staticDims(meta: ort.InferenceSession.ValueMetadata, who: string, anyType = false): number[] {
  if (!meta.isTensor) throw new Error(`${who} is not a tensor`);
  if (meta.type !== 'float32' && !anyType) throw new Error(`${who} is ${meta.type}; params and optimizer state must be float32`);
  return meta.shape.map((d, i) => {
    if (typeof d !== 'number') throw new Error(`${who} has symbolic dim ${i} ("${d}"); params and optimizer state need static shapes`);
    return d;
  });
}

export class StepRunner {
  private readonly params: Slot[] = [];
  private readonly state: Slot[] = [];
  private readonly frozen = new Map<string, { dims: number[]; type: string }>();
  private readonly batchNames: string[] = [];
  /** Feeds/fetches for the two parities, built once; only batch inputs change per step. */
  private readonly feeds: [Record<string, ort.Tensor>, Record<string, ort.Tensor>] = [{}, {}];
  private readonly fetches: [Record<string, ort.Tensor | null>, Record<string, ort.Tensor | null>] = [{}, {}];
  private readonly scalarOut = new Map<string, Float32Array>();
  private stepTensor: ort.Tensor | null = null;
  private cur: 0 | 1 = 0;
  private nextStep: number;
  /** Most steps one run makes: 1, or K for a K-step session. */
  readonly stepsPerRun: number;

  constructor(
    readonly session: ort.InferenceSession,
    init: StepRunnerInit,
  ) {
    this.nextStep = init.step ?? 0;
    this.stepsPerRun = init.stepsPerRun ?? 1;
    if (!Number.isInteger(this.stepsPerRun) || this.stepsPerRun < 1) throw new Error(`stepsPerRun must be a positive integer, got ${this.stepsPerRun}`);
    const inMeta = new Map(session.inputMetadata.map((m) => [m.name, m]));
    const outMeta = new Map(session.outputMetadata.map((m) => [m.name, m]));
    for (const req of ['loss', 'grad_norm']) {
      if (!outMeta.has(req)) throw new Error(`training-step session has no "${req}" output (outputs: ${session.outputNames.join(', ')})`);
    }
    const lossMeta = outMeta.get('loss')!;
    const lossRank = lossMeta.isTensor ? lossMeta.shape.length : -1;
    if (lossRank !== (this.stepsPerRun > 1 ? 1 : 0)) {
      throw new Error(`training-step session: output "loss" has rank ${lossRank}; stepsPerRun ${this.stepsPerRun} needs ${this.stepsPerRun > 1 ? 'a K-step session (loss per step, rank 1; engine/train/ksteps.ts)' : 'a one-step session (scalar loss)'}`);
    }
    for (const name of session.inputNames) {
      const meta = inMeta.get(name)!;
      if (name.startsWith(PARAM) || name.startsWith(STATE)) {
        const isParam = name.startsWith(PARAM);
        const short = name.slice(isParam ? PARAM.length : STATE.length);
        const output = `${isParam ? 'param_out:' : 'state_out:'}${short}`;
        const om = outMeta.get(output);
        if (!om) throw new Error(`training-step session: input "${name}" has no matching output "${output}"`);
        const dims = staticDims(meta, `input "${name}"`);
        const odims = staticDims(om, `output "${output}"`);
        if (dims.join() !== odims.join()) throw new Error(`training-step session: "${name}" is [${dims}] but "${output}" is [${odims}]`);
        (isParam ? this.params : this.state).push(this.slot(short, name, output, dims));
      } else if (name.startsWith(FROZEN)) {
        this.frozen.set(name.slice(FROZEN.length), { dims: staticDims(meta, `input "${name}"`, true), type: meta.isTensor ? meta.type : '' });
      } else if (name === 'step') {
        const t = meta.isTensor ? meta.type : 'non-tensor';
        if (t === 'float32') this.stepTensor = new Tensor('float32', new Float32Array(1), []);
        else if (t === 'int64') this.stepTensor = new Tensor('int64', new BigInt64Array(1), []);
        else throw new Error(`training-step session: input "step" is ${t}; expected a float32 or int64 scalar`);
        this.feeds[0].step = this.feeds[1].step = this.stepTensor;
      } else {
        this.batchNames.push(name);
      }
    }
    for (const name of session.outputNames) {
      const m = outMeta.get(name)!;
      if (name.startsWith('param_out:') || name.startsWith('state_out:')) continue;
      // Scalar float outputs get a reused one-element buffer; anything else ORT allocates.
      if (m.isTensor && m.type === 'float32' && m.shape.length === 0) {
        const buf = new Float32Array(1);
        this.scalarOut.set(name, buf);
        this.fetches[0][name] = this.fetches[1][name] = new Tensor('float32', buf, []);
      } else {
        this.fetches[0][name] = this.fetches[1][name] = null;
      }
    }
    for (const s of this.state) if (s.name.startsWith(FLAT)) s.views = this.flatViews(s);
    this.setParams(init.params);
    this.setFrozen(init.frozen ?? {});
    const state: Record<string, Float32Array> = {};
    for (const v of this.state.flatMap((s) => s.views)) state[v.name] = init.state?.[v.name] ?? new Float32Array(v.size);
    this.setState(state);
  }

  /** `@flat.<slot>` → `<param>.<slot>` for each param in input order that has no state input of its own, checked against its length. */
  private flatViews(s: Slot): View[] {
    const slot = s.name.slice(FLAT.length);
    const own = new Set(this.state.map((x) => x.name));
    let offset = 0;
    const views = this.params.filter((p) => !own.has(`${p.name}.${slot}`)).map((p) => {
      const size = p.bufs[0].length;
      return { name: `${p.name}.${slot}`, offset: (offset += size) - size, size, dims: p.dims };
    });
    if (s.dims.length !== 1 || offset !== s.bufs[0].length) {
      throw new Error(`training-step session: flat state "${s.input}" is [${s.dims}] but the ${views.length} param inputs it covers hold ${offset} values`);
    }
    return views;
  }

  private slot(name: string, input: string, output: string, dims: number[]): Slot {
    const n = dims.reduce((a, b) => a * b, 1);
    const bufs: [Float32Array, Float32Array] = [new Float32Array(n), new Float32Array(n)];
    const tensors: [ort.Tensor, ort.Tensor] = [new Tensor('float32', bufs[0], dims), new Tensor('float32', bufs[1], dims)];
    // Parity p reads buffer p and writes buffer 1 - p.
    for (const p of [0, 1] as const) {
      this.feeds[p][input] = tensors[p];
      this.fetches[p][output] = tensors[1 - p];
    }
    return { name, input, output, dims, bufs, tensors, views: [{ name, offset: 0, size: n, dims }] };
  }

  /** Names of the batch inputs each step() needs. */
  get batchInputs(): readonly string[] {
    return this.batchNames;
  }

  /** The `step` value the next run will use. */
  get step(): number {
    return this.nextStep;
  }

  /** Runs one training step; batch holds every batch input by name (ORT tensors or IR TensorData). */
  async run(batch: Record<string, ort.Tensor | TensorData>): Promise<StepResult> {
    if (this.stepsPerRun > 1) return (await this.runMany([batch]))[0];
    const p = this.cur;
    const feeds = this.feeds[p];
    for (const name of this.batchNames) {
      const t = batch[name];
      if (!t) throw new Error(`training step ${this.nextStep}: batch input "${name}" is missing (need: ${this.batchNames.join(', ')})`);
      feeds[name] = toTensor(name, t);
    }
    if (this.stepTensor) {
      const d = this.stepTensor.data;
      if (d instanceof BigInt64Array) d[0] = BigInt(this.nextStep);
      else (d as Float32Array)[0] = this.nextStep;
    }
    const out = await this.session.run(feeds, this.fetches[p]);
    const scalars: Record<string, number> = {};
    for (const [name, buf] of this.scalarOut) scalars[name] = buf[0];
    for (const [name, t] of Object.entries(out)) {
      if (!(name in scalars) && t.size === 1 && typeof t.data[0] === 'number') scalars[name] = t.data[0] as number;
    }
    const step = this.nextStep;
    const loss = scalars.loss;
    // A non-finite loss leaves the current buffers untouched (the step wrote the other set).
    if (!Number.isFinite(loss)) throw new NonFiniteLossError(step, loss);
    this.cur = (1 - p) as 0 | 1;
    this.nextStep++;
    return { step, loss, gradNorm: scalars.grad_norm, scalars };
  }

  /**
   * Runs the next `batches.length` steps (at most stepsPerRun) in one session.run of a K-step
   * session, each step's batch as `run` takes it; a one-step session runs them one by one. A
   * non-finite loss leaves params and state at their values before the first of these steps.
   */
  async runSteps(batches: Record<string, ort.Tensor | TensorData>[]): Promise<StepResult[]> {
    const k = batches.length;
    if (k < 1 || k > this.stepsPerRun) throw new Error(`training step ${this.nextStep}: ${k} batches for one run; this runner makes 1..${this.stepsPerRun} steps per run`);
    if (this.stepsPerRun === 1) return [await this.run(batches[0])];
    return this.runMany(batches);
  }

  /** One run of a K-step session over `batches` (not overridable: a subclass maps feeds in run/runSteps). */
  private async runMany(batches: Record<string, ort.Tensor | TensorData>[]): Promise<StepResult[]> {
    const k = batches.length;
    const p = this.cur;
    const feeds = this.feeds[p];
    for (const name of this.batchNames) {
      const parts = batches.map((b, i) => {
        const t = b[name];
        if (!t) throw new Error(`training step ${this.nextStep + i}: batch input "${name}" is missing (need: ${this.batchNames.join(', ')})`);
        return t;
      });
      feeds[name] = stackFeeds(name, parts);
    }
    if (this.stepTensor) {
      const d = this.stepTensor.data;
      if (d instanceof BigInt64Array) d[0] = BigInt(this.nextStep);
      else (d as Float32Array)[0] = this.nextStep;
    }
    const out = await this.session.run(feeds, this.fetches[p]);
    const perStep = Object.entries(out).filter(([name, t]) => !name.startsWith('param_out:') && !name.startsWith('state_out:') && t.dims.length === 1 && t.dims[0] === k && t.data instanceof Float32Array);
    const first = this.nextStep;
    const results = Array.from({ length: k }, (_, i) => {
      const scalars: Record<string, number> = {};
      for (const [name, t] of perStep) scalars[name] = (t.data as Float32Array)[i];
      return { step: first + i, loss: scalars.loss, gradNorm: scalars.grad_norm, scalars };
    });
    const bad = results.find((r) => !Number.isFinite(r.loss));
    if (bad) throw new NonFiniteLossError(bad.step, bad.loss, first);
    this.cur = (1 - p) as 0 | 1;
    this.nextStep += k;
    return results;
  }

  /** Copies of the current weights by name, safe to keep (e.g. for a checkpoint). */
  getParams(): Record<string, Float32Array> {
    return this.read(this.params);
  }

  getState(): Record<string, Float32Array> {
    return this.read(this.state);
  }

  /** Overwrites current weights; every param must be given with its exact element count. */
  setParams(values: Record<string, Float32Array>): void {
    this.write(this.params, values, 'param');
  }

  setState(values: Record<string, Float32Array>): void {
    this.write(this.state, values, 'state');
  }

  /** Replaces the frozen weights (every `frozen:` input must be given); they are not copied. */
  setFrozen(values: Record<string, Float32Array | TensorData>): void {
    for (const name of Object.keys(values)) {
      if (!this.frozen.has(name)) throw new Error(`set frozen "${name}": the session has no input "${FROZEN}${name}"`);
    }
    for (const [name, { dims, type }] of this.frozen) {
      const v = values[name];
      const n = dims.reduce((a, b) => a * b, 1);
      if (!v) throw new Error(`set frozen weights: "${name}" is missing`);
      const t: TensorData = v instanceof Float32Array ? { dtype: 'float32', dims, data: v } : v;
      if (t.dtype !== type) throw new Error(`set frozen "${name}": ${t.dtype} given, the session's input is ${type}`);
      if (t.data.length !== n) throw new Error(`set frozen "${name}": ${t.data.length} values for shape [${dims}] (${n})`);
      this.feeds[0][FROZEN + name] = this.feeds[1][FROZEN + name] = new Tensor(t.dtype as 'float32', t.data as Float32Array, dims);
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** Continue from a checkpoint: the next run feeds `step`. */
  setStep(step: number): void {
    this.nextStep = step;
  }

  private read(slots: Slot[]): Record<string, Float32Array> {
    const views = slots.flatMap((s) => s.views.map((v) => ({ s, v })));
    if (slots === this.state) {
      // Param by param (`w.m`, `w.v`, `b.m`, ...), the order a per-tensor graph declares its state
      // in, so every layout lists its state alike. A state key is `<param>.<slot>`, slot dot-free.
      const param = new Map(this.params.map((p, i) => [p.name, i]));
      const slotOrder = [...new Set(views.map(({ v }) => v.name.slice(v.name.lastIndexOf('.') + 1)))];
      const key = (name: string) => [param.get(name.slice(0, name.lastIndexOf('.'))) ?? Number.MAX_SAFE_INTEGER, slotOrder.indexOf(name.slice(name.lastIndexOf('.') + 1))];
      views.sort((a, b) => {
        const [x, y] = [key(a.v.name), key(b.v.name)];
        return x[0] - y[0] || x[1] - y[1];
      });
    }
    const out: Record<string, Float32Array> = {};
    for (const { s, v } of views) out[v.name] = s.bufs[this.cur].slice(v.offset, v.offset + v.size);
    return out;
  }

  private write(slots: Slot[], values: Record<string, Float32Array>, kind: string): void {
    const views = slots.flatMap((s) => s.views.map((v) => ({ s, v })));
    const known = new Set(views.map(({ v }) => v.name));
    for (const name of Object.keys(values)) {
      if (!known.has(name)) throw new Error(`set ${kind} "${name}": the session has no input "${kind}:${name}"${kind === 'state' ? ' (nor a flat state holding it)' : ''}`);
    }
    for (const { s, v } of views) {
      const x = values[v.name];
      if (!x) throw new Error(`set ${kind}s: "${v.name}" is missing`);
      if (x.length !== v.size) throw new Error(`set ${kind} "${v.name}": ${x.length} values for shape [${v.dims}] (${v.size})`);
      s.bufs[this.cur].set(x, v.offset);
    }
  }
}
