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
