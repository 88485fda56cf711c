import { defineCommand } from '../../command.js';
import { expireBackups } from '../../../backup/index.js';
import { openStorage } from '../../../storage/index.js';
import { readingKey } from '../../../crypto/keys.js';

export const expireCommand = defineCommand({
  path: ['agent', 'expire'],
  summary: 'Delete the backups a retention policy does not keep (never one that a kept incremental needs)',
  required: ['storage'],
  optional: ['keyFile', 'masterKey', 'keepLast', 'keepDaily', 'keepWeekly', 'dryRun', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    try {
      const key = await readingKey(o.keyFile, o.masterKey);
      const r = await expireBackups(storage, { keepLast: o.keepLast, keepDaily: o.keepDaily, keepWeekly: o.keepWeekly }, o.dryRun === true, key);
      // Unverified manifests and a held policy are reported on stderr, with --json too.
      for (const u of r.unverified) io.stderr.write(`unverified backup ${u.id} kept, not counted by the policy: ${u.reason}\n`);
      if (r.held) io.stderr.write(`couchtrove: nothing deleted: ${r.held}\n`);
      if (o.json) {
        io.stdout.write(`${JSON.stringify(r)}\n`);
        return r.held ? 1 : 0;
      }
      const gone = r.held ? 'held' : r.dryRun ? 'would delete' : 'deleted';
      for (const k of r.keep) io.stdout.write(`keep    ${k.backup.id}  ${k.backup.created}  (${k.reasons.join(', ')})\n`);
      for (const b of r.remove) io.stdout.write(`${gone} ${b.id}  ${b.created}\n`);
      const removed = r.held ? 'held, not deleted' : r.dryRun ? 'would be deleted (dry run)' : 'deleted';
      io.stdout.write(`${r.keep.length} kept, ${r.remove.length} ${removed}${r.unverified.length ? `, ${r.unverified.length} unverified kept` : ''}\n`);
      return r.held ? 1 : 0;
    } finally {
      await storage.close();
    }
  },
});
