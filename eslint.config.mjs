// Lint rules that keep the layers honest (docs/ARCHITECTURE.md, "Layers"): an import never climbs.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

// Lowest floor first. A folder may import only the folders before it in this list.
const LAYERS = ['engine', 'spec', 'infra', 'artifacts', 'activities', 'workflows', 'workers', 'sdk'];

/** `**​/name/**` and `**​/name` (an index import such as '../activities'). */
const folderGroup = (names) => names.flatMap((n) => [`**/${n}/**`, `**/${n}`]);

/** The import patterns a layer may not use: every layer above it, plus the extra ones given. */
function layerPatterns(layer, extra = []) {
  const above = LAYERS.slice(LAYERS.indexOf(layer) + 1);
  const patterns = [...extra];
  if (above.length > 0) {
    patterns.push({ group: folderGroup(above), message: `${layer}/ imports only the layers below it (${LAYERS.slice(0, LAYERS.indexOf(layer)).join(', ') || 'none'}): ${above.join(', ')} sit above it.` });
  }
  return patterns;
}

const noTemporal = { group: ['@temporalio/*'], message: 'engine/ has no Temporal in it.' };
const noS3 = (layer, why) => ({ group: ['@aws-sdk/*'], message: `${layer}/ has no S3 in it: ${why}` });
const noOrt = (layer) => ({ group: ['onnxruntime-node', 'onnxruntime-*'], message: `${layer}/ must not touch the ML runtime.` });

const layerRule = (layer, { paths = [], extra = [] } = {}) => ({
  files: [`${layer}/**/*.ts`],
  rules: { 'no-restricted-imports': ['error', { paths, patterns: layerPatterns(layer, extra) }] },
});

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
  // The ML core: buffers, files and tensors; no Temporal, no S3.
  layerRule('engine', { extra: [noTemporal, noS3('engine', 'it works on buffers and files.')] }),
  // The shared vocabulary: schemas, error types, Temporal names. No I/O.
  layerRule('spec', { extra: [noS3('spec', 'it is vocabulary, not I/O.'), noOrt('spec')] }),
  layerRule('infra'),
  layerRule('artifacts'),
  layerRule('activities'),
  // Workflows are deterministic sandboxed code: no Node built-ins, no ML runtime, no S3, and only
  // types from the layers that do I/O or math.
  layerRule('workflows', {
    paths: nodeBuiltins.map((name) => ({ name, message: 'workflows/ must stay pure: no Node built-ins.' })),
    extra: [
      noOrt('workflows'),
      { group: ['@aws-sdk/*'], message: 'workflows/ must not do I/O: go through an activity.' },
      { group: folderGroup(['engine', 'infra', 'artifacts', 'activities']), message: 'workflows/ import only types of activities and the engine; values come from spec/ and workflows/.', allowTypeImports: true },
    ],
  }),
  layerRule('workers'),
  layerRule('sdk'),
);
