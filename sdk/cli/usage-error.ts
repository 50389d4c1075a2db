/** A mistake in what the user typed or pointed us at: the CLI prints the message alone, no stack. */
export class UsageError extends Error {
  override name = 'UsageError';
}
