// K optimizer steps per `session.run`: the one-step training graph (step.ts) becomes the body of an
// ONNX Loop, so weights and optimizer state stay inside the session between the K steps instead
// of crossing the session boundary (and, on a GPU, PCIe) twice a step.
//
//   inputs   param:<name>, state:<key> (as the one-step graph), frozen:<name> (read from the outer
//            scope by the body), `step` (the first step of the run), every batch input stacked as
//            (k, ...one step's shape) with k, the number of steps this run makes, a symbolic dim
//   outputs  param_out:<name>, state_out:<key> after the k-th step, and every other output of the
//            step (loss, grad_norm, lr, ...) stacked as (k)
//
// The body is the one-step graph node for node (every name prefixed, so nothing shadows the outer
// scope): iteration i reads batch row i (Gather on the iteration number) and the step value
// `step + i`, exactly what the i-th single run would be fed. Loop-carried values pass from one
// iteration to the next untouched, so k steps of this graph give the same bits as k single runs
// (test/engine/ksteps.test.ts checks weights, moments and losses bit for bit).

import { Graph, type Node, type Value } from '../graph/ir';
import { hasGuessedType, markGuessedType } from '../graph/onnx-load';
import type { TrainStep } from './step';

/** The dim the stacked batch inputs and per-step outputs share: how many steps one run makes. */
export const STEPS_DIM = 'steps';
/** Every value of the one-step graph gets this prefix inside the Loop body. */
const BODY = 'k/';
const FROZEN = 'frozen:';
const CARRIED = /^(param|state):/;
const OUT_OF: Record<string, string> = { param: 'param_out', state: 'state_out' };

/**
 * The graph that runs 1..K steps of `step` per session.run (K: the leading dim of the batch feeds).
 * @example const g = buildMultiStepGraph(buildTrainStep(model, optim)); // tokens (k, B, T) → loss (k)
 */
export function buildMultiStepGraph(step: TrainStep): Graph {
  const one = step.graph;
  for (const n of one.nodes) {
    if (Object.values(n.attrs).some((a) => a.type === 'graph')) throw new Error(`buildMultiStepGraph: node ${n.name} (${n.opType}) has a subgraph; a step with control flow cannot be a Loop body here`);
  }
  const outer = new Graph(`${one.name}_ksteps`);
  for (const [d, v] of one.opsets) outer.opsets.set(d, v);
  const body = new Graph(`${one.name}_body`);
  const local = (name: string) => (name === '' || name.startsWith(FROZEN) ? name : BODY + name);

  const iter = body.input(local('iteration'), 'int64', []);
  const cond = body.input(local('cond'), 'bool', []);
  const carriedIn: Value[] = [];
  const batch: Value[] = [];
  let stepIn: Value | null = null;
  for (const v of one.inputs) {
    if (CARRIED.test(v.name)) {
      carriedIn.push(outer.input(v.name, v.dtype, v.shape));
      body.input(local(v.name), v.dtype, v.shape);
    } else if (v.name.startsWith(FROZEN)) {
      outer.input(v.name, v.dtype, v.shape);
    } else if (v.name === 'step') {
      stepIn = outer.input('step', v.dtype, []);
    } else {
      if (!v.shape) throw new Error(`buildMultiStepGraph: batch input "${v.name}" has unknown rank`);
      batch.push(outer.input(v.name, v.dtype, [STEPS_DIM, ...v.shape]));
    }
  }
  if (batch.length === 0) throw new Error('buildMultiStepGraph: the step has no batch input to stack');
  const add = (node: Omit<Node, 'domain' | 'attrs'> & Partial<Pick<Node, 'attrs'>>, infos: { dtype: Value['dtype']; shape: Value['shape'] }[]) =>
    body.addNode({ domain: '', attrs: {}, ...node }, infos);

  // Step i of the run is `step + i`, computed the way the runner would feed it (exact below 2^24).
  if (stepIn) {
    const dtype = stepIn.dtype;
    let offset = iter.name;
    if (dtype !== 'int64') {
      if (dtype !== 'float32') throw new Error(`buildMultiStepGraph: input "step" is ${dtype}; expected float32 or int64`);
      offset = local('iteration_f');
      add({ opType: 'Cast', name: local('cast_iteration'), inputs: [iter.name], outputs: [offset], attrs: { to: { type: 'int', value: 1 } } }, [{ dtype, shape: [] }]);
    }
    add({ opType: 'Add', name: local('step_of_iteration'), inputs: ['step', offset], outputs: [local('step')] }, [{ dtype, shape: [] }]);
  }
  // Row i of each stacked batch input: (k, ...) → (...).
  for (const b of batch) {
    add({ opType: 'Gather', name: local(`row_${b.name}`), inputs: [b.name, iter.name], outputs: [local(b.name)], attrs: { axis: { type: 'int', value: 0 } } }, [{ dtype: b.dtype, shape: b.shape!.slice(1) }]);
  }
  for (const t of one.initializers.values()) body.initializer(local(t.name), { dtype: t.dtype, dims: t.dims, data: t.data });
  for (const n of one.nodes) {
    const infos = n.outputs.map((o) => {
      const v = o ? one.values.get(o) : undefined;
      return v ? { dtype: v.dtype, shape: v.shape } : { dtype: 'float32' as const, shape: null };
    });
    body.addNode({ ...n, name: local(n.name), inputs: n.inputs.map(local), outputs: n.outputs.map(local) }, infos);
    // A dtype the ONNX loader guessed (an imported base) stays out of value_info in the body too.
    for (const o of n.outputs) if (o && hasGuessedType(one, o)) markGuessedType(body, local(o));
  }

  // Body outputs: cond, then each carried value's update in input order, then the per-step scans.
  body.outputs.push(body.op('Identity', [cond], {}, { outputNames: [local('cond_out')] })[0]);
  const outNames = new Set(one.outputs.map((o) => o.name));
  const carriedOut = carriedIn.map((v) => {
    const [kind, name] = [v.name.slice(0, v.name.indexOf(':')), v.name.slice(v.name.indexOf(':') + 1)];
    const out = `${OUT_OF[kind]}:${name}`;
    if (!outNames.has(out)) throw new Error(`buildMultiStepGraph: input "${v.name}" has no output "${out}"`);
    body.outputs.push(body.value(local(out)));
    return out;
  });
  const scans = one.outputs.map((o) => o.name).filter((n) => !carriedOut.includes(n));
  for (const s of scans) body.outputs.push(body.value(local(s)));

  // M = k, the leading dim of the first batch input.
  const k = outer.op('Gather', [outer.op('Shape', [batch[0]])[0], outer.scalar(0, 'int64')], { axis: 0 })[0];
  const outs = outer.op('Loop', [k, null, ...carriedIn], { body }, { name: 'ksteps', outputNames: [...carriedOut, ...scans] });
  for (const o of outs) {
    if (o.shape && scans.includes(o.name)) o.shape = [STEPS_DIM, ...o.shape.slice(1)];
    outer.output(o);
  }
  return outer;
}

/** The graph a session runs for `stepsPerRun` steps per run: the step itself for 1, its Loop otherwise. */
export function stepGraph(step: TrainStep, stepsPerRun = 1): Graph {
  if (!Number.isInteger(stepsPerRun) || stepsPerRun < 1) throw new Error(`stepsPerRun must be a positive integer, got ${stepsPerRun}`);
  return stepsPerRun === 1 ? step.graph : buildMultiStepGraph(step);
}
