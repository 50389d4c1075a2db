// The layer rule in eslint.config.mjs: an import that climbs (a lower folder importing a higher
// one) fails lint in every layer, and the imports that point down pass.

import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const root = path.resolve(__dirname, '../..');

// ESLint loads its flat config with a dynamic import, which jest's VM cannot do: lint in a plain
// node child, through ESLint's own API, on text that names the file it pretends to be.
// One child lints every case below (each start costs seconds).
const LINT = `
const { ESLint } = require('eslint');
const path = require('node:path');
const eslint = new ESLint({ cwd: process.cwd() });
const cases = JSON.parse(process.argv[1]);
Promise.all(cases.map(async ([file, code]) => {
  const [r] = await eslint.lintText(code, { filePath: path.join(process.cwd(), file) });
  return r.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
})).then((all) => process.stdout.write(JSON.stringify(all)));`;

const key = (file: string, code: string) => `${file}\n${code}`;
const linted = new Map<string, string[]>();

async function lintAll(cases: [string, string][]): Promise<void> {
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', LINT, JSON.stringify(cases)], { cwd: root });
  (JSON.parse(stdout) as string[][]).forEach((messages, i) => linted.set(key(...cases[i]!), messages));
}

async function messagesFor(file: string, code: string): Promise<string[]> {
  const messages = linted.get(key(file, code));
  if (!messages) throw new Error(`case not linted: ${file}`);
  return messages;
}

// (file, an import from a higher layer)
const climbing: [string, string][] = [
  ['engine/models/x.ts', "import { failure } from '../../spec/errors';"],
  ['spec/x.ts', "import { loadConfig } from '../infra/config';"],
  ['infra/x.ts', "import { createActivities } from '../activities';"],
  ['artifacts/x.ts', "import { createActivities } from '../activities/index';"],
  ['activities/x.ts', "import { pipelineWorkflow } from '../workflows/pipeline';"],
  ['workflows/x.ts', "import { createPoolWorker } from '../workers/worker';"],
  ['workers/x.ts', "import { TruthGPT } from '../sdk';"],
];

test.each(climbing)('%s: %s fails lint', async (file, code) => {
  const messages = await messagesFor(file, `${code}\nexport {};\n`);
  expect(messages).toHaveLength(1);
  expect(messages[0]).toMatch(/imports only the layers below it/);
});

// (file, an import that points down)
const descending: [string, string][] = [
  ['spec/x.ts', "import { z } from 'zod';\nimport { OptimConfigSchema } from '../engine/optim';"],
  ['infra/x.ts', "import { TASK_QUEUES } from '../spec/temporal-names';"],
  ['activities/x.ts', "import { readBrown } from '../engine/data/corpus';\nimport { loadConfig } from '../infra/config';"],
  ['workflows/x.ts', "import type { PipelineActivities } from '../activities/pipeline';\nimport { TASK_QUEUES } from '../spec/temporal-names';"],
  ['sdk/x.ts', "import { createPoolWorker } from '../workers/worker';\nimport { pipelineWorkflow } from '../workflows/pipeline';"],
];

test.each(descending)('%s: %s passes', async (file, code) => {
  expect(await messagesFor(file, `${code}\nexport {};\n`)).toEqual([]);
});

const workflowCases: [string, string][] = [
  ['workflows/x.ts', "import { createActivities } from '../activities';\nexport {};\n"],
  ['workflows/x.ts', "import { readBrown } from '../engine/data/corpus';\nexport {};\n"],
  ['workflows/x.ts', "import fs from 'node:fs';\nexport {};\n"],
];

beforeAll(() => lintAll([...[...climbing, ...descending].map(([f, c]): [string, string] => [f, `${c}\nexport {};\n`]), ...workflowCases]), 60_000);

test('workflows/ take only types from activities and the engine, and no Node built-ins', async () => {
  expect(await messagesFor('workflows/x.ts', "import { createActivities } from '../activities';\nexport {};\n")).toHaveLength(1);
  expect(await messagesFor('workflows/x.ts', "import { readBrown } from '../engine/data/corpus';\nexport {};\n")).toHaveLength(1);
  expect(await messagesFor('workflows/x.ts', "import fs from 'node:fs';\nexport {};\n")).toHaveLength(1);
});
