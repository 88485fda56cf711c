// `couchtrove agent entry --config FILE --instance-user UID:GID --volume DIR`: a container's entry point. Runs
// `agent serve` without the capabilities that give files away, and gives files for it (src/agent/entry.ts).
import { defineCommand } from '../../command.js';

export const entryCommand = defineCommand({
  path: ['agent', 'entry'],
  summary: "A container's entry point: `agent serve` without CAP_CHOWN/CAP_FOWNER, beside a parent that gives files only to the instance user inside its volume",
  required: ['agentConfig', 'instanceUser', 'volume'],
  optional: ['logLevel'],
  run: async (o, io) => {
    const { runEntry } = await import('../../../agent/entry.js');
    return runEntry({
      owner: o.instanceUser,
      within: o.volume,
      serveArgs: ['--config', o.agentConfig, ...(o.logLevel ? ['--log-level', o.logLevel] : [])],
      log: (line) => io.stderr.write(`agent entry: ${line}\n`),
    });
  },
});
