import { defineCommand } from '../../command.js';
import { createBackup, listBackups } from '../../../backup/index.js';
import { CouchtroveError } from '../../../util/errors.js';
import { openStorage } from '../../../storage/index.js';
import { readKeyFile } from '../../../crypto/keys.js';
import { formatBytes, progressBar } from '../../progress.js';

export const backupCommand = defineCommand({
  path: ['agent', 'backup'],
  summary: 'Take a full physical backup of a (running) CouchDB data directory',
  required: ['dataDir', 'storage'],
  optional: ['keyFile', 'compression', 'compressionLevel', 'configDir', 'couchdbUrl', 'newBackupId', 'parent', 'parentCheck', 'followSymlinks', 'json'],
  run: async (o, io) => {
    const storage = await openStorage(o.storage, io.env);
    const bar = progressBar(io, o.json, 'backup');
    try {
      const key = o.keyFile ? await readKeyFile(o.keyFile) : undefined;
      let parent = o.parent;
      if (parent === 'latest') {
        // Only a manifest that authenticates with this key can be chosen.
        const { backups, unverified } = await listBackups(storage, key);
        if (backups.length === 0) {
          const skipped = unverified.length ? ` that authenticates (${unverified.length} do not, e.g. ${unverified[0]!.id}: ${unverified[0]!.reason})` : ' yet';
          throw new CouchtroveError(`--parent latest: ${storage.location} holds no backup${skipped}`);
        }
        parent = backups[backups.length - 1]!.id;
      }
      const s = await createBackup({
        parent,
        parentCheck: o.parentCheck,
        dataDir: o.dataDir,
        storage,
        key,
        followSymlinks: o.followSymlinks,
        compression: o.compression,
        compressionLevel: o.compressionLevel,
        configDir: o.configDir,
        // Credentials only from the environment: argv is visible to every user of the host.
        couchdb: o.couchdbUrl ? { url: o.couchdbUrl, username: io.env.COUCHDB_USER, password: io.env.COUCHDB_PASSWORD } : undefined,
        id: o.newBackupId,
        progress: bar?.update,
      });
      bar?.stop();
      for (const link of s.followedSymlinks ?? []) io.stderr.write(`followed symbolic link ${link}\n`);
      if (o.json) io.stdout.write(`${JSON.stringify(s)}\n`);
      else io.stdout.write(`backup ${s.id} completed${s.parent ? ` (incremental of ${s.parent})` : ''}: ${s.files} files, ${formatBytes(s.bytes)} read, ${formatBytes(s.size)} stored, sha256 ${s.checksum}\n`);
      return 0;
    } finally {
      bar?.stop();
      await storage.close();
    }
  },
});
