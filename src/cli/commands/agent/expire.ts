import { defineCommand } from '../../command.js';
import { expireBackups } from '../../../backup/index.js';
import { openStorage } from '../../../storage/index.js';

export const expireCommand = defineCommand({
  path: ['agent', 'expire'],
  summary: 'Delete the backups a retention policy does not keep (never one that a kept incremental needs)',
  required: ['storage'],
  optional: ['keepLast', 'keepDaily', 'keepWeekly', 'dryRun', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    try {
      const r = await expireBackups(storage, { keepLast: o.keepLast, keepDaily: o.keepDaily, keepWeekly: o.keepWeekly }, o.dryRun === true);
      if (o.json) {
        io.stdout.write(`${JSON.stringify(r)}\n`);
        return 0;
      }
      for (const k of r.keep) io.stdout.write(`keep    ${k.backup.id}  ${k.backup.created}  (${k.reasons.join(', ')})\n`);
      for (const b of r.remove) io.stdout.write(`${r.dryRun ? 'would delete' : 'deleted'} ${b.id}  ${b.created}\n`);
      io.stdout.write(`${r.keep.length} kept, ${r.remove.length} ${r.dryRun ? 'would be deleted (dry run)' : 'deleted'}\n`);
      return 0;
    } finally {
      await storage.close();
    }
  },
});
