import { defineCommand } from '../../command.js';
import { deleteBackup } from '../../../backup/index.js';
import { openStorage } from '../../../storage/index.js';
import { readingKey } from '../../../crypto/keys.js';

export const deleteCommand = defineCommand({
  path: ['agent', 'delete'],
  summary: 'Delete a backup (or the leftovers of an incomplete one)',
  required: ['storage', 'backupId'],
  optional: ['keyFile', 'masterKey', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    try {
      const r = await deleteBackup(storage, o.backupId, await readingKey(o.keyFile, o.masterKey));
      io.stdout.write(o.json ? `${JSON.stringify({ id: o.backupId, deleted: true, objects: r.objects })}\n` : `deleted backup ${o.backupId} (${r.objects} objects)\n`);
      return 0;
    } finally {
      await storage.close();
    }
  },
});
