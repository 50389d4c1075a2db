// Fixing an imported graph to concrete input shapes. torch.onnx exports compute shapes at run time
// (Shape → Gather → Unsqueeze → Concat → Where(Equal(s, -1), 1, s) → Expand/Reshape), so after
// loading, many values have unknown rank and autodiff cannot reduce broadcast gradients. A
// training step is built for one batch geometry anyway (as our own models are), so we evaluate
// every value that depends only on shapes — never on input values — once with ORT for the given
// input dims, turn those values into initializers and reload: the shape rules then see constants.

import * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import { Graph, type DType, type TensorData, type TypedArray } from '../graph/ir';
import { loadModel, serializeModel } from '../graph/onnx';
import { lookupOp } from '../graph/registry';

/** Ops whose output is a function of their input's shape only. */
const SHAPE_SOURCES = new Set(['Shape', 'Size']);
/** Ops whose output shape depends on input values: a Shape downstream of them is not a constant. */
// Random ops are listed too: their outputs must never be folded into constants.
const DATA_DEPENDENT = new Set(['NonZero', 'Unique', 'Compress', 'NonMaxSuppression', 'TopK', 'Loop', 'If', 'Scan', 'RandomNormal', 'RandomUniform', 'RandomNormalLike', 'RandomUniformLike', 'Multinomial', 'Bernoulli']);

function dummyInput(name: string, dtype: DType, dims: number[]): ort.Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  switch (dtype) {
    case 'int64':
      return new ort.Tensor('int64', new BigInt64Array(n), dims);
    case 'int32':
      return new ort.Tensor('int32', new Int32Array(n), dims);
    case 'float32':
      return new ort.Tensor('float32', new Float32Array(n), dims);
    case 'bool':
      return new ort.Tensor('bool', new Uint8Array(n), dims);
    default:
      throw new EngineError('config', `specialize: input ${name} has dtype ${dtype}, which has no dummy feed`);
  }
}

/**
 * A copy of the model with `inputShapes` fixed and every shape-only value folded into an
 * initializer. Every graph input needs an entry; a dim that contradicts the file's is an error.
 * @example const g = await specializeInputs(bytes, { input_ids: [4, 8], attention_mask: [4, 8] })
 */
export async function specializeInputs(src: Graph | Uint8Array | string, inputShapes: Record<string, number[]>): Promise<Graph> {
  const g = src instanceof Graph ? src : loadModel(src);
  for (const v of g.inputs) {
    const dims = inputShapes[v.name];
    if (!dims) throw new EngineError('config', `specialize: no shape given for input "${v.name}" (inputs: ${g.inputs.map((i) => i.name).join(', ')})`);
    if (v.shape && (v.shape.length !== dims.length || v.shape.some((d, i) => typeof d === 'number' && d !== dims[i]))) {
      throw new EngineError('config', `specialize: input "${v.name}" is [${v.shape.join(', ')}] in the model, got [${dims.join(', ')}]`);
    }
    v.shape = [...dims];
  }
  const shapeOnly = shapeOnlyValues(g);
  if (shapeOnly.length === 0) return reinferShapes(g);
  // Probe: the same graph with the shape-only values as outputs.
  const outputs = [...g.outputs];
  g.outputs.length = 0;
  for (const name of shapeOnly) g.outputs.push(g.value(name));
  let folded: Record<string, ort.Tensor>;
  const session = await ort.InferenceSession.create(serializeModel(g, { valueInfo: 'io' }).model, { graphOptimizationLevel: 'disabled' });
  try {
    folded = await session.run(Object.fromEntries(g.inputs.map((v) => [v.name, dummyInput(v.name, v.dtype, inputShapes[v.name])])));
  } finally {
    await session.release();
  }
  g.outputs.length = 0;
  g.outputs.push(...outputs);
  const drop = new Set(shapeOnly);
  for (let i = g.nodes.length - 1; i >= 0; i--) if (g.nodes[i].outputs.every((o) => !o || drop.has(o))) g.nodes.splice(i, 1);
  for (const name of shapeOnly) {
    const t = folded[name];
    const dtype = g.value(name).dtype;
    g.values.delete(name);
    g.initializer(name, { dtype, dims: [...t.dims], data: t.data as TypedArray } as TensorData);
  }
  return reinferShapes(g);
}

/**
 * Runs every node's shape rule again, in order, now that shape inputs are constants. Done in place
 * rather than by serialize + load: the loader trusts a file's (symbolic) output shapes over rules.
 */
export function reinferShapes(g: Graph): Graph {
  for (const node of g.nodes) {
    const def = lookupOp(node.opType, node.domain);
    if (!def) continue;
    const inputs = node.inputs.map((n) => (n ? g.value(n) : null));
    let infos;
    try {
      infos = def.infer(inputs, node.attrs, g);
    } catch {
      continue; // a rule that cannot handle this node's form keeps the loaded shape
    }
    node.outputs.forEach((o, i) => {
      const v = o ? g.values.get(o) : undefined;
      if (v && infos[i] && infos[i].shape) v.shape = infos[i].shape;
    });
  }
  return g;
}

/**
 * Non-float values computed only from shapes and constants, in graph order. Float values are
 * left alone even when constant: folding them would bake activations into the file.
 */
function shapeOnlyValues(g: Graph): string[] {
  const known = new Set<string>(g.initializers.keys());
  const dynamic = new Set<string>();
  const out: string[] = [];
  const outputNames = new Set(g.outputs.map((v) => v.name));
  for (const node of g.nodes) {
    if (DATA_DEPENDENT.has(node.opType) || node.inputs.some((i) => dynamic.has(i))) for (const o of node.outputs) if (o) dynamic.add(o);
    if (node.domain || DATA_DEPENDENT.has(node.opType)) continue;
    const fromShape = SHAPE_SOURCES.has(node.opType) && !dynamic.has(node.inputs[0]);
    // Constant, Range of constants, ConstantOfShape of a known shape...: every input known (or none).
    const fromConstants = node.inputs.every((i) => !i || known.has(i));
    if (!fromShape && !fromConstants) continue;
    for (const o of node.outputs) {
      if (!o) continue;
      known.add(o);
      const v = g.values.get(o);
      if (v && v.dtype !== 'float32' && v.dtype !== 'float16' && v.dtype !== 'float64' && v.dtype !== 'bfloat16' && !outputNames.has(o) && !g.initializers.has(o)) out.push(o);
    }
  }
  return out;
}
