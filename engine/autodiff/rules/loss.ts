// SoftmaxCrossEntropyLoss (scores (N, C, d...), labels (N, d...)) with ignore_index, optional
// class weights and reduction mean | sum | none. ORT's inference build has no
// SoftmaxCrossEntropyLossGrad, so the backward is the closed form
//   dscores = (softmax(scores) - onehot(label)) · w[label] · [label ≠ ignore] · dL/dloss_i
// where mean divides by Σ w[label]·[label ≠ ignore], as the forward does.

import type { Value } from '../../graph/ir';
import { registerOp, type GradContext } from '../../graph/registry';
import { attrInt, attrString, i64, need, onnxDType, shapeVec } from './common';

registerOp('SoftmaxCrossEntropyLoss', {
  infer: (inputs, attrs) => {
    const [scores, labels] = [need(inputs[0], 'SoftmaxCrossEntropyLoss', 'scores'), need(inputs[1], 'SoftmaxCrossEntropyLoss', 'labels')];
    const reduction = attrString(attrs, 'reduction', 'mean');
    if (!['mean', 'sum', 'none'].includes(reduction)) throw new Error(`SoftmaxCrossEntropyLoss: unknown reduction "${reduction}"`);
    if (scores.shape && labels.shape && scores.shape.length !== labels.shape.length + 1) {
      throw new Error(`SoftmaxCrossEntropyLoss: scores ${scores.name} [${scores.shape}] must have one more axis than labels ${labels.name} [${labels.shape}]`);
    }
    const loss = reduction === 'none' ? (labels.shape ? [...labels.shape] : null) : [];
    return [
      { dtype: scores.dtype, shape: loss },
      { dtype: scores.dtype, shape: scores.shape ? [...scores.shape] : null },
    ];
  },
  grad: (ctx: GradContext) => {
    const g = ctx.graph;
    const o = (t: string, xs: Value[], attrs = {}) => g.op(t, xs, attrs)[0];
    const [scores, labels, weights] = [need(ctx.inputs[0], 'SoftmaxCrossEntropyLoss', 'scores'), need(ctx.inputs[1], 'SoftmaxCrossEntropyLoss', 'labels'), ctx.inputs[2]];
    const reduction = attrString(ctx.attrs, 'reduction', 'mean');
    const ignore = ctx.attrs.ignore_index ? attrInt(ctx.attrs, 'ignore_index', 0) : null;
    const fl = onnxDType[scores.dtype];
    const i64s = (v: number) => g.const({ dtype: 'int64', dims: [], data: BigInt64Array.of(BigInt(v)) });
    const labels64 = labels.dtype === 'int64' ? labels : o('Cast', [labels], { to: 7 });

    // Per-position weight w_i = w[label_i] · [label_i ≠ ignore], shape (N, d...).
    let safe = labels64;
    let w: Value | null = null;
    if (ignore !== null) {
      const keep = o('Not', [o('Equal', [labels64, i64s(ignore)])]);
      // Ignored positions may hold any id (e.g. -100); point them at class 0 so OneHot/Gather stay in range.
      safe = o('Where', [keep, labels64, i64s(0)]);
      w = o('Cast', [keep], { to: fl });
    }
    if (weights) {
      const wl = o('Gather', [weights, safe], { axis: 0 });
      w = w ? o('Mul', [w, wl]) : wl;
    }

    const pieces: Value[] = [];
    const dLoss = ctx.gradOutputs[0];
    if (dLoss) {
      // Per-position upstream gradient, shape (N, d...).
      let up: Value;
      if (reduction === 'none') up = dLoss;
      else {
        let s = dLoss;
        if (reduction === 'mean') {
          const denom = w ? o('ReduceSum', [w], { keepdims: 0 }) : o('Cast', [o('Size', [labels64])], { to: fl });
          s = o('Div', [dLoss, denom]);
        }
        up = o('Expand', [s, shapeVec(labels64)]);
      }
      if (w) up = o('Mul', [up, w]);
      // onehot = [label == class] as (N, C, d...); ORT's OneHot has no float64 kernel, Equal does.
      const depth = o('Squeeze', [o('Shape', [scores], { start: 1, end: 2 })]);
      const rank = scores.shape!.length;
      const classes = o('Reshape', [o('Range', [i64s(0), depth, i64s(1)]), i64(g, [1, -1, ...Array(rank - 2).fill(1)])]);
      const onehot = o('Cast', [o('Equal', [o('Unsqueeze', [safe, i64(g, [1])]), classes])], { to: fl });
      const p = o('Softmax', [scores], { axis: 1 });
      pieces.push(o('Mul', [o('Sub', [p, onehot]), o('Unsqueeze', [up, i64(g, [1])])]));
    }
    const dLogp = ctx.gradOutputs[1];
    if (dLogp) {
      // The log_prob output is LogSoftmax(scores, axis=1): dx = dlogp - softmax · Σ dlogp.
      const total = o('ReduceSum', [dLogp, i64(g, [1])], { keepdims: 1 });
      pieces.push(o('Sub', [dLogp, o('Mul', [o('Softmax', [scores], { axis: 1 }), total])]));
    }
    const dScores = pieces.length === 2 ? o('Add', pieces) : pieces[0];
    return [dScores, null, null];
  },
});
