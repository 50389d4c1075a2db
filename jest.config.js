// The AWS SDK's own switch for its multi-line Node-version notice (README, "Node version"), for
// the test processes and everything they start.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { diagnostics: false }],
  },
  // ORT-node returns host-realm typed arrays; jest's sandbox must use the same classes.
  setupFiles: ['<rootDir>/engine/runtime/host-realm.ts'],
  testTimeout: 120000,
};
