// The workflow bundle's entry point (Worker `workflowsPath`): every workflow the workers run.

export * from './demo';
export * from './training';
export * from './fine-tune';
export * from './pipeline';
export * from './post-training';
