// The repository format, version 1. docs/backup-format.md is its specification; keep them in step.
import { createHash } from 'node:crypto';
import type { Codec } from '../config/catalogue.js';
import type { KdfParams } from '../crypto/keys.js';

export const FORMAT = 'couchtrove-backup';
/** The newest version this code reads. Full and incremental backups are still written as version 1
 * (older readers keep reading them); only archive cuts with a delta catalog are version 2. */
export const FORMAT_VERSION = 2;
/** What an ordinary backup is written as. */
export const WRITE_VERSION = 1;
/** An archive cut whose catalog is a delta on its parent's (docs/backup-format.md, "Continuous archiving"). */
export const DELTA_VERSION = 2;

/** Object keys, relative to the repository root (the URL's path or prefix). */
export const keys = {
  repository: 'couchtrove.json',
  backupsPrefix: 'backups/',
  dir: (id: string) => `backups/${id}/`,
  manifest: (id: string) => `backups/${id}/manifest.json`,
  catalog: (id: string) => `backups/${id}/catalog`,
  data: (id: string) => `backups/${id}/data`,
  lock: (id: string) => `backups/${id}/in-progress.json`,
};

export interface StoredObject {
  key: string;
  size: number;
}

/** The catalog is also pinned by the SHA-256 of its stored bytes. The data object needs no such hash:
 * every record in it is authenticated (GCM) or lands in a file whose SHA-256 is checked, and hashing
 * every stored byte again would cost a tenth of a backup's CPU. */
export interface PinnedObject extends StoredObject {
  /** SHA-256 (hex) of the stored bytes. */
  sha256: string;
}

/** The clear, sealed description of a backup. Written last: a backup exists once its manifest does. */
export interface ManifestBody {
  format: typeof FORMAT;
  version: number;
  id: string;
  created: string;
  completed: string;
  parent: string | null;
  /** Every other backup whose data object this backup's files use (its ancestors): none may be deleted first. */
  depends: string[];
  host: string;
  datastore: { type: 'couchdb'; version: string | null };
  compression: { codec: Codec; level: number };
  /** kdf: scrypt parameters, or none for a generated key (shared along an incremental chain); keySalt: this backup's HKDF salt. */
  /** keyId: which key (`instance:<id>`); absent in backups written with the master key (before per-instance keys). */
  encryption: null | { cipher: 'aes-256-gcm'; keyId?: string; kdf: KdfParams; keySalt: string };
  recordSize: number;
  /** bytes: plain bytes copied by this backup; totalBytes: plain bytes of the whole tree it restores. */
  summary: { files: number; dirs: number; bytes: number; totalBytes: number; size: number };
  objects: { data: StoredObject; catalog: PinnedObject };
  /** = objects.catalog.sha256: the catalog pins every file's and every stored object's SHA-256. */
  checksum: string;
  labels: Record<string, string>;
}

export interface Manifest {
  body: ManifestBody;
  /** HMAC-SHA256 under the seal key when encrypted, else SHA-256, of canonical(body). */
  seal: { alg: 'hmac-sha256' | 'sha256'; value: string };
}

/** A contiguous run of records in one backup's data object that decodes to part of a file. */
export interface Extent {
  /** Backup whose data object holds the records (this backup, or an ancestor for incrementals). */
  backup: string;
  /** Byte offset of the first record header in that data object. */
  offset: number;
  /** Stored bytes of the run, headers included. */
  length: number;
  /** Index of the first record in that data object (the AEAD nonce counter). */
  record: number;
  records: number;
  /** Plain-text bytes the run decodes to. */
  bytes: number;
  /** SHA-256 (hex) of those plain-text bytes. */
  sha256: string;
}

export interface FileEntry {
  type: 'file';
  root: 'data' | 'config';
  /** '/'-separated path relative to the root; never absolute, never '..'. */
  path: string;
  mode: number;
  mtimeMs: number;
  size: number;
  /** SHA-256 of the whole file; null when an incremental backup took its first bytes from a parent (each extent has its own). */
  sha256: string | null;
  /** Sampled fingerprint of the file's first `size` bytes (fingerprint.ts), checked before an incremental reuses them. */
  fingerprint: string;
  extents: Extent[];
  /** Identity on the source host when measured, for incremental backups. Never used alone. */
  source: { dev: number; ino: number; birthtimeMs: number };
  /** Delta catalogs only: `extents` continue the parent's entry for this path (the file grew). */
  continues?: true;
}

export interface DirEntry {
  type: 'dir';
  root: 'data' | 'config';
  path: string;
  mode: number;
  mtimeMs: number;
}

export interface CouchdbDatabase {
  name: string;
  docCount: number;
  docDelCount: number | null;
  updateSeq: string | null;
  /** The document from GET /_node/_local/_dbs/{db}, as CouchDB returned it (without _rev). */
  shardMap: Record<string, unknown> | null;
}

export interface CouchdbMetadata {
  version: string;
  node: string;
  uuid: string | null;
  /** The set of databases when the backup began: a restore brings back exactly these. */
  databases: CouchdbDatabase[];
}

/** The full content list; stored compressed (and encrypted) as the catalog object. */
export interface Catalog {
  format: typeof FORMAT;
  version: number;
  id: string;
  entries: (FileEntry | DirEntry)[];
  couchdb: CouchdbMetadata | null;
  /** Files seen but left out, with the reason (temporary compaction files, symlinks, ...). */
  skipped: { path: string; reason: string }[];
  /**
   * Version 2 (archive cuts) only: this catalog lists only the files that changed since the parent's
   * (whole, or `continues`), every directory, and the files that are gone (`root:path`). The tree it
   * restores is the parent's tree with these changes applied (materializeCatalog in repository.ts).
   */
  delta?: { parent: string; removed: string[] };
}

/** JSON with sorted keys and no white space: the bytes that seals and checksums cover. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    return `{${Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** A path from a catalog may be written under a target directory only if it cannot escape it. */
/** The directories on the way to these relative paths ("a/b/c" gives "a" and "a/b"). */
export function dirsOnWay(paths: Iterable<string>): Set<string> {
  const dirs = new Set<string>();
  for (const p of paths) for (let i = p.indexOf('/'); i > 0; i = p.indexOf('/', i + 1)) dirs.add(p.slice(0, i));
  return dirs;
}

export function isSafeRelativePath(p: string): boolean {
  if (typeof p !== 'string' || p === '' || p.length > 4096 || p.includes('\0') || p.includes('\\')) return false;
  if (p.startsWith('/')) return false;
  return p.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}
