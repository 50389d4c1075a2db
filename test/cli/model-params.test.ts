import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cli = join(__dirname, '..', '..', 'bin', 'truthgpt.js');
const run = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { encoding: 'utf8' }).trim();

describe('truthgpt model params', () => {
  test('prints the exact Hugging Face counts of the full-size presets', () => {
    expect(run('model', 'params', '--preset', 'gpt2-small')).toBe('124439808');
    expect(run('model', 'params', '--preset', 'bert-base')).toBe('109482240');
    expect(run('model', 'params', '--preset', 't5-small')).toBe('60506624');
  });

  test('a bad config file gets one line naming the file and the field', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'truthgpt-cli-')), 'model.yaml');
    writeFileSync(file, 'family: gpt\nconfig: { vocab_size: 256, block_size: 64, n_layer: 2, n_head: 5, n_embd: 64 }\n');
    const r = spawnSync(process.execPath, [cli, 'model', 'params', '--config', file], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe(`truthgpt: ${file}: config.n_head: must divide n_embd (64 % 5 != 0)`);
  });
});
