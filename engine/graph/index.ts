// Public entry of the graph layer: the IR, the op table, op wrappers and ONNX I/O. Importing it
// also fills the op table with every shape and gradient rule, so graphs built through it never
// miss a rule that exists.

import '../autodiff/rules';

export * from './ir';
export * from './registry';
export * as ops from './ops';
export * from './onnx';
export { onnxDType, dtypeFromOnnx, typedFromBytes, tensorBytes } from './onnx-tensor';
