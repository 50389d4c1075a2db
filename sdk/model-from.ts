// `model.from`: a run that starts from a stored model (an imported Hugging Face model under
// models/<name>, or any run's committed checkpoint) instead of a seeded init.
//
// The model's config lives in the store, and a spec is parsed without one (spec/ reads no store).
// So the SDK and the CLI call resolveModelFrom before parsing: it reads the checkpoint's document
// (checkpoint.json, verified against its manifest), fills `model.config` with the stored config and
// `model.fromFiles` with the sha256 of every file, and refuses a config field the user set to
// anything else (a stored model keeps its architecture; only FROM_OVERRIDABLE may change). The
// parsed spec then carries a complete config, so every check that needs one (context vs
// block_size, the worker-memory estimate) runs before anything starts, and the run refuses a
// checkpoint whose files changed since (activities/training.ts createModel). A model imported with
// its own tokenizer (models/<name>/tokenizer.json) tokenizes the run's datasets: a dataset without
// a tokenizer gets it, and one naming another tokenizer is refused (its ids would mean nothing to
// the model's embeddings).

import { readCheckpointState } from '../artifacts/checkpoints';
import type { ImportRecord } from '../artifacts/hf-models';
import { HF_TOKENIZER_FILE } from '../engine/hf/folder';
import { StoredGptConfigSchema } from '../engine/models/gpt';
import type { ArtifactStore } from '../infra/store';
import { InvalidSpecError } from '../spec/pipeline';
import type { ModelFamily } from '../spec/family';
import { FROM_OVERRIDABLE_BY_FAMILY } from '../spec/training';
import { BertModelConfigSchema } from '../engine/hf/bert';
import { T5ConfigSchema } from '../engine/models/t5';

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** True when `input` names a `model.from` that resolveModelFrom has not resolved yet. */
export function needsModelFrom(input: unknown): boolean {
  return isObject(input) && isObject(input.model) && input.model.from != null && input.model.fromFiles == null;
}

/**
 * `input` (a PipelineSpec or TrainingSpec as a user wrote it) with `model.from` resolved against
 * the store; `input` itself when it has no `model.from` or has it resolved already. Errors are
 * InvalidSpecError lines naming `spec.model.*`.
 * @example const spec = parsePipelineSpec(await resolveModelFrom(store, YAML.parse(text)))
 */
export async function resolveModelFrom<T>(store: ArtifactStore, input: T): Promise<T> {
  if (!isObject(input) || !isObject(input.model)) return input;
  if (!needsModelFrom(input) || typeof input.model.from !== 'string') return input; // the schema names a type error
  const model = input.model;
  const from = model.from as string;
  let found: Awaited<ReturnType<typeof readCheckpointState>>;
  try {
    found = await readCheckpointState(store, from);
  } catch (err) {
    throw new InvalidSpecError([`spec.model.from: ${(err as Error).message}`]);
  }
  if (!found) {
    throw new InvalidSpecError([`spec.model.from: nothing is committed under s3://${store.bucket}/${from} (expected an imported model such as models/<name>, or a checkpoint such as runs/<id>/global/r000004)`]);
  }
  // The stored family decides the config schema; a spec that names another family is refused.
  const family = (found.state.family ?? 'gpt') as ModelFamily;
  if (model.family != null && model.family !== family) {
    throw new InvalidSpecError([`spec.model.family: ${JSON.stringify(model.family)}, but ${from} holds a ${family} model; leave family out or set it to ${family}`]);
  }
  if (family === 'gpt' && found.state.modelConfig.variant != null) {
    const kind = (found.state.modelConfig.variant as { kind?: unknown }).kind;
    throw new InvalidSpecError([`spec.model.from: ${from} holds a ${kind === 'memory' ? 'memory-augmented' : String(kind)} GPT (modelConfig.variant); starting a run from it is not wired yet`]);
  }
  const schema = family === 'gpt' ? StoredGptConfigSchema : family === 'bert' ? BertModelConfigSchema : T5ConfigSchema.strip();
  const stored = schema ? schema.safeParse(found.state.modelConfig) : null;
  if (stored && !stored.success) {
    const i = stored.error.issues[0];
    throw new InvalidSpecError([`spec.model.from: ${from} does not hold a ${family} model (its checkpoint.json modelConfig.${i.path.join('.')}: ${i.message})`]);
  }
  const config: Record<string, unknown> = { ...((stored?.data as Record<string, unknown> | undefined) ?? found.state.modelConfig) };
  const overridable = FROM_OVERRIDABLE_BY_FAMILY[family];
  const issues: string[] = [];
  const given = isObject(model.config) ? model.config : {};
  for (const [k, v] of Object.entries(given)) {
    if (overridable.includes(k)) config[k] = v;
    else if (JSON.stringify(config[k]) !== JSON.stringify(v)) {
      issues.push(`spec.model.config.${k}: ${JSON.stringify(v)} differs from ${from}, which has ${JSON.stringify(config[k] ?? null)}; a stored model keeps its architecture (only ${overridable.join(', ') || 'nothing'} may be set)`);
    }
  }
  // A classification run on a stored encoder or masked-LM BERT without a head of its own: the spec names it.
  if (family === 'bert' && !('head' in given) && model.task === 'classification' && (config.head as { kind?: string } | undefined)?.kind !== 'classification') {
    issues.push(`spec.model.config.head: ${from} has no classification head; give one, e.g. { kind: classification, num_labels: 2, id2label: { '0': ham, '1': spam } }`);
  }
  const tokenizerFile = found.manifest.files.find((f) => f.name === HF_TOKENIZER_FILE);
  const withTokenizer = (path: string, dataset: unknown): unknown => {
    if (!tokenizerFile || !isObject(dataset)) return dataset;
    if (dataset.tokenizer === undefined) {
      // Documents are separated by the model's own end-of-sequence id, as the import recorded it.
      const eos = (found.manifest.meta.import as ImportRecord | undefined)?.specialTokens.eos;
      return { ...dataset, tokenizer: { kind: 'hf', key: `${from}/${HF_TOKENIZER_FILE}`, sha256: tokenizerFile.sha256, ...(eos != null ? { eot: eos } : {}) } };
    }
    const t = dataset.tokenizer;
    if (!isObject(t) || t.kind !== 'hf' || t.key !== `${from}/${HF_TOKENIZER_FILE}`) {
      issues.push(`${path}.tokenizer: ${from} has its own tokenizer (${HF_TOKENIZER_FILE}), whose ids its embeddings were trained on; leave tokenizer out to use it`);
    }
    return dataset;
  };
  const next: Record<string, unknown> = { ...input, dataset: withTokenizer('spec.dataset', input.dataset) };
  if (isObject(input.lora) && isObject(input.lora.dataset)) next.lora = { ...input.lora, dataset: withTokenizer('spec.lora.dataset', input.lora.dataset) };
  if (issues.length) throw new InvalidSpecError(issues);
  const fromFiles = Object.fromEntries(found.manifest.files.map((f) => [f.name, f.sha256]));
  return { ...next, model: { ...model, family, config, fromFiles } } as T;
}
