import { defineCommand } from '../../command.js';
import { restoreBackup } from '../../../backup/index.js';
import { openStorage } from '../../../storage/index.js';
import { readKeyFile } from '../../../crypto/keys.js';
import { formatBytes, progressBar } from '../../progress.js';

export const restoreCommand = defineCommand({
  path: ['agent', 'restore'],
  summary: 'Restore a backup into an empty data directory (CouchDB stopped), checking every file',
  required: ['storage', 'backupId', 'dataDir'],
  optional: ['keyFile', 'owner', 'force', 'configDir', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    const bar = progressBar(io, o.json, 'restore');
    try {
      const r = await restoreBackup({
        storage,
        id: o.backupId,
        dataDir: o.dataDir,
        key: o.keyFile ? await readKeyFile(o.keyFile) : undefined,
        owner: o.owner,
        force: o.force,
        configDir: o.configDir,
        progress: bar?.update,
      });
      bar?.stop();
      for (const dir of r.removedStaging) io.stderr.write(`removed ${dir}, left by an interrupted restore\n`);
      if (o.json) io.stdout.write(`${JSON.stringify(r)}\n`);
      else io.stdout.write(`restored backup ${r.id} into ${r.dataDir}: ${r.files} files, ${formatBytes(r.bytes)}, every SHA-256 checked\n`);
      return 0;
    } finally {
      bar?.stop();
      await storage.close();
    }
  },
});
