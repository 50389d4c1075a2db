// The errors the engine throws for problems that no retry can fix, each tagged with the kind of
// problem it is. The engine knows nothing of Temporal: artifacts/errors.ts maps a kind onto the
// closed error vocabulary (spec/errors.ts) in one place. Anything else the engine throws (an ORT
// session out of memory, a bug) stays a plain Error, and an activity that meets it is retried.

/** What went wrong, in the engine's words. */
export type EngineErrorKind =
  /** A setting or geometry the model or data cannot take (contextLength > block_size, a LoRA target that matches nothing). */
  | 'config'
  /** Input that is well-formed but unusable (an empty corpus, adapters that do not fit the base). */
  | 'input'
  /** Bytes that do not parse or do not match their pinned sha256 (checkpoint and safetensors files). */
  | 'corrupt'
  /** A NaN or infinite loss or weight. */
  | 'non-finite'
  /** The CUDA execution provider was asked for but cannot load. */
  | 'cuda-unavailable'
  /** A quantized model rose above its perplexity bound. */
  | 'quant-rejected';

/**
 * An error no retry can fix, of the given kind; subclasses carry what their kind needs to say more.
 * @example throw new EngineError('config', `lora.target_modules: ${JSON.stringify(spec)} matches no linear layer`)
 */
export class EngineError extends Error {
  /** Small JSON that travels with the failure (the tensor, the step). */
  details?: Record<string, unknown>;

  constructor(
    readonly kind: EngineErrorKind,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    if (options?.details) this.details = options.details;
  }
}
