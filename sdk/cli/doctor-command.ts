// `truthgpt doctor [--pool gpu|cpu] [--device N] [--json]`: can this machine run a pool's
// activities, and if not, what is missing and the command that fixes it. The checks live in
// engine/doctor/ so that a GPU worker runs the same ones at startup (workers/worker.ts).

import type { Command } from 'commander';
import { formatDoctor, runDoctor, type DoctorPool } from '../../engine/doctor';
import { loadConfig } from '../../infra/config';
import { UsageError } from './usage-error';

interface DoctorFlags {
  pool?: string;
  device?: string;
  providerDir?: string;
  json?: boolean;
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('check the execution-provider setup of this machine (CUDA provider, CUDA/cuDNN libraries, GPUs, a tiny training step) and print each missing piece with its fix; exits 1 when the pool cannot run here')
    .option('--pool <pool>', 'gpu: a CUDA worker (TRUTHGPT_EP=cuda); cpu: a CPU worker (default: from TRUTHGPT_EP)')
    .option('--device <n>', 'GPU index to check (default TRUTHGPT_DEVICE_ID, else 0)')
    .option('--provider-dir <dir>', "folder holding libonnxruntime_providers_cuda.so (default: onnxruntime-node's binding folder)")
    .option('--json', 'print the report as JSON')
    .action(async (flags: DoctorFlags) => {
      const config = loadConfig();
      if (flags.pool !== undefined && flags.pool !== 'gpu' && flags.pool !== 'cpu') throw new UsageError(`doctor --pool: expected gpu or cpu, got ${JSON.stringify(flags.pool)}`);
      if (flags.device !== undefined && !/^\d+$/.test(flags.device)) throw new UsageError(`doctor --device: expected a GPU index (0, 1, ...), got ${JSON.stringify(flags.device)}`);
      const pool: DoctorPool = (flags.pool as DoctorPool | undefined) ?? (config.runtime.ep === 'cuda' ? 'gpu' : 'cpu');
      const report = await runDoctor({
        pool,
        deviceId: flags.device !== undefined ? Number(flags.device) : config.runtime.deviceId,
        bindingDir: flags.providerDir,
      });
      console.log(flags.json ? JSON.stringify(report, null, 2) : formatDoctor(report));
      if (!report.ok) process.exitCode = 1;
    });
}
