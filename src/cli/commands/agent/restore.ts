import { defineCommand } from '../../command.js';
import { restoreBackup } from '../../../backup/index.js';
import { archiveWindow, restoreToTime } from '../../../backup/archive.js';
import { parseRestoreTime } from '../../../util/restore-time.js';
import { openStorage } from '../../../storage/index.js';
import { readingKey } from '../../../crypto/keys.js';
import { UsageError } from '../../../config/option.js';
import { formatBytes, progressBar } from '../../progress.js';

export const restoreCommand = defineCommand({
  path: ['agent', 'restore'],
  summary: 'Restore a backup (--backup), or an archive as of a time (--stream --to-time), into an empty data directory (CouchDB stopped), checking every file',
  required: ['storage', 'dataDir'],
  optional: ['backupId', 'archiveStream', 'toTime', 'keyFile', 'masterKey', 'owner', 'force', 'configDir', 'json'],
  run: async (o, io) => {
    const pitr = o.toTime !== undefined || o.archiveStream !== undefined;
    if (pitr && (o.toTime === undefined || o.archiveStream === undefined || o.backupId !== undefined)) throw new UsageError('a point-in-time restore takes --stream and --to-time (and no --backup)');
    if (!pitr && o.backupId === undefined) throw new UsageError('missing required option --backup (or --stream and --to-time)');
    const storage = await openStorage(o.storage, io.env);
    const bar = progressBar(io, o.json, 'restore');
    try {
      const common = {
        storage,
        dataDir: o.dataDir,
        key: await readingKey(o.keyFile, o.masterKey),
        owner: o.owner,
        force: o.force,
        configDir: o.configDir,
        progress: bar?.update,
      };
      let cut: { id: string; end: number } | undefined;
      let r;
      if (pitr) {
        // "latest"/"now": the newest restore point of the stream (a time after it was never archived).
        const t = parseRestoreTime(o.toTime!)!;
        const time = t.latest ? ((await archiveWindow(storage, o.archiveStream!, common.key)).newest ?? 0) : t.ms;
        const p = await restoreToTime({ ...common, stream: o.archiveStream!, time });
        cut = p.cut;
        r = p;
      } else {
        r = await restoreBackup({ ...common, id: o.backupId! });
      }
      bar?.stop();
      for (const dir of r.removedStaging) io.stderr.write(`removed ${dir}, left by an interrupted restore\n`);
      if (o.json) io.stdout.write(`${JSON.stringify(r)}\n`);
      else if (cut) io.stdout.write(`restored archive ${o.archiveStream} as of ${new Date(cut.end).toISOString()} (cut ${cut.id}, the newest at or before ${o.toTime}) into ${r.dataDir}: ${r.files} files, ${formatBytes(r.bytes)}, every SHA-256 checked\n`);
      else io.stdout.write(`restored backup ${r.id} into ${r.dataDir}: ${r.files} files, ${formatBytes(r.bytes)}, every SHA-256 checked\n`);
      return 0;
    } finally {
      bar?.stop();
      await storage.close();
    }
  },
});
