// Options of the backup engine and the `couchtrove agent backup|restore|verify|list|delete` commands.
import { CODECS, parsers, type OptionSpec } from '../option.js';

export const backupOptions = {
  dataDir: {
    flag: 'data-dir', arg: 'DIR', group: 'Backup engine', parse: parsers.absolutePath,
    description: "CouchDB's data directory ([couchdb] database_dir): read by backup, written by restore",
  },
  storage: {
    flag: 'storage', arg: 'URL', group: 'Backup engine', env: 'COUCHTROVE_STORAGE', parse: parsers.string,
    description: 'Backup repository: file:///absolute/path, swift://container/prefix or s3://bucket/prefix',
  },
  keyFile: {
    flag: 'key-file', arg: 'FILE', group: 'Backup engine', env: 'COUCHTROVE_KEY_FILE', parse: parsers.absolutePath,
    description: 'File holding the encryption key (at least 32 bytes, mode 0600 or 0400; `couchtrove agent keygen` makes one). Without it backups are not encrypted; list, delete and expire need it to authenticate encrypted manifests',
  },
  masterKey: {
    flag: 'master-key', group: 'Backup engine', parse: parsers.boolean,
    description: "The key file is the control plane's master key: each backup is read with the key its manifest names (instance:<id>, derived from the master), or the master itself when it names none",
  },
  compression: {
    flag: 'compression', arg: 'CODEC', group: 'Backup engine', default: 'zstd', parse: parsers.oneOf(...CODECS),
    description: 'Compression of stored data: zstd, gzip or none',
  },
  compressionLevel: {
    flag: 'compression-level', arg: 'N', group: 'Backup engine', parse: parsers.integer(1, 19),
    description: 'Compression level (zstd 1-19, default 1; gzip 1-9, default 6)',
  },
  configDir: {
    flag: 'config-dir', arg: 'DIR', group: 'Backup engine', parse: parsers.absolutePath,
    description: "CouchDB's configuration directory (ini files with the hashed server admins): added to the backup, or where restore writes them",
  },
  couchdbUrl: {
    flag: 'couchdb-url', arg: 'URL', group: 'Backup engine', parse: parsers.url,
    description: 'URL of the running CouchDB, to record its version, node name, databases and shard maps. Admin credentials come from COUCHDB_USER and COUCHDB_PASSWORD, never from the URL',
  },
  backupId: {
    flag: 'backup', arg: 'ID', group: 'Backup engine', parse: parsers.backupId,
    description: 'Backup id, as `agent backup` and `agent list` print it',
  },
  newBackupId: {
    flag: 'id', arg: 'ID', group: 'Backup engine', parse: parsers.backupId,
    description: 'Id for the new backup (default: a random UUID)',
  },
  owner: {
    flag: 'owner', arg: 'USER:GROUP', group: 'Backup engine', parse: parsers.owner,
    description: 'Owner and group given to restored files and directories (names or numeric ids)',
  },
  force: {
    flag: 'force', group: 'Backup engine', parse: parsers.boolean,
    description: 'Restore into a non-empty data directory, replacing its contents once the restore has succeeded (and existing files in --config-dir)',
  },
  followSymlinks: {
    flag: 'follow-symlinks', group: 'Backup engine', parse: parsers.boolean,
    description: 'Back up what symbolic links in the data directory point to (restored as real files and directories); without it a link fails the backup',
  },
  json: {
    flag: 'json', group: 'Output', parse: parsers.boolean,
    description: 'Print one JSON document instead of text; no progress bar',
  },
  out: {
    flag: 'out', arg: 'FILE', group: 'Backup engine', parse: parsers.absolutePath,
    description: 'File to create',
  },
  parent: {
    flag: 'parent', arg: 'ID', group: 'Backup engine', parse: parsers.backupId,
    description: "Take an incremental backup on top of this backup ('latest': the newest in the repository): only what each file gained since is stored",
  },
  parentCheck: {
    flag: 'parent-check', arg: 'HOW', group: 'Backup engine', default: 'sampled', parse: parsers.oneOf('sampled', 'full'),
    description: "How an incremental checks that the parent's bytes are still on disk: sampled (fingerprint of ~200 KiB per file) or full (re-read every byte)",
  },
  keepLast: {
    flag: 'keep-last', arg: 'N', group: 'Retention', parse: parsers.integer(0, 100000),
    description: 'Keep the N newest backups',
  },
  keepDaily: {
    flag: 'keep-daily', arg: 'N', group: 'Retention', parse: parsers.integer(0, 100000),
    description: 'Keep the newest backup of each of the last N days that have backups',
  },
  keepWeekly: {
    flag: 'keep-weekly', arg: 'N', group: 'Retention', parse: parsers.integer(0, 100000),
    description: 'Keep the newest backup of each of the last N ISO weeks that have backups',
  },
  dryRun: {
    flag: 'dry-run', group: 'Retention', parse: parsers.boolean,
    description: 'Only list what would be deleted',
  },
} satisfies Record<string, OptionSpec<unknown>>;
