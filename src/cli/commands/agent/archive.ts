// `couchtrove agent archive`: continuous archiving by hand, in the foreground until SIGTERM/SIGINT, with
// the same loop the agent daemon runs (src/agent/archiver.ts). One line per cut that stored something.
import { defineCommand, untilStopSignal } from '../../command.js';
import { Archiver } from '../../../agent/archiver.js';
import { archiveWindow } from '../../../backup/archive.js';
import { readKeyFile } from '../../../crypto/keys.js';
import { openStorage } from '../../../storage/index.js';
import { formatBytes } from '../../progress.js';

export const archiveCommand = defineCommand({
  path: ['agent', 'archive'],
  summary: 'Archive a running CouchDB continuously: a consistent cut every --interval seconds into archive/STREAM/ of the repository, until SIGTERM',
  required: ['dataDir', 'storage', 'archiveStream'],
  optional: ['keyFile', 'compression', 'configDir', 'couchdbUrl', 'archiveInterval', 'archiveKeepDays', 'archiveRebaseShare', 'json'],
  run: async (o, io) => {
    const log = (line: string) => io.stderr.write(`${new Date().toISOString()} ${line}\n`);
    const archiver = new Archiver(
      {
        enabled: true,
        storage: o.storage,
        keyFile: o.keyFile,
        stream: o.archiveStream,
        interval: o.archiveInterval,
        keepDays: o.archiveKeepDays,
        rebaseShare: o.archiveRebaseShare === undefined ? undefined : o.archiveRebaseShare / 100,
        compression: o.compression,
      },
      {
        dataDir: o.dataDir,
        configDir: o.configDir,
        // Credentials only from the environment: argv is visible to every user of the host.
        couchdb: () => (o.couchdbUrl ? { url: o.couchdbUrl, username: io.env.COUCHDB_USER, password: io.env.COUCHDB_PASSWORD } : undefined),
        labels: {},
        ready: () => true,
      },
      log,
    );
    let last = { base: 0, incremental: 0 };
    const report = setInterval(() => {
      const s = archiver.status();
      if (s.cuts.base + s.cuts.incremental === last.base + last.incremental) return;
      last = { base: s.cuts.base, incremental: s.cuts.incremental };
      if (o.json) io.stdout.write(`${JSON.stringify(s)}\n`);
      else io.stdout.write(`restore point ${s.restorePoint} (cut ${s.latestCut}); ${s.cuts.base} bases, ${s.cuts.incremental} incrementals, ${s.cuts.unchanged} unchanged; ${formatBytes(s.bytesStored)} stored\n`);
    }, 1000);
    const stopLoop = archiver.start();
    await untilStopSignal();
    clearInterval(report);
    stopLoop();
    await archiver.stop();
    const storage = await openStorage(o.storage, io.env);
    try {
      const w = await archiveWindow(storage, o.archiveStream, o.keyFile ? await readKeyFile(o.keyFile) : undefined);
      log(`archive ${o.archiveStream}: restorable from ${w.oldest ? new Date(w.oldest).toISOString() : '-'} to ${w.newest ? new Date(w.newest).toISOString() : '-'} (${w.cuts} cuts, ${w.bases} bases)`);
    } finally {
      await storage.close();
    }
    return 0;
  },
});
