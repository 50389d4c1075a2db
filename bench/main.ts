// Benchmark entry: `npm run bench -- <name> [options]`. Benchmarks print a table and write JSON
// to bench/out/; they are never timed tests.

import { Command } from 'commander';
import { measureMatmulPeak } from './matmul_peak';
import { benchStep } from './step';

const program = new Command('bench').description('TruthGPT benchmarks');

program
  .command('step')
  .description('GPT training step: tokens/s, GFLOP/s, % of ORT MatMul peak, vs PyTorch eager')
  .option('--size <size>', 'small (nanoGPT CPU config: 4L×128, ctx 64, batch 12) | medium (6L×384, ctx 256)', 'small')
  .option('--threads <n>', 'intra-op threads for ORT and PyTorch', '2')
  .option('--steps <n>', 'timed steps (default per size)')
  .option('--batch <n>', 'batch size (default per size)')
  .option('--no-torch', 'skip the PyTorch eager comparison')
  .option('--profile', 'ORT profiling: time per op type')
  .option('--repeat <n>', 'rounds of (ours, MatMul peak, PyTorch); the best of each is reported', '1')
  .action(async (o: { size: string; threads: string; steps?: string; batch?: string; torch: boolean; profile?: boolean; repeat: string }) => {
    await benchStep({
      size: o.size,
      threads: Number(o.threads),
      steps: o.steps ? Number(o.steps) : undefined,
      batch: o.batch ? Number(o.batch) : undefined,
      torch: o.torch,
      profile: !!o.profile,
      repeat: Math.max(1, Number(o.repeat)),
    });
  });

program
  .command('matmul-peak')
  .description('ORT MatMul GFLOP/s on a chain of 1024³ MatMuls')
  .option('--threads <n>', 'intra-op threads', '2')
  .action(async (o: { threads: string }) => {
    console.log(await measureMatmulPeak(Number(o.threads)));
  });

program.parseAsync(process.argv).catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
