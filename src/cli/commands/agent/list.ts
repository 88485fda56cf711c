import { defineCommand } from '../../command.js';
import { listBackups } from '../../../backup/index.js';
import { openStorage } from '../../../storage/index.js';
import { formatBytes } from '../../progress.js';
import { readingKey } from '../../../crypto/keys.js';

export const listCommand = defineCommand({
  path: ['agent', 'list'],
  summary: 'List the backups in a repository, and report incomplete ones',
  required: ['storage'],
  optional: ['keyFile', 'masterKey', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    try {
      const { backups, unverified, incomplete } = await listBackups(storage, await readingKey(o.keyFile, o.masterKey));
      if (o.json) {
        io.stdout.write(`${JSON.stringify(backups)}\n`);
        // stdout stays a plain array of usable (authenticated) backups; the others are reported on stderr.
        for (const u of unverified) io.stderr.write(`unverified backup ${u.id} (${u.objects} objects, ${u.bytes} bytes): ${u.reason}\n`);
        for (const i of incomplete) io.stderr.write(`incomplete backup ${i.id} (${i.objects} objects, ${i.bytes} bytes): ${i.reason}\n`);
        return 0;
      }
      if (backups.length === 0) io.stdout.write('no backups\n');
      for (const b of backups) {
        io.stdout.write(`${b.id}  ${b.created}  ${String(b.files).padStart(6)} files  ${formatBytes(b.bytes).padStart(10)} read  ${formatBytes(b.size).padStart(10)} stored  ${b.compression}${b.encrypted ? '+aes' : ''}${b.parent ? `  incremental of ${b.parent}` : ''}\n`);
      }
      for (const u of unverified) io.stdout.write(`UNVERIFIED ${u.id}  ${u.objects} objects, ${formatBytes(u.bytes)}: ${u.reason} (never chosen, counted or deleted by a policy)\n`);
      for (const i of incomplete) {
        const hint = i.writing ? '' : ` (remove with: couchtrove agent delete --backup ${i.id})`;
        io.stdout.write(`${i.writing ? 'IN PROGRESS' : 'INCOMPLETE'} ${i.id}  ${i.objects} objects, ${formatBytes(i.bytes)}: ${i.reason}${hint}\n`);
      }
      return 0;
    } finally {
      await storage.close();
    }
  },
});
