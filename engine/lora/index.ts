// LoRA (engine/lora): config, target selection, attaching adapters to our models and to imported
// .onnx graphs, merging for export, and PEFT adapter files.

export * from './config';
export * from './targets';
export * from './attach';
export * from './model';
export * from './merge';
export * from './quantized-base';
export * from './imported';
export * from './specialize';
export * from './opset';
export * from './peft';
