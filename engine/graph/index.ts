// Public entry of the graph layer: the IR, the op table, op wrappers and ONNX I/O.
// TODO(onnx-runtime): `import '../autodiff/rules'` here once engine/autodiff/rules/index.ts
// exists, so importing the graph layer always brings the complete op table.

export * from './ir';
export * from './registry';
export * as ops from './ops';
export * from './onnx';
export * from './onnx-tensor';
