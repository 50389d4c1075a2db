// How big a workflow's input may be. Temporal keeps every input in the workflow's history and
// warns above 256 KiB per payload (its default hard limit is 2 MiB, and an oversized start fails
// only after the client has retried for a while, as a bare "Failed to start Workflow"). A spec is
// settings, never data: corpora, weights and datasets go to files or S3 and are named by path or key.

/** Temporal's per-payload warning size, which we treat as the limit. */
export const MAX_PAYLOAD_BYTES = 256 * 1024;

const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;

/** Bytes of `value` as JSON (what the default payload converter sends). */
export const payloadBytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value) ?? '').length;

/** Why `value` is too large to start a workflow with, or null when it fits. */
export function payloadProblem(what: string, value: unknown): string | null {
  const bytes = payloadBytes(value);
  if (bytes <= MAX_PAYLOAD_BYTES) return null;
  return `${what} is ${kib(bytes)} as JSON, above the ${kib(MAX_PAYLOAD_BYTES)} Temporal keeps comfortably in a workflow's history: a spec holds settings, not data; put text, weights or datasets in files or S3 and name them by path or key`;
}

/**
 * Why a payload a workflow or an activity produces (an activity's input or result, a child's or a
 * continue-as-new's input) is too large, or null when it fits: large data belongs in S3, named by key.
 * @example payloadSizeProblem("activity evaluate's result", result)
 */
export function payloadSizeProblem(what: string, value: unknown): string | null {
  const bytes = payloadBytes(value);
  if (bytes <= MAX_PAYLOAD_BYTES) return null;
  return `${what} is ${kib(bytes)} as JSON, above the ${kib(MAX_PAYLOAD_BYTES)} Temporal keeps comfortably in a workflow's history; large data belongs in S3, passed by key`;
}
