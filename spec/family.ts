// Model families and training tasks: which family trains on which task, what dataset each task
// needs, and the one-line refusal for a combination that is not wired yet. Pure values (no zod, no
// engine values), so workflows import it too.
//
// Adding a family is: its name in MODEL_FAMILIES, its tasks in FAMILY_TASKS (moving them
// from `planned` to `trains` when the activities build its step), its config schema in
// spec/training.ts's FAMILY_CONFIGS, and its branch in activities/model-family.ts.

export const MODEL_FAMILIES = ['gpt', 'bert', 't5'] as const;
export type ModelFamily = (typeof MODEL_FAMILIES)[number];

/**
 * What a run trains the model for:
 *   lm               next-token prediction (causal), on a text corpus
 *   mlm              masked-token prediction (BERT's pretraining), on a text corpus
 *   classification   one label per document, on a labelled corpus (spam-assassin, jsonl with labelField)
 *   seq2seq          source → target (T5), on a paired corpus (jsonl with targetField)
 *   span-corruption  T5's pretraining (dropped spans → sentinels), on a text corpus
 */
export const TASKS = ['lm', 'mlm', 'classification', 'seq2seq', 'span-corruption'] as const;
export type Task = (typeof TASKS)[number];

export interface FamilyTasks {
  /** Tasks a run of this family trains today; the first is the default. */
  trains: readonly Task[];
  /** Tasks named in the roadmap: a spec naming one is refused with "not wired yet". */
  planned: readonly Task[];
}

export const FAMILY_TASKS: Record<ModelFamily, FamilyTasks> = {
  // classification: with model.variant domain-head (spec/training.ts).
  gpt: { trains: ['lm', 'classification'], planned: [] },
  bert: { trains: ['classification', 'mlm'], planned: [] },
  t5: { trains: ['seq2seq', 'span-corruption'], planned: [] },
};

/** The dataset a task reads: plain text, documents that each carry a label, or source/target pairs. */
export type DatasetKind = 'text' | 'labelled' | 'pairs';
export const TASK_DATASET: Record<Task, DatasetKind> = {
  lm: 'text',
  mlm: 'text',
  classification: 'labelled',
  seq2seq: 'pairs',
  'span-corruption': 'text',
};

/** Corpus kinds whose documents carry a label (a jsonl corpus only with its `labelField`). */
export function corpusIsLabelled(corpus: { kind: string; labelField?: string }): boolean {
  return corpus.kind === 'spam-assassin' || corpus.kind === 'brown' || (corpus.kind === 'jsonl' && corpus.labelField != null);
}

/** Corpus kinds whose documents are source/target pairs: a jsonl corpus with its `targetField`. */
export function corpusIsPaired(corpus: { kind: string; targetField?: string }): boolean {
  return corpus.kind === 'jsonl' && corpus.targetField != null;
}

/**
 * The task a family trains when the spec names none, or the reason (one line, for the field
 * `spec.model.task` / `spec.model.family`) why a family/task pair cannot train.
 */
export function resolveTask(family: ModelFamily, task: Task | null | undefined): { task: Task } | { field: 'family' | 'task'; message: string } {
  const f = FAMILY_TASKS[family];
  if (f.trains.length === 0) {
    return { field: 'family', message: `${family} models import and export, but do not train in pipelines yet (planned: ${f.planned.join(', ')}); use gpt or bert` };
  }
  const t = task ?? f.trains[0];
  if (f.trains.includes(t)) return { task: t };
  if (f.planned.includes(t)) return { field: 'task', message: `${t} is not wired for ${family} yet; ${family} trains ${f.trains.join(', ')}` };
  return { field: 'task', message: `a ${family} model does not train for ${t}; it trains ${f.trains.join(', ')}` };
}

/**
 * The metric a family/task is judged by in the run list, the report and the search attributes. A
 * seq2seq run's exact match (the share of validation examples whose greedy answer is the target)
 * travels in the accuracy search attribute, TruthgptValAccuracy.
 */
export function headlineMetric(task: Task): 'perplexity' | 'accuracy' | 'exactMatch' {
  return task === 'classification' ? 'accuracy' : task === 'seq2seq' ? 'exactMatch' : 'perplexity';
}

/** "2L×64": depth × width of a model config, whatever its family's field names. */
export function modelShape(model: { family: string; config: Record<string, unknown> }): string {
  const c = model.config;
  return model.family === 'gpt' ? `${c.n_layer as number}L×${c.n_embd as number}` : model.family === 'bert' ? `${c.num_hidden_layers as number}L×${c.hidden_size as number}` : `${c.num_layers as number}L×${c.d_model as number}`;
}
