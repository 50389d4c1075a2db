// The `truthgpt` CLI (bin/truthgpt.js runs this file through tsx).

import { Command } from 'commander';
import { registerDemoCommands } from './demo-command';
import { registerDoctorCommand } from './doctor-command';
import { describeCliError } from './errors';
import { registerHfCommands } from './hf-commands';
import { registerModelCommands } from './model-commands';
import { registerReportCommands } from './report-commands';
import { registerRunCommands } from './run-commands';
import { registerRunsCommands } from './runs-commands';
import { registerScheduleCommands } from './schedule-commands';
import { registerStackCommands } from './stack-commands';
import { registerVerifyCommand } from './verify-command';
import { registerWorkerCommand } from './worker-command';

// The AWS SDK's own switch for its multi-line notice, on Node < 22, that its releases from January
// 2027 need Node 22; we support Node >= 20.19 until we take such a release (README, "Node version").
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export interface ProgramOptions {
  /** Throw CommanderError instead of exiting (every subcommand inherits it): for running the CLI in-process. */
  exitOverride?: boolean;
  output?: { writeOut: (s: string) => void; writeErr: (s: string) => void };
}

export function buildProgram(opts: ProgramOptions = {}): Command {
  const program = new Command('truthgpt')
    .description('Create, train, fine-tune, quantize and evaluate transformer models as durable Temporal workflows')
    .showHelpAfterError();
  // Set before the commands are added, so that each inherits them.
  if (opts.exitOverride) program.exitOverride();
  if (opts.output) program.configureOutput(opts.output);
  registerStackCommands(program);
  registerDemoCommands(program);
  registerRunCommands(program);
  registerRunsCommands(program);
  registerModelCommands(program);
  registerHfCommands(program);
  registerScheduleCommands(program);
  registerReportCommands(program);
  registerVerifyCommand(program);
  registerDoctorCommand(program);
  registerWorkerCommand(program);
  return program;
}

if (require.main === module || process.argv[1]?.endsWith('truthgpt.js') || process.argv[1]?.endsWith('truthgpt')) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      console.error(`truthgpt: ${describeCliError(err)}`);
      process.exit(1);
    });
}
