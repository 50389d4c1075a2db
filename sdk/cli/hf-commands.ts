// `truthgpt import DIR [--name NAME] [--json]`: a Hugging Face model folder into the store as
// models/<name>; `truthgpt export REF --format hf --out DIR`: any GPT checkpoint back out as a
// folder transformers strict-loads.

import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { exportHfModel, importHfModel } from '../../artifacts/hf-models';
import { s3Settings } from '../../infra/config';
import { ArtifactStore } from '../../infra/store';
import { asUsage } from './report-commands';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';
import { UsageError } from './usage-error';

/** A bar over the tensors read, drawn synchronously (the folder is read without yielding). */
function tensorBar(stream: NodeJS.WriteStream) {
  if (!stream.isTTY) return { onTensor: undefined, stop: () => {} };
  const bar = new SingleBar({ stream, format: 'import |{bar}| {value}/{total} tensors', barsize: 24, hideCursor: true, clearOnComplete: true });
  let started = false;
  return {
    onTensor: (done: number, total: number) => {
      if (!started) bar.start(total, 0);
      started = true;
      bar.update(done);
      bar.render();
    },
    stop: () => started && bar.stop(),
  };
}

async function withStore<T>(flags: StackFlags, fn: (s: ArtifactStore) => Promise<T>): Promise<T> {
  const store = new ArtifactStore(s3Settings(configFromFlags(flags)));
  try {
    return await fn(store);
  } catch (err) {
    throw asUsage(err);
  } finally {
    store.close();
  }
}

export function registerHfCommands(program: Command): void {
  withStackFlags(program.command('import'))
    .description('store a Hugging Face model folder (GPT-2, Llama, Mistral, BERT, T5; config.json + safetensors) as models/<name>; prints the model ref')
    .argument('<dir>', 'the folder save_pretrained wrote')
    .option('--name <name>', "the model's name in the store (default: the folder's name)")
    .option('--json', 'print the ref, family, architecture, parameter count and each source file\'s sha256 as JSON')
    .action(async (dir: string, flags: StackFlags & { name?: string; json?: boolean }) => {
      const bar = tensorBar(process.stderr);
      const m = await withStore(flags, (s) => importHfModel(s, dir, { name: flags.name, onTensor: bar.onTensor })).finally(bar.stop);
      if (flags.json) {
        const r = m.import;
        console.log(JSON.stringify({ ref: m.ref, created: m.created, family: r.family, architecture: r.architecture, params: r.params, sourceDtypes: r.sourceDtypes, source: r.source, files: r.files, tokenizer: r.tokenizer, checkpoint: m.checkpoint.files }, null, 2));
      } else {
        console.log(m.ref);
        console.error(`(${m.import.architecture}, ${m.import.params} parameters from ${m.import.sourceDtypes.join('+')}${m.import.tokenizer ? ', with tokenizer.json' : ''}${m.created ? '' : '; already stored'})`);
      }
    });

  withStackFlags(program.command('export'))
    .description('write a checkpoint (models/<name>, runs/<id>/global/rNNNNNN, finetunes/<id>/merged) as a Hugging Face folder, or a fine-tune adapter (finetunes/<id>/adapter) as PEFT files')
    .argument('<ref>', 'checkpoint or adapter prefix in the store')
    .requiredOption('--format <format>', 'output format: hf')
    .requiredOption('--out <dir>', 'folder to write (missing or empty)')
    .option('--base <path>', "an adapter's base_model_name_or_path (e.g. the folder its base was exported to; default: the HF source recorded at import)")
    .option('--json', 'print {prefix, dir, architecture, files} as JSON')
    .action(async (ref: string, flags: StackFlags & { format: string; out: string; base?: string; json?: boolean }) => {
      if (flags.format !== 'hf') throw new UsageError(`export --format: "${flags.format}" is not a format; known formats: hf`);
      const r = await withStore(flags, (s) => exportHfModel(s, ref, flags.out, { baseNameOrPath: flags.base }));
      if (flags.json) console.log(JSON.stringify(r, null, 2));
      else console.log(`${r.dir} (${r.architecture}: ${r.files.join(', ')})`);
    });
}
