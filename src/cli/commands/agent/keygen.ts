import { defineCommand } from '../../command.js';
import { writeNewKeyFile } from '../../../crypto/keys.js';

export const keygenCommand = defineCommand({
  path: ['agent', 'keygen'],
  summary: 'Create a new random encryption key file (mode 0600); keep a copy: without it, encrypted backups cannot be read',
  required: ['out'],
  optional: [],
  run: async (o, io) => {
    await writeNewKeyFile(o.out);
    io.stdout.write(`wrote a new key to ${o.out}\n`);
    return 0;
  },
});
