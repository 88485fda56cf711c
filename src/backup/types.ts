// Public types of the backup engine: what callers (CLI, agent, control plane) pass and get back.
import type { Backend } from '../storage/backend.js';
import type { Codec } from '../config/catalogue.js';
import type { KeyMaterial } from '../crypto/keys.js';

export interface Progress {
  phase: 'backup' | 'restore' | 'verify';
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
}

export interface CouchdbSource {
  /** Base URL without credentials, e.g. http://127.0.0.1:5984 */
  url: string;
  /** Admin credentials; sent as basic auth, never logged or stored. */
  username?: string;
  password?: string;
}

export interface BackupOptions {
  dataDir: string;
  storage: Backend;
  key?: KeyMaterial;
  compression?: Codec;
  compressionLevel?: number;
  configDir?: string;
  couchdb?: CouchdbSource;
  id?: string;
  /** Extra metadata kept in the manifest (e.g. the control plane's instance id). Never secrets. */
  labels?: Record<string, string>;
  progress?: (p: Progress) => void;
  /** Test hook: runs after the measuring pass, before any byte is copied. */
  afterMeasure?: () => Promise<void>;
  /** Plain-text bytes per record (default 2 MiB). */
  recordSize?: number;
  /** Worker threads that encode records: by default none when under 32 MiB is to be copied, else one per core. */
  workers?: number;
  /** Incremental backup: store only what each file gained since this backup (docs/backup-format.md). */
  parent?: string;
  /** How the parent's bytes are checked before reuse: sampled fingerprint (default) or a full re-read. */
  parentCheck?: 'sampled' | 'full';
  /** Back up what symbolic links in the data (or configuration) directory point to; without it a link fails the backup. */
  followSymlinks?: boolean;
  /** Test hook: how often the in-progress lock is rewritten (default 30 s). */
  heartbeatMs?: number;
  /** Only these data files (paths relative to dataDir): a cluster member's share of a cluster backup. */
  files?: string[];
}

export interface BackupSummary {
  id: string;
  created: string;
  completed: string;
  /** Bytes stored in the repository (data, catalog and manifest objects). */
  size: number;
  /** Regular files in the backup. */
  files: number;
  /** Data bytes read and stored by this backup (for an incremental backup, only what is new). */
  bytes: number;
  /** Plain bytes of the whole tree the backup restores. */
  totalBytes: number;
  /** SHA-256 (hex) of the catalog object, which pins the SHA-256 of every file and stored object. */
  checksum: string;
  compression: Codec;
  encrypted: boolean;
  parent: string | null;
  datastore: { type: 'couchdb'; version: string | null };
  labels: Record<string, string>;
  /** Only from a backup just taken with followSymlinks: the links it followed ("path -> target"). */
  followedSymlinks?: string[];
}

export interface RestoreOptions {
  storage: Backend;
  id: string;
  dataDir: string;
  key?: KeyMaterial;
  /** 'user:group' names or numeric ids. */
  owner?: string;
  force?: boolean;
  /** Where to write the backed-up CouchDB configuration files, if any were backed up. */
  configDir?: string;
  progress?: (p: Progress) => void;
  /** Backups expected in the chain (an archive's cuts back to their base): read ahead, in parallel. */
  chainHint?: string[];
  /**
   * Only what these databases need (a one-database restore's scratch server): their shard files and the
   * shard maps; the whole tree when it is not a CouchDB 3 layout (couchdb.ts, databaseFiles).
   */
  databases?: string[];
  /** Only these data files (paths relative to the data directory) and the directories on their way. */
  files?: string[];
  /** Worker threads that decode records: by default one per core (at most 8). */
  workers?: number;
}

export interface RestoreResult {
  id: string;
  files: number;
  bytes: number;
  dataDir: string;
  configFiles: number;
  /** Staging directories of earlier, killed restores found in the target and removed. */
  removedStaging: string[];
}

export interface VerifiedFile {
  path: string;
  root: 'data' | 'config';
  size: number;
  /** null for a file of an incremental backup built on its parent's bytes (each extent was checked). */
  sha256: string | null;
}

export interface VerifyResult {
  id: string;
  ok: true;
  files: VerifiedFile[];
  bytes: number;
}
