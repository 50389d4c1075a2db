// The ORT runtime layer: sessions on CPU/CUDA and the training-step runner.

export { createSession, checkCudaInstalled, CudaUnavailableError, CUDA_INSTALL_STEP } from './session';
export type { SessionConfig, ExecutionProvider, LogSeverity } from './session';
export { StepRunner, NonFiniteLossError } from './step-runner';
export type { StepRunnerInit, StepResult } from './step-runner';
