import { defineCommand } from '../../command.js';
import { verifyBackup } from '../../../backup/index.js';
import { openStorage } from '../../../storage/index.js';
import { readingKey } from '../../../crypto/keys.js';
import { formatBytes, progressBar } from '../../progress.js';

export const verifyCommand = defineCommand({
  path: ['agent', 'verify'],
  summary: 'Read a whole backup and check every checksum, writing nothing',
  required: ['storage', 'backupId'],
  optional: ['keyFile', 'masterKey', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    const bar = progressBar(io, o.json, 'verify');
    try {
      const r = await verifyBackup({ storage, id: o.backupId, key: await readingKey(o.keyFile, o.masterKey), progress: bar?.update });
      bar?.stop();
      if (o.json) io.stdout.write(`${JSON.stringify(r)}\n`);
      else io.stdout.write(`backup ${r.id} is intact: ${r.files.length} files, ${formatBytes(r.bytes)}, every SHA-256 checked\n`);
      return 0;
    } finally {
      bar?.stop();
      await storage.close();
    }
  },
});
