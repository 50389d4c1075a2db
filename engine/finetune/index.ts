// Fine-tuning (engine/finetune): LoRA bases that compile an adapter-only training step, score a
// base with and without its adapters, and merge them, for our checkpoints and imported .onnx files.

export * from './base';
export * from './imported';
export { GptBase } from './gpt-base';
export { OnnxBase } from './onnx-base';
