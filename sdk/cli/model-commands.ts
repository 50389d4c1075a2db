// `truthgpt model params --preset NAME | --config FILE [--json]`: the exact parameter count of a
// model, by preset name or from a model config file (YAML or JSON: { family, config }).

import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { countParams, getPreset, presetParams, PRESET_NAMES, type Preset } from '../../engine/models/presets';
import { BertConfigSchema } from '../../engine/models/bert';
import { GptConfigSchema } from '../../engine/models/gpt';
import { T5ConfigSchema } from '../../engine/models/t5';
import { issueLines } from '../../spec/issues';
import { UsageError } from './usage-error';

const ModelFileSchema = z.discriminatedUnion('family', [
  z.strictObject({ family: z.literal('gpt'), config: GptConfigSchema }),
  z.strictObject({ family: z.literal('bert'), config: BertConfigSchema }),
  z.strictObject({ family: z.literal('t5'), config: T5ConfigSchema }),
]);

/** Reads a model config file; errors name the file and the path of the bad field. */
export function readModelFile(path: string): Preset {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(path, 'utf8')); // YAML is a superset of JSON
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
  const parsed = ModelFileSchema.safeParse(raw);
  if (!parsed.success) {
    throw new UsageError(`${path}: ${issueLines(parsed.error, '', ModelFileSchema, raw)[0]}`);
  }
  return parsed.data as Preset;
}

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('inspect model configurations');
  model
    .command('params')
    .description(`print the exact parameter count (presets: ${PRESET_NAMES.join(', ')})`)
    .option('--preset <name>', 'a named preset')
    .option('--config <file>', 'a model config file: { family: gpt|bert|t5, config: {...} }')
    .option('--json', 'print JSON with the count per tensor')
    .action((opts: { preset?: string; config?: string; json?: boolean }) => {
      if (!opts.preset === !opts.config) throw new UsageError('model params: give exactly one of --preset NAME or --config FILE');
      let preset: Preset;
      try {
        preset = opts.preset ? getPreset(opts.preset) : readModelFile(opts.config!);
      } catch (e) {
        throw e instanceof UsageError ? e : new UsageError((e as Error).message);
      }
      const total = countParams(preset);
      if (opts.json) {
        const tensors = Object.fromEntries(presetParams(preset).map((s) => [s.name, s.shape.reduce((a, b) => a * b, 1)]));
        console.log(JSON.stringify({ preset: opts.preset ?? null, family: preset.family, params: total, tensors }, null, 2));
      } else console.log(total);
    });
}
