// `couchtrove agent root enable|show|disable --couchdb-url URL`: the server admin `root`.
import { defineCommand } from '../../command.js';
import { couchManager, printJson, readPasswordFromStdin } from './couch-target.js';

export const rootEnableCommand = defineCommand({
  path: ['agent', 'root', 'enable'],
  summary: 'Enable the server admin root (password from stdin, or generated and printed); again resets its password',
  required: ['couchdbUrl'],
  optional: ['passwordStdin'],
  run: async (o, io) => {
    const given = o.passwordStdin ? await readPasswordFromStdin() : undefined;
    const r = await (await couchManager(o.couchdbUrl, io.env)).enableRoot(given);
    io.stdout.write(given === undefined ? `root enabled; password: ${r.password}\n` : 'root enabled\n');
    return 0;
  },
});

export const rootShowCommand = defineCommand({
  path: ['agent', 'root', 'show'],
  summary: 'Show whether the server admin root is enabled',
  required: ['couchdbUrl'],
  optional: ['json'],
  run: async (o, io) => {
    const enabled = await (await couchManager(o.couchdbUrl, io.env)).isRootEnabled();
    if (o.json) printJson(io, { enabled });
    else io.stdout.write(`root is ${enabled ? 'enabled' : 'not enabled'}\n`);
    return 0;
  },
});

export const rootDisableCommand = defineCommand({
  path: ['agent', 'root', 'disable'],
  summary: 'Disable the server admin root',
  required: ['couchdbUrl'],
  optional: [],
  run: async (o, io) => {
    await (await couchManager(o.couchdbUrl, io.env)).disableRoot();
    io.stdout.write('root disabled\n');
    return 0;
  },
});
