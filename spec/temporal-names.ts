// Custom search attributes and task queue names: the vocabulary shared by workflows (which upsert
// them), workers (which poll the queues) and the stack (which registers the attributes at start).
// Pure: workflows import this file.

import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Pipeline stage a run is in (`prepareDataset`, `train`, `demo:corpusStats`, ...). */
export const TruthgptStage = defineSearchAttributeKey('TruthgptStage', SearchAttributeType.KEYWORD);
/** Model family being trained (`gpt`, `bert`, `t5`). */
export const TruthgptModelFamily = defineSearchAttributeKey('TruthgptModelFamily', SearchAttributeType.KEYWORD);
/** Name of the PipelineSpec a run belongs to. */
export const TruthgptPipeline = defineSearchAttributeKey('TruthgptPipeline', SearchAttributeType.KEYWORD);
/** Best validation loss so far, so runs can be sorted in the UI (`ORDER BY` needs Double). */
export const TruthgptBestValLoss = defineSearchAttributeKey('TruthgptBestValLoss', SearchAttributeType.DOUBLE);

/** What a run of a family other than GPT trains for (`classification`, `mlm`); GPT runs (`lm`) leave it unset. */
export const TruthgptTask = defineSearchAttributeKey('TruthgptTask', SearchAttributeType.KEYWORD);
/** Best validation accuracy so far of a classification run (over every validation document), or best exact match of a seq2seq run. */
export const TruthgptValAccuracy = defineSearchAttributeKey('TruthgptValAccuracy', SearchAttributeType.DOUBLE);

export const SEARCH_ATTRIBUTES = [TruthgptStage, TruthgptModelFamily, TruthgptPipeline, TruthgptBestValLoss, TruthgptTask, TruthgptValAccuracy] as const;

/** One queue per pool: the GPU pool runs one training activity per device, the CPU pool the rest. */
export const TASK_QUEUES = { gpu: 'truthgpt-gpu', cpu: 'truthgpt-cpu' } as const;
export type Pool = keyof typeof TASK_QUEUES;

/**
 * The processes that serve the queues. `workflows` polls `truthgpt-cpu` for workflow tasks only;
 * `cpu` and `gpu` poll their pool's queue for activity tasks only. Workflow tasks never wait behind
 * engine work: a CPU activity that holds its process's event loop for minutes cannot delay them.
 */
export const WORKER_ROLES = ['workflows', 'cpu', 'gpu'] as const;
export type WorkerRole = (typeof WORKER_ROLES)[number];
/** The pool (task queue) a role polls. */
export const ROLE_POOL: Record<WorkerRole, Pool> = { workflows: 'cpu', cpu: 'cpu', gpu: 'gpu' };
