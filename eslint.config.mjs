// Lint rules that keep the layers honest (see ../shared/DESIGN.md, "Layers").
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'bench/out/**', '.truthgpt/**', 'coverage/**', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  {
    // Workflows are deterministic sandboxed code: no Node built-ins, no ML runtime, no S3.
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: nodeBuiltins.map((name) => ({ name, message: 'workflows/ must stay pure: no Node built-ins.' })),
          patterns: [
            { group: ['onnxruntime-node', 'onnxruntime-*'], message: 'workflows/ must not touch the ML runtime.' },
            { group: ['@aws-sdk/*'], message: 'workflows/ must not do I/O: go through an activity.' },
            { group: ['**/engine/**', '**/infra/**', '**/activities/*', '!**/activities/types'], message: 'workflows/ import only types of activities, sdk schemas and pure helpers.', allowTypeImports: true },
          ],
        },
      ],
    },
  },
  {
    // The ML core has no Temporal, S3 or infra in it.
    files: ['engine/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@temporalio/*'], message: 'engine/ has no Temporal in it.' },
            { group: ['@aws-sdk/*'], message: 'engine/ has no S3 in it.' },
            { group: ['**/infra/**', '**/activities/**', '**/workflows/**', '**/workers/**', '**/sdk/**'], message: 'engine/ imports only engine/.' },
          ],
        },
      ],
    },
  },
);
