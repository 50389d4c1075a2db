// Hugging Face folders in and out of the store, for scripts: the functions behind
// `truthgpt import` and `truthgpt export --format hf`, with the store from the environment's config.

import { exportHfModel, importHfModel, type HfExportResult, type ImportedModel } from '../artifacts/hf-models';
import { loadConfig, type Config } from '../infra/config';
import { withStore } from './store';

export { exportHfModel, importHfModel, IMPORT_FORMAT, type HfExportResult, type ImportedModel, type ImportRecord } from '../artifacts/hf-models';

/**
 * Stores the Hugging Face model folder `dir` (GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM)
 * as models/<name>: a checkpoint that fine-tunes and exports take as it is.
 * @example const { ref } = await importModel('./tiny-llama', { name: 'tiny-llama' }) // 'models/tiny-llama'
 */
export async function importModel(dir: string, opts: { name?: string; config?: Config; onTensor?: (done: number, total: number) => void } = {}): Promise<ImportedModel> {
  return withStore(opts.config ?? loadConfig(), (store) => importHfModel(store, dir, opts));
}

/**
 * Writes the checkpoint `ref` (models/<name>, runs/<id>/global/rNNNNNN, finetunes/<id>/merged) as a
 * Hugging Face folder in `outDir` that `from_pretrained` strict-loads, or a fine-tune's adapter
 * (finetunes/<id>/adapter) as PEFT files naming `baseNameOrPath` as their base.
 * @example await exportModel('models/tiny-llama', './tiny-llama-out')
 */
export async function exportModel(ref: string, outDir: string, opts: { config?: Config; baseNameOrPath?: string } = {}): Promise<HfExportResult> {
  return withStore(opts.config ?? loadConfig(), (store) => exportHfModel(store, ref, outDir, opts));
}
