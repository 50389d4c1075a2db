// zod issues as the one-line-per-field messages every spec error uses (`spec.<path>: message`),
// with unknown keys named one by one and the closest known key suggested:
//
//   spec.model.config.n_layr: unknown key (did you mean n_layer?)
//
// Every object of a user-facing spec is strict, so a typo fails instead of being dropped. zod
// reports all unknown keys of one object as one `unrecognized_keys` issue on the object's path;
// the known keys are found by walking the schema that raised it along that path, looking through
// optional/default/nullable/pipe/transform wrappers, arrays and records, and into the member of a
// discriminated union that the input's discriminator picks.

import { z } from 'zod';

type Path = PropertyKey[];

/** The schema's own def, whatever its kind (zod v4 keeps it on `_zod.def`). */
interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  out?: z.ZodType;
  element?: z.ZodType;
  valueType?: z.ZodType;
  options?: z.ZodType[];
  discriminator?: string;
  shape?: Record<string, z.ZodType>;
  getter?: () => z.ZodType;
}
const defOf = (s: z.ZodType) => (s as unknown as { _zod: { def: Def } })._zod.def;
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The literal values a union member's discriminator field accepts (zod v4 `propValues`). */
function discriminatorValues(option: z.ZodType, key: string): Set<unknown> | undefined {
  return (option as unknown as { _zod: { propValues?: Record<string, Set<unknown>> } })._zod.propValues?.[key];
}

/** Looks through wrappers (and into the union member `input` picks) down to the schema that checks `input`. */
function unwrap(schema: z.ZodType, input: unknown): z.ZodType {
  for (let s = schema, i = 0; i < 64; i++) {
    const d = defOf(s);
    if (d.innerType && d.type !== 'array') s = d.innerType; // optional, nullable, default, prefault, catch, readonly, nonoptional
    else if (d.type === 'pipe') s = defOf(d.in!).type === 'transform' ? d.out! : d.in!; // .transform() and z.preprocess
    else if (d.type === 'lazy') s = d.getter!();
    else if (d.type === 'union') {
      const picked = pickMember(d, input);
      if (!picked) return s;
      s = picked;
    } else return s;
  }
  return schema;
}

/** The member of a union that `input` belongs to: by discriminator, else the object sharing most keys. */
function pickMember(d: Def, input: unknown): z.ZodType | undefined {
  const options = d.options ?? [];
  if (!isRecord(input)) return undefined;
  if (d.discriminator) return options.find((o) => discriminatorValues(o, d.discriminator!)?.has(input[d.discriminator!]));
  let best: z.ZodType | undefined;
  let bestShared = 0;
  for (const o of options) {
    const inner = unwrap(o, input);
    const shape = defOf(inner).shape;
    if (!shape) continue;
    const shared = Object.keys(input).filter((k) => k in shape).length;
    if (shared > bestShared) [best, bestShared] = [o, shared];
  }
  return best;
}

/**
 * Keys of the object that `schema` checks at `path` of `input` (null when the walk finds no object).
 * @example knownKeysAt(TrainingSpecSchema, spec, ['model', 'config']) // ['vocab_size', 'block_size', 'n_layer', ...]
 */
export function knownKeysAt(schema: z.ZodType, input: unknown, path: Path): string[] | null {
  let s = schema;
  let v = input;
  for (const seg of path) {
    s = unwrap(s, v);
    const d = defOf(s);
    if (d.type === 'object' && d.shape && typeof seg === 'string' && seg in d.shape) s = d.shape[seg];
    else if (d.type === 'array' && d.element) s = d.element;
    else if (d.type === 'record' && d.valueType) s = d.valueType;
    else return null;
    v = isRecord(v) || Array.isArray(v) ? (v as Record<PropertyKey, unknown>)[seg as string] : undefined;
  }
  const shape = defOf(unwrap(s, v)).shape;
  return shape ? Object.keys(shape) : null;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps cost 1. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/**
 * The message for unknown key `key`: the nearest known key when it is within max(2, ⌊len/3⌋)
 * edits of `key`, else the list of known keys.
 * @example unknownKeyMessage('n_layr', ['n_layer', 'n_head']) // 'unknown key (did you mean n_layer?)'
 */
export function unknownKeyMessage(key: string, known: readonly string[] | null): string {
  if (!known || known.length === 0) return 'unknown key';
  let best = known[0];
  let bestD = Infinity;
  for (const k of known) {
    const dist = editDistance(key.toLowerCase(), k.toLowerCase()) + (key === k ? 0 : key.toLowerCase() === k.toLowerCase() ? 0.5 : 0);
    if (dist < bestD) [best, bestD] = [k, dist];
  }
  if (bestD <= Math.max(2, Math.floor(key.length / 3))) return `unknown key (did you mean ${best}?)`;
  return `unknown key (known keys: ${known.join(', ')})`;
}

export interface ExpandOptions {
  /** Keys left out of the suggestions at the root (e.g. fields a pipeline takes from elsewhere). */
  hideAtRoot?: readonly string[];
  /** relocateIssues: let the enclosing schema's later checks run (zod stops at a transform's issues otherwise). */
  continue?: boolean;
}

/**
 * The issues with every `unrecognized_keys` issue split into one custom issue per key, whose path
 * ends in the key and whose message suggests the nearest known key of `schema` at that path.
 */
export function expandIssues(issues: readonly z.core.$ZodIssue[], schema: z.ZodType, input: unknown, o: ExpandOptions = {}): z.core.$ZodIssue[] {
  return issues.flatMap((i): z.core.$ZodIssue[] => {
    if (i.code !== 'unrecognized_keys') return [i];
    let known = knownKeysAt(schema, input, i.path);
    if (known && i.path.length === 0 && o.hideAtRoot) known = known.filter((k) => !o.hideAtRoot!.includes(k));
    return i.keys.map((key) => ({ code: 'custom', path: [...i.path, key], message: unknownKeyMessage(key, known), input: undefined }));
  });
}

/** One `root.path: message` line per issue (unknown keys expanded against `schema` when given). */
export function issueLines(error: z.ZodError, root = 'spec', schema?: z.ZodType, input?: unknown): string[] {
  const issues = schema ? expandIssues(error.issues, schema, input) : error.issues;
  return issues.map((i) => `${[...(root ? [root] : []), ...i.path.map(String)].join('.') || '(root)'}: ${i.message}`);
}

/** zod issues as one line per field, `path: message`, joined with `; `. */
export function formatIssues(error: z.ZodError, root = 'spec', schema?: z.ZodType, input?: unknown): string {
  return issueLines(error, root, schema, input).join('; ');
}

/**
 * Re-raises a nested parse's issues on the enclosing parse under `prefix` (unknown keys expanded
 * against the nested `schema` and `input` first, so the suggestion survives the move).
 */
export function relocateIssues(ctx: z.RefinementCtx, error: z.ZodError, schema: z.ZodType, input: unknown, where: (path: string[]) => string[], o: ExpandOptions = {}): void {
  for (const issue of expandIssues(error.issues, schema, input, o)) {
    ctx.addIssue({ code: 'custom', path: where(issue.path.map(String)), message: issue.message, ...(o.continue ? { continue: true } : {}) });
  }
}
