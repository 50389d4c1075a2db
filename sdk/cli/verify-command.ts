// `truthgpt verify [PREFIX...] [--json]`: re-hashes every committed file under the prefixes (the
// whole bucket by default) against its manifest; one line per damaged or missing object, exit 1.

import type { Command } from 'commander';
import { verifyCommitted, type VerifyReport } from '../../artifacts/verify';
import { s3Settings } from '../../infra/config';
import { ArtifactStore } from '../../infra/store';
import { configFromFlags, withStackFlags, type StackFlags } from './stack-commands';

export function registerVerifyCommand(program: Command): void {
  withStackFlags(program.command('verify'))
    .description('re-read every file of every commit under PREFIX (default: the whole bucket) and check its size and sha256 against the manifest; exits 1 naming each damaged or missing object')
    .argument('[prefix...]', 'store prefixes, e.g. runs/demo-1/ or datasets/')
    .option('--json', 'print the report as JSON')
    .action(async (prefixes: string[], flags: StackFlags & { json?: boolean }) => {
      const config = configFromFlags(flags);
      const store = new ArtifactStore(s3Settings(config));
      const total: VerifyReport = { manifests: 0, files: 0, bytes: 0, problems: [] };
      try {
        for (const prefix of prefixes.length ? prefixes : ['']) {
          const r = await verifyCommitted(store, prefix, (_at, problems) => {
            if (flags.json) return;
            for (const p of problems) console.log(`${p.kind.toUpperCase().padEnd(10)} s3://${config.s3.bucket}/${p.key}: ${p.detail}`);
          });
          total.manifests += r.manifests;
          total.files += r.files;
          total.bytes += r.bytes;
          total.problems.push(...r.problems);
        }
      } finally {
        store.close();
      }
      const where = prefixes.length ? prefixes.join(', ') : `the whole bucket ${config.s3.bucket}`;
      const line = `${where}: ${total.manifests} commits, ${total.files} files (${(total.bytes / 2 ** 20).toFixed(1)} MiB) verified, ${total.problems.length} damaged or missing`;
      console.log(flags.json ? JSON.stringify({ ...total, summary: line }, null, 2) : line);
      if (total.problems.length) process.exitCode = 1;
    });
}
