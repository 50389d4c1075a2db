// The bad-input corpus of `npm run fuzz` (issue 15): case i of seed s is a pure function of (s, i),
// so a failing case is reproduced by its number alone (`npm run fuzz -- --seed S --only I`).
//
// Every case is bad by construction, so "accepted" always means a defect:
//   spec      a valid spec file (pipeline, training, schedule, model config) with one mutation:
//             an unknown (misspelt) key in a strict object, a value of a JSON type the field never
//             takes, an out-of-range size, a missing required field — or a bad document: a YAML
//             alias bomb, binary, invalid UTF-8, a 50 MB file, deep nesting, a non-mapping root
//   cli       commands with bad arguments: numbers out of range or not numbers, unknown options,
//             run ids and model refs that are not keys ('..', unicode, overlong, absolute, s3://
//             of another bucket)
//   safetensors  a valid file with its header or body corrupted (offsets, shapes, dtypes,
//             truncation, header length), read as a checkpoint or adapter is
//   onnx      a valid model truncated, bit-flipped, or with external data naming '..' or out of range
//   key       store keys and prefixes the store must refuse before any request

import { writeSafetensors } from '../../engine/checkpoint/safetensors';
import { onnx } from 'onnx-proto';
import { Graph } from '../../engine/graph';
import { serializeModel } from '../../engine/graph/onnx';
import { mulberry32 } from '../../engine/models/blocks';

export type FuzzCase =
  | { kind: 'spec'; name: string; command: string[]; file: { ext: string; bytes: Buffer } }
  | { kind: 'cli'; name: string; args: string[] }
  | { kind: 'safetensors'; name: string; bytes: Buffer }
  | { kind: 'onnx'; name: string; bytes: Buffer; external?: { name: string; bytes: Buffer } }
  | { kind: 'key'; name: string; key: string };

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

// ---------------------------------------------------------------- valid seeds

const PIPELINE: Json = {
  name: 'fuzz',
  model: { family: 'gpt', preset: 'tiny-gpt', config: { vocab_size: 259, n_embd: 32, n_head: 2, block_size: 32 } },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] }, tokenizer: { kind: 'byte' }, valFraction: 0.2 },
  training: {
    workers: 2,
    rounds: 3,
    innerSteps: 10,
    batchSize: 8,
    contextLength: 32,
    evalBatches: 2,
    optimizer: { optimizer: { kind: 'adamw', lr: 0.003, weight_decay: 0.01 }, grad_clip: 1 },
    outer: { kind: 'nesterov', lr: 0.7, momentum: 0.9 },
    checkpoint: { everySteps: 30, everySeconds: 30 },
  },
  lora: { lora: { r: 8, lora_alpha: 16 }, train: { steps: 20, stepsPerActivity: 10, batchSize: 8, contextLength: 32, evalBatches: 2 } },
  quantization: [{ method: 'int8-dynamic', maxPplIncrease: 0.05 }],
  evaluation: { batches: 2, speedRuns: 2, warmup: 1, calibrationBatches: 2, samples: { prompts: ['The '], maxNewTokens: 8 } },
};

const TRAINING: Json = {
  name: 'fuzz-train',
  model: { preset: 'tiny-gpt' },
  dataset: { name: 'brown-humor', corpus: { kind: 'brown', categories: ['humor'] } },
  workers: 1,
  rounds: 2,
  innerSteps: 5,
  batchSize: 4,
  contextLength: 32,
};

const SCHEDULE: Json = {
  id: 'fuzz-schedule',
  every: '6h',
  base: { kind: 'checkpoint', prefix: 'runs/pre/global/r000002' },
  datasetPrefix: 'datasets/fiction-',
  train: { steps: 20, batchSize: 8, contextLength: 32 },
};

const MODEL_CONFIG: Json = { family: 'gpt', config: { vocab_size: 259, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32 } };

interface Seed {
  name: string;
  doc: Json;
  command: (file: string) => string[];
  /** Paths (dot-joined) whose objects are maps of the user's own keys, or unions that take any string. */
  open: string[];
  /** Fields whose removal must be refused. */
  required: string[];
  /** Numbers that are out of range at these paths. */
  ranges: [string, number[]][];
}

const SEEDS: Seed[] = [
  {
    name: 'pipeline',
    doc: PIPELINE,
    command: (f) => ['run', f],
    open: [],
    required: ['name', 'dataset', 'dataset.name', 'dataset.corpus', 'training', 'training.rounds', 'training.innerSteps', 'training.batchSize', 'training.contextLength', 'lora.train', 'lora.train.steps'],
    ranges: [
      ['training.rounds', [-1, 1e9, 2.5]],
      ['training.workers', [0, 1000]],
      ['training.innerSteps', [0, 1e12]],
      ['training.batchSize', [0, -8, 1e7]],
      ['training.contextLength', [1, 64, 1e9]],
      ['model.config.n_layer', [0, 10000, 1e9]],
      ['model.config.n_embd', [0, 31, 1e9]],
      ['model.config.block_size', [0, 1e9]],
      ['model.config.vocab_size', [0, 1e12]],
      ['training.optimizer.optimizer.lr', [-1]],
      ['training.heartbeatTimeoutSeconds', [0, 1]],
      ['dataset.valFraction', [-0.5, 2]],
      ['lora.lora.r', [0, -4]],
      ['lora.train.contextLength', [64]],
      ['quantization.0.maxPplIncrease', [-1]],
      ['evaluation.batches', [0, -1]],
    ],
  },
  {
    name: 'training',
    doc: TRAINING,
    command: (f) => ['run', f],
    open: [],
    required: ['dataset', 'rounds', 'innerSteps', 'batchSize', 'contextLength'],
    ranges: [
      ['rounds', [0, -1, 1e9]],
      ['batchSize', [0, 1e9]],
      ['contextLength', [0, 65]],
      ['workers', [0, 257]],
    ],
  },
  {
    name: 'schedule',
    doc: SCHEDULE,
    command: (f) => ['schedule', 'create', f],
    open: ['every'], // a duration string or milliseconds
    required: ['base', 'datasetPrefix', 'train', 'train.steps', 'train.batchSize', 'base.prefix'],
    ranges: [
      ['train.steps', [0, -5, 1e12]],
      ['train.batchSize', [0, 1e9]],
      ['train.contextLength', [1, 1e9]],
    ],
  },
  {
    name: 'model-config',
    doc: MODEL_CONFIG,
    command: (f) => ['model', 'params', '--config', f],
    open: [],
    required: ['config', 'config.vocab_size', 'config.n_layer'],
    ranges: [
      ['config.n_layer', [0, 1e9]],
      ['config.n_head', [0, 3]],
      ['config.vocab_size', [-1, 1e12]],
    ],
  },
];

// ---------------------------------------------------------------- helpers

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const clone = (j: Json): Json => JSON.parse(JSON.stringify(j)) as Json;

/** Every [path, value] of a document, objects and arrays included. */
function nodes(doc: Json, path: string[] = []): [string[], Json][] {
  const out: [string[], Json][] = [[path, doc]];
  if (Array.isArray(doc)) doc.forEach((v, i) => out.push(...nodes(v, [...path, String(i)])));
  else if (doc && typeof doc === 'object') for (const [k, v] of Object.entries(doc)) out.push(...nodes(v, [...path, k]));
  return out;
}

function getAt(doc: Json, path: string[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const p of path) cur = cur && typeof cur === 'object' ? (cur as Record<string, Json>)[p] : undefined;
  return cur;
}

function setAt(doc: Json, path: string[], value: Json | undefined): void {
  let cur = doc as Record<string, Json>;
  for (const p of path.slice(0, -1)) {
    if (cur[p] === undefined || cur[p] === null || typeof cur[p] !== 'object') cur[p] = {};
    cur = cur[p] as Record<string, Json>;
  }
  const last = path[path.length - 1];
  if (value === undefined) delete cur[last];
  else cur[last] = value;
}

/** A misspelling of `key`: a dropped, doubled, swapped or changed letter. */
function typo(r: Rand, key: string): string {
  const i = Math.floor(r() * key.length);
  switch (Math.floor(r() * 4)) {
    case 0:
      return key.length > 2 ? key.slice(0, i) + key.slice(i + 1) : `${key}x`;
    case 1:
      return key.slice(0, i) + key[i] + key.slice(i);
    case 2:
      return i + 1 < key.length && key[i] !== key[i + 1] ? key.slice(0, i) + key[i + 1] + key[i] + key.slice(i + 2) : `${key}_`;
    default:
      return key.slice(0, i) + (key[i] === 'q' ? 'z' : 'q') + key.slice(i + 1);
  }
}

/** A value of a JSON type that `v`'s field never takes. */
function wrongType(r: Rand, v: Json): Json {
  if (typeof v === 'number') return pick(r, ['7x', 'twelve', [v], { value: v }, true]);
  if (typeof v === 'string') return pick(r, [12345, [v], { value: v }, false]);
  if (typeof v === 'boolean') return pick(r, [1, 'yes', [v], { value: v }]);
  if (Array.isArray(v)) return pick(r, ['a, b', 3, { 0: v[0] ?? null }]);
  return pick(r, ['an object', 42, [v]]);
}

const asYaml = (r: Rand, doc: Json) => ({ ext: pick(r, ['.json', '.yaml']), bytes: Buffer.from(JSON.stringify(doc, null, r() < 0.5 ? 2 : 0)) });

// ---------------------------------------------------------------- spec cases

function specCase(r: Rand): FuzzCase {
  const seed = pick(r, SEEDS);
  const doc = clone(seed.doc);
  const spec = (name: string, file: { ext: string; bytes: Buffer }): FuzzCase => ({ kind: 'spec', name: `${seed.name}: ${name}`, command: seed.command('<file>'), file });
  const kind = Math.floor(r() * 6);
  if (kind === 0) {
    // An unknown key in a strict object: a misspelt sibling, or a key the spec never had.
    const objects = nodes(doc).filter(([p, v]) => v && typeof v === 'object' && !Array.isArray(v) && !seed.open.includes(p.join('.')) && Object.keys(v).length > 0);
    const [path, obj] = pick(r, objects);
    const keys = Object.keys(obj as object);
    const key = pick(r, keys);
    const bad = r() < 0.8 ? typo(r, key) : pick(r, ['lerning_rate', 'n_layr', 'maxPPlIncrease', '__proto__x', 'constructor', 'évaluation', '']);
    if (keys.includes(bad)) return specCase(r);
    const renamed = r() < 0.5; // a typo replaces the key (the user meant it) or sits beside it
    const o = obj as Record<string, Json>;
    const value = o[key];
    if (renamed) delete o[key];
    o[bad] = value;
    if (path.length === 0) setAt(doc, [], null);
    return spec(`${renamed ? 'misspelt' : 'extra'} key ${[...path, bad].join('.')}`, asYaml(r, doc));
  }
  if (kind === 1) {
    const leaves = nodes(doc).filter(([p]) => p.length > 0 && !seed.open.some((o) => p.join('.').startsWith(o)));
    const [path, v] = pick(r, leaves);
    setAt(doc, path, wrongType(r, v));
    return spec(`wrong type at ${path.join('.')}`, asYaml(r, doc));
  }
  if (kind === 2) {
    const [path, values] = pick(r, seed.ranges);
    const value = pick(r, values);
    setAt(doc, path.split('.'), value);
    return spec(`${path} = ${value}`, asYaml(r, doc));
  }
  if (kind === 3) {
    const path = pick(r, seed.required);
    if (getAt(doc, path.split('.')) === undefined) return specCase(r);
    setAt(doc, path.split('.'), undefined);
    return spec(`missing ${path}`, asYaml(r, doc));
  }
  if (kind === 4) {
    // Huge values where a size or a name goes.
    const [path] = pick(r, seed.ranges);
    setAt(doc, path.split('.'), pick(r, [1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, 'x'.repeat(100_000)]));
    return spec(`huge ${path}`, asYaml(r, doc));
  }
  return spec(...badDocument(r));
}

/** A document no spec reader should take. */
function badDocument(r: Rand): [string, { ext: string; bytes: Buffer }] {
  switch (Math.floor(r() * 9)) {
    case 0: {
      // Billion laughs: each level aliases the previous one ten times.
      const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
      for (let i = 1; i < 9; i++) lines.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
      return ['YAML alias bomb', { ext: '.yaml', bytes: Buffer.from(lines.join('\n')) }];
    }
    case 1: {
      const b = Buffer.alloc(4096);
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(r() * 256);
      return ['binary', { ext: '.yaml', bytes: b }];
    }
    case 2:
      return ['invalid UTF-8', { ext: '.json', bytes: Buffer.concat([Buffer.from('{"name": "'), Buffer.from([0xff, 0xfe, 0xc3, 0x28]), Buffer.from('"}')]) }];
    case 3:
      return ['50 MB file', { ext: '.json', bytes: Buffer.from(`{"name": "big", "pad": "${'x'.repeat(50 * 2 ** 20)}"}`) }];
    case 4:
      return ['deep nesting', { ext: '.json', bytes: Buffer.from(`${'['.repeat(100_000)}${']'.repeat(100_000)}`) }];
    case 5:
      return [`non-mapping root`, { ext: '.yaml', bytes: Buffer.from(pick(r, ['- a\n- b\n', '42\n', '"text"\n', 'null\n', '~\n'])) }];
    case 6:
      return ['empty file', { ext: '.yaml', bytes: Buffer.alloc(0) }];
    case 7:
      return ['YAML with a custom tag', { ext: '.yaml', bytes: Buffer.from('name: !!js/function "function(){ return 1 }"\nmodel: !include /etc/passwd\n') }];
    default:
      return ['duplicate keys', { ext: '.yaml', bytes: Buffer.from('name: a\nname: b\ntraining: {rounds: 1}\ntraining: {rounds: 2}\n') }];
  }
}

// ---------------------------------------------------------------- CLI cases

const BAD_REFS = ['../../../etc/passwd', '/etc/passwd', 'runs/../../x', 'runs/a b/c', 'runs/ünï/c', `runs/${'x'.repeat(2000)}`, 's3://another-bucket/runs/x', 'runs/x\u0000y', 'runs\\x', ''];
const BAD_IDS = ['../x', 'a/b', '.', '..', 'a b', 'ünï', 'x'.repeat(300), '-rf', ''];

function cliCase(r: Rand): FuzzCase {
  const c = (name: string, args: string[]): FuzzCase => ({ kind: 'cli', name, args });
  switch (Math.floor(r() * 8)) {
    case 0: {
      const [opt, vals] = pick(r, [
        ['--max-new-tokens', ['0', '-5', 'abc', '1e99', '2.5', '']],
        ['--temperature', ['-1', 'hot', '1e9']],
        ['--top-k', ['-1', 'k', '0.5']],
        ['--top-p', ['0', '1.5', '-0.1', 'p']],
        ['--seed', ['1e20', 's', '0.1']],
        ['--threads', ['0', '300', 'many']],
      ] as [string, string[]][]);
      const v = pick(r, vals);
      return c(`generate ${opt} ${JSON.stringify(v)}`, ['generate', '--model', 'runs/x/models/fp32', opt, v, 'The ']);
    }
    case 1: {
      const ref = pick(r, BAD_REFS);
      return c(`generate --model ${JSON.stringify(ref.slice(0, 40))}`, ['generate', '--model', ref, 'The ']);
    }
    case 2: {
      const id = pick(r, BAD_IDS);
      const cmd = pick(r, ['report', 'wait', 'watch', 'cancel', 'retry']);
      return c(`${cmd} ${JSON.stringify(id.slice(0, 40))}`, [cmd, id]);
    }
    case 3: {
      const id = pick(r, BAD_IDS);
      return c(`run --id ${JSON.stringify(id.slice(0, 40))}`, ['run', 'examples/tiny.json', '--id', id]);
    }
    case 4:
      return c('unknown option', [pick(r, ['run', 'generate', 'runs', 'report', 'up', 'status']), pick(r, ['--lr', '--frobnicate', '-z', '--max_new_tokens'])]);
    case 5:
      return c('unknown command', [pick(r, ['trian', 'rum', 'gen', 'schedules', 'exprot'])]);
    case 6:
      return c('missing argument', [pick(r, ['wait', 'watch', 'cancel', 'retry', 'report', 'generate'])]);
    default: {
      const [opt, v] = pick(r, [
        ['--limit', pick(r, ['0', '-1', 'all', '1e9'])],
        ['--status', pick(r, ['DONE', 'RUN', ''])],
        ['--family', pick(r, ['llama', ''])],
      ] as [string, string][]);
      return c(`runs ${opt} ${JSON.stringify(v)}`, ['runs', opt, v]);
    }
  }
}

// ---------------------------------------------------------------- safetensors, ONNX, keys

function validSafetensors(): Buffer {
  return writeSafetensors(
    new Map([
      ['a', { dtype: 'float32', dims: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) }],
      ['b', { dtype: 'float32', dims: [4], data: new Float32Array([7, 8, 9, 10]) }],
    ]),
  );
}

function safetensorsCase(r: Rand): FuzzCase {
  const good = validSafetensors();
  const n = Number(good.readBigUInt64LE(0));
  const header = JSON.parse(good.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
  const body = good.subarray(8 + n);
  const pack = (h: unknown, b: Buffer = body) => {
    const json = Buffer.from(JSON.stringify(h));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, b]);
  };
  const t = pick(r, ['a', 'b']);
  const edit = (f: (e: { dtype: string; shape: number[]; data_offsets: number[] }) => void) => {
    const h = JSON.parse(JSON.stringify(header)) as typeof header;
    f(h[t]);
    return pack(h);
  };
  const s = (name: string, bytes: Buffer): FuzzCase => ({ kind: 'safetensors', name, bytes });
  switch (Math.floor(r() * 12)) {
    case 0:
      return s('negative offset', edit((e) => (e.data_offsets = [-8, e.data_offsets[1]])));
    case 1:
      return s('offset past the end', edit((e) => (e.data_offsets = [e.data_offsets[0], e.data_offsets[1] + 1000])));
    case 2: {
      // b's bytes are a's: both tensors read [0, 24).
      const h = JSON.parse(JSON.stringify(header)) as typeof header;
      h.b = { dtype: h.a.dtype, shape: [...h.a.shape], data_offsets: [...h.a.data_offsets] };
      return s('overlapping tensors', pack(h));
    }
    case 3:
      return s('negative shape', edit((e) => (e.shape = [-2, -3])));
    case 4:
      return s('shape that disagrees with the bytes', edit((e) => (e.shape = [e.shape[0] + 1])));
    case 5:
      return s('unknown dtype', edit((e) => (e.dtype = pick(r, ['F128', 'float', '', 'U4']))));
    case 6: {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(pick(r, [2n ** 63n, 2n ** 40n, BigInt(good.length)]));
      return s('header length beyond the file', Buffer.concat([len, good.subarray(8)]));
    }
    case 7:
      return s('header not JSON', Buffer.concat([good.subarray(0, 8), Buffer.from('{"a": [1, 2'.padEnd(n, ' ')), body]));
    case 8:
      return s('truncated', good.subarray(0, Math.floor(r() * good.length)));
    case 9:
      return s('gap between tensors', edit((e) => (e.data_offsets = [e.data_offsets[0] + 4, e.data_offsets[1] + 4])));
    case 10:
      return s('offsets not numbers', edit((e) => ((e as unknown as { data_offsets: unknown }).data_offsets = ['0', 'x'])));
    default:
      return s('header is an array', pack([1, 2, 3]));
  }
}

const K = 16;
const N = 32; // w is 2048 bytes: over the serializer's 1024-byte threshold, so it can go to a side file

function onnxGraph(): Graph {
  const g = new Graph('fuzz');
  const x = g.input('x', 'float32', ['batch', K]);
  const w = g.initializer('w', { dtype: 'float32', dims: [K, N], data: Float32Array.from({ length: K * N }, (_, i) => i) });
  g.output(g.op('MatMul', [x, w])[0], 'y');
  return g;
}

function onnxCase(r: Rand): FuzzCase {
  const good = Buffer.from(serializeModel(onnxGraph()).model);
  const o = (name: string, bytes: Buffer, external?: { name: string; bytes: Buffer }): FuzzCase => ({ kind: 'onnx', name, bytes, ...(external ? { external } : {}) });
  switch (Math.floor(r() * 5)) {
    case 0:
      return o('truncated', good.subarray(0, 1 + Math.floor(r() * (good.length - 2))));
    case 1: {
      // Flips in the weights' bytes would still be a model: flip the structure (the first 200 bytes).
      const b = Buffer.from(good);
      for (let k = 0; k < 8; k++) b[Math.floor(r() * Math.min(200, b.length))] ^= 1 << Math.floor(r() * 8);
      return o('bit flips', b);
    }
    case 2: {
      const b = Buffer.alloc(1 + Math.floor(r() * 2048));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(r() * 256);
      return o('random bytes', b);
    }
    case 3:
      return o('empty', Buffer.alloc(0));
    default: {
      // The weight in a side file whose location climbs out, or whose range is past its end.
      const { model, external } = serializeModel(onnxGraph(), { externalData: { location: 'w.bin' } });
      const proto = onnx.ModelProto.decode(model);
      const w = proto.graph!.initializer!.find((t) => t.name === 'w')!;
      const entries: Record<string, string> = Object.fromEntries(w.externalData!.map((e) => [e.key!, e.value!]));
      const edit = pick(r, [
        ['location', '../../secret.bin'],
        ['location', '/etc/passwd'],
        ['location', 'sub/../../w.bin'],
        ['offset', '-4'],
        ['offset', '4096'],
        ['length', '99999'],
        ['length', '12.5'],
      ] as [string, string][]);
      entries[edit[0]] = edit[1];
      w.externalData = Object.entries(entries).map(([key, value]) => onnx.StringStringEntryProto.create({ key, value }));
      return o(`external data ${edit[0]} ${edit[1]}`, Buffer.from(onnx.ModelProto.encode(proto).finish()), { name: 'w.bin', bytes: Buffer.from(external!) });
    }
  }
}

function keyCase(r: Rand): FuzzCase {
  const key = pick(r, [...BAD_REFS, '/abs/key', 'a//b', 'a/./b', 'a/b/..', 'x\ny', 'x\ty', '\u202eevil', 'con/../x', 'a'.repeat(1100), '.manifest.json/..']);
  return { kind: 'key', name: `key ${JSON.stringify(key.slice(0, 40))}`, key };
}

/**
 * Case `i` of seed `seed`: specs are half the corpus, the rest split between CLI arguments,
 * safetensors, ONNX and store keys.
 * @example const c = fuzzCase(1, 17)
 */
export function fuzzCase(seed: number, i: number): FuzzCase {
  const r = mulberry32((seed * 1_000_003 + i) >>> 0);
  const u = r();
  if (u < 0.5) return specCase(r);
  if (u < 0.7) return cliCase(r);
  if (u < 0.82) return safetensorsCase(r);
  if (u < 0.92) return onnxCase(r);
  return keyCase(r);
}
