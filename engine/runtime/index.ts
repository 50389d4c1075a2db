// The ORT runtime layer: sessions on CPU/CUDA and the training-step runner.

export { createSession, checkCudaInstalled, CudaUnavailableError, CUDA_INSTALL_STEP, ortBindingDir, ortPackage } from './session';
export { fixForLibrary, missingLibraryIn, providerCudaLibs, providerCudnnMajor, PROVIDER_CUDA_MAJOR, splitSoname } from './cuda-libs';
export type { CudaLib } from './cuda-libs';
export type { SessionConfig, ExecutionProvider, LogSeverity } from './session';
export { StepRunner, NonFiniteLossError } from './step-runner';
export type { StepRunnerInit, StepResult } from './step-runner';
