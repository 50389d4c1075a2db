// Bringing an imported graph to opset 23 before training ops are appended. Our autodiff rules,
// seeded dropout and optimizers emit opset-23 forms (ReduceMean with an axes input, BitwiseAnd,
// Shape start/end), and a model has one ai.onnx opset, so an older export (torch.onnx defaults to
// 14–17) is upgraded in place. Between opset 11 and 23 the changes that break old nodes are few
// and mechanical: `axes`/`split` attributes became inputs (13 for ReduceSum, Squeeze, Unsqueeze,
// Split; 18 for the other reductions), and Softmax/LogSoftmax/Hardmax stopped flattening to 2-D
// at 13. Anything else between those versions only added optional attributes or inputs.

import { tensor, type Graph, type Node } from '../graph/ir';
import { EngineError } from '../errors';

export const TARGET_OPSET = 23;
const OLDEST = 11;

const AXES_INPUT_AT_13 = new Set(['ReduceSum', 'Squeeze', 'Unsqueeze']);
const AXES_INPUT_AT_18 = new Set(['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);
const FLATTENING_SOFTMAX = new Set(['Softmax', 'LogSoftmax', 'Hardmax']);

/** Upgrades `g` (and its Loop/If bodies) to ai.onnx opset 23 in place; errors name the node. */
export function upgradeToOpset23(g: Graph): void {
  const from = g.opsets.get('') ?? TARGET_OPSET;
  if (from >= TARGET_OPSET) return;
  if (from < OLDEST) throw new EngineError('config', `graph ${g.name}: ai.onnx opset ${from} is older than ${OLDEST}; re-export the model with opset ${OLDEST} or newer`);
  upgradeNodes(g, from);
  g.opsets.set('', TARGET_OPSET);
}

function upgradeNodes(g: Graph, from: number): void {
  for (const node of g.nodes) {
    if (node.domain) continue;
    for (const a of Object.values(node.attrs)) if (a.type === 'graph') upgradeNodes(a.value, from);
    if ((from < 13 && AXES_INPUT_AT_13.has(node.opType)) || (from < 18 && AXES_INPUT_AT_18.has(node.opType))) attrToInput(g, node, 'axes', 1);
    else if (from < 13 && node.opType === 'Split') attrToInput(g, node, 'split', 1);
    else if (from < 13 && FLATTENING_SOFTMAX.has(node.opType)) checkSoftmax(g, node);
  }
}

/** Moves an ints attribute into input slot `slot` as an int64 constant. */
function attrToInput(g: Graph, node: Node, attr: string, slot: number): void {
  const a = node.attrs[attr];
  if (!a) return; // absent: "all axes" / equal split, the same meaning as the omitted input
  if (a.type !== 'ints') throw new Error(`opset upgrade: node ${node.name} (${node.opType}) has a non-ints ${attr} attribute`);
  const c = g.const(tensor('int64', [a.value.length], a.value), `${node.name || node.opType}_${attr}`);
  while (node.inputs.length < slot) node.inputs.push('');
  node.inputs[slot] = c.name;
  delete node.attrs[attr];
}

/** Before 13 these flattened x to 2-D at `axis` (default 1); the same as opset 13 only on the last axis. */
function checkSoftmax(g: Graph, node: Node): void {
  const x = g.values.get(node.inputs[0]);
  const a = node.attrs.axis;
  const axis = a && a.type === 'int' ? a.value : 1;
  const rank = x?.shape?.length;
  if (rank === undefined) throw new Error(`opset upgrade: node ${node.name} (${node.opType}) needs its input's rank to be upgraded from opset < 13`);
  if (axis !== -1 && axis !== rank - 1) {
    throw new EngineError('config', `opset upgrade: node ${node.name} (${node.opType}, axis ${axis} of rank ${rank}) flattens before opset 13; re-export with opset ≥ 13`);
  }
  node.attrs.axis = { type: 'int', value: -1 };
}
