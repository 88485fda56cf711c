// Entry point of the `couchtrove` executable: every command, one file each under commands/.
import { readFileSync } from 'node:fs';
import { CommanderError } from 'commander';
import { buildProgram, type AnyCommand, type CommandIO } from './command.js';
import { describeError } from '../util/errors.js';
import { agentCommands } from './commands/agent/index.js';
import { serverCommands } from './commands/server/index.js';
import { instanceCommands } from './commands/instance/index.js';
import { databaseCommands } from './commands/database/index.js';
import { userCommands } from './commands/user/index.js';
import { rootCommands } from './commands/root/index.js';
import { backupCommands } from './commands/backup/index.js';
import { flavorCommands } from './commands/flavor/index.js';
import { configurationCommands } from './commands/configuration/index.js';
import { scheduleCommands } from './commands/schedule/index.js';
import { logCommands } from './commands/log/index.js';
import { completionCommands } from './commands/completion/index.js';
import { imageCommands } from './commands/image/index.js';
import { clusterCommands } from './commands/cluster/index.js';

const apiCommands: AnyCommand[] = [...agentCommands, ...serverCommands, ...instanceCommands, ...databaseCommands, ...userCommands, ...rootCommands, ...clusterCommands, ...backupCommands, ...flavorCommands, ...configurationCommands, ...scheduleCommands, ...logCommands, ...imageCommands];
const quiet: CommandIO = { stdout: process.stdout, stderr: process.stderr, env: {} };
/** Every command; completion walks the tree built from all of them (itself included). */
export const commands: AnyCommand[] = [...apiCommands, ...completionCommands(() => buildProgram(commands, quiet, () => undefined, packageVersion()), () => commands)];

/** The package's version, read from package.json (dist/src/cli/ is three levels below it). */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(pkg.version);
}

export async function main(argv: string[], io: CommandIO = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  let code = 0;
  const program = buildProgram(commands, io, (c) => (code = c), packageVersion());
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; commander already printed its own message for usage errors.
      return err.exitCode === 0 ? 0 : 2;
    }
    io.stderr.write(`couchtrove: ${describeError(err)}\n`);
    return exitCodeOf(err);
  }
}

function exitCodeOf(err: unknown): number {
  return err instanceof Error && err.name === 'UsageError' ? 2 : 1;
}
