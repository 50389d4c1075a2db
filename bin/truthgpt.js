#!/usr/bin/env node
// The CLI runs from TypeScript sources through tsx, so `npx truthgpt` works right after `npm ci`.
require('tsx/cjs');
require('../sdk/cli/main.ts');
