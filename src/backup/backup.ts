// Full physical backup of a (running) CouchDB data directory: measure, then stream every file's
// measured prefix as records through the worker pool into one data object, then the catalog, then
// the manifest, which is the commit point.
import { createHash, randomUUID, type Hash } from 'node:crypto';
import { hostname } from 'node:os';
import { closeSync } from 'node:fs';
import type { Backend } from '../storage/backend.js';
import { createObject } from '../storage/index.js';
import { deriveKeys, newKdfParams, newKeySalt, type BackupKeys } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import { DELTA_VERSION, FORMAT, keys, WRITE_VERSION, sha256Hex, type Catalog, type DirEntry, type Extent, type FileEntry, type ManifestBody } from './format.js';
import { encodeCatalog, ensureRepository, openBackup, openManifest, putBuffer, readManifest, sealManifest, type OpenedBackup } from './repository.js';
import { newLock } from './lock.js';
import { extentsMatch, Fingerprint, fingerprint } from './fingerprint.js';
import { checkLevel, DEFAULT_LEVEL, DEFAULT_RECORD_SIZE, maxRecordBytes, MAX_RECORD_SIZE } from './records.js';
import { RecordPool, RecordTaskError } from './pool.js';
import { measure, openMeasured, type MeasuredFile } from './snapshot.js';
import { readCouchdbMetadata } from './couchdb.js';
import { recordDone } from '../util/gc.js';
import type { BackupOptions, BackupSummary } from './types.js';

export async function createBackup(opts: BackupOptions): Promise<BackupSummary> {
  return (await writeBackup(opts)).summary;
}

/** What an archive cut needs beyond the options of an ordinary backup (src/backup/archive.ts). */
export interface CutOptions {
  /** The parent, already opened (its catalog materialized): a stream keeps it from one cut to the next. */
  parentOpened?: OpenedBackup;
  /** Store a delta catalog (format version 2) on the parent's; `depends` is then the parent alone. */
  delta?: boolean;
  /**
   * The CouchDB metadata of an earlier cut, with the `_dbs.couch` it was recorded against: reused when the
   * measuring pass finds that file unchanged (no database created, deleted or re-mapped since), which
   * spares a cut the HTTP round trips per database that, under load, made it seconds slower.
   */
  couchdbReuse?: { meta: Catalog['couchdb']; dbs: FileEntry };
  /**
   * No in-progress lock: an archive stream has one writer, which also runs its retention, and retention never
   * touches a cut newer than the base it keeps; the lock's two stored writes were a tenth of a cut's time.
   */
  noLock?: boolean;
  /** Record the measuring pass's start and end in the labels `cutStart`/`cutEnd` (ms): restore-to-time chooses by them. */
  recordCut?: boolean;
}

export interface WrittenBackup {
  summary: BackupSummary;
  /** The backup as the next cut builds on it: manifest, whole catalog, keys. */
  opened: OpenedBackup;
  /** When the measuring pass began and ended (ms since the epoch): the cut lies between. */
  cut: { start: number; end: number };
}

export async function writeBackup(opts: BackupOptions & CutOptions): Promise<WrittenBackup> {
  const storage = opts.storage;
  const codec = opts.compression ?? 'zstd';
  const level = opts.compressionLevel ?? DEFAULT_LEVEL[codec];
  checkLevel(codec, level);
  const recordSize = opts.recordSize ?? DEFAULT_RECORD_SIZE;
  if (recordSize < 4096 || recordSize > MAX_RECORD_SIZE) throw new CouchtroveError(`record size ${recordSize} out of range`);
  const id = opts.id ?? randomUUID();
  const created = new Date().toISOString();

  await ensureRepository(storage);
  if ((await storage.stat(keys.manifest(id))) || (await firstObject(storage, keys.dir(id)))) {
    throw new CouchtroveError(`backup ${id} already exists in ${storage.location}`);
  }
  // An incremental backup starts from its parent's catalog: which files it holds, and where.
  const parent = opts.parentOpened ?? (opts.parent ? await openBackup(storage, opts.parent, opts.key) : undefined);
  const delta = opts.delta === true && parent !== undefined;
  // Its files would be partly stored in the clear, and a plain manifest authenticates nothing.
  if (parent && opts.key && !parent.manifest.body.encryption) throw new CouchtroveError(`backup ${opts.parent} is not encrypted: an encrypted incremental backup cannot build on it`);
  // A chain has one key: an agent holds only its own, and restores the chain with it.
  if (parent && opts.key && parent.manifest.body.encryption && parent.manifest.body.encryption.keyId !== opts.key.id) {
    throw new CouchtroveError(`backup ${parent.manifest.body.id} was written with key ${parent.manifest.body.encryption.keyId ?? 'master'}, not ${opts.key.id ?? 'master'}: an incremental backup cannot build on it (take a full backup)`);
  }
  // The set of databases is recorded before the pass (docs/backup-format.md).
  let couchdb = opts.couchdb && !opts.couchdbReuse ? await readCouchdbMetadata(opts.couchdb) : null;
  let snapshot: Awaited<ReturnType<typeof measure>> | undefined;
  let pool: RecordPool | undefined;
  // The lock (with what the backup may build on: delete refuses those while it beats) is written, and
  // fsynced, a few ms, while the measuring pass runs.
  const lock = opts.noLock ? { written: Promise.resolve(), release: async () => undefined, stop: async () => undefined } : newLock(storage, id, parent ? [parent.manifest.body.id, ...parent.manifest.body.depends] : [], opts.heartbeatMs);
  try {
    let cutStart = Date.now();
    snapshot = await measure(opts.dataDir, opts.configDir, { followSymlinks: opts.followSymlinks === true, ...(opts.files ? { only: new Set(opts.files) } : {}) });
    let cutEnd = Date.now();
    if (opts.couchdbReuse) {
      const d = opts.couchdbReuse.dbs;
      const now = snapshot.files.find((f) => f.root === 'data' && f.path === '_dbs.couch');
      if (now && now.size === d.size && now.ino === d.source.ino && now.dev === d.source.dev && now.birthtimeMs === d.source.birthtimeMs) {
        couchdb = opts.couchdbReuse.meta;
      } else {
        // The set of databases changed: record it anew, before a new pass (the order the cut needs).
        snapshot.close();
        couchdb = opts.couchdb ? await readCouchdbMetadata(opts.couchdb) : null;
        cutStart = Date.now();
        snapshot = await measure(opts.dataDir, opts.configDir, { followSymlinks: opts.followSymlinks === true, ...(opts.files ? { only: new Set(opts.files) } : {}) });
        cutEnd = Date.now();
      }
    }
    await lock.written;
    await opts.afterMeasure?.();
    const previous = new Map<string, FileEntry>();
    for (const e of parent?.catalog.entries ?? []) if (e.type === 'file') previous.set(`${e.root}:${e.path}`, e);
    // Starting the worker threads costs ~50 ms of both cores: below INLINE_BYTES to copy (the usual
    // incremental), this thread encodes the records itself.
    pool = new RecordPool(opts.workers ?? (toCopy(snapshot.files, previous) < INLINE_BYTES ? 0 : undefined));
    const keyId = opts.key?.id;
    const encryption = opts.key ? { cipher: 'aes-256-gcm' as const, ...(keyId ? { keyId } : {}), kdf: parent?.manifest.body.encryption?.kdf ?? newKdfParams(opts.key), keySalt: newKeySalt() } : null;
    const k = opts.key && encryption ? await deriveKeys(opts.key, encryption.kdf, encryption.keySalt, keyId) : null;

    const total = snapshot.files.reduce((n, f) => n + f.size, 0);
    const written = await writeData(storage, id, snapshot.files, { codec, level, recordSize, keys: k, pool, total, progress: opts.progress, previous, parentCheck: opts.parentCheck ?? 'sampled' });
    // A delta's catalog chain reaches every ancestor through its parent: naming them all in every manifest
    // would make each cut's manifest grow with the chain.
    const depends = delta ? [parent.manifest.body.id] : [...new Set(written.entries.flatMap((e) => e.extents.map((x) => x.backup)))].filter((b) => b !== id).sort();
    const version = delta ? DELTA_VERSION : WRITE_VERSION;

    const catalog: Catalog = {
      format: FORMAT,
      version,
      id,
      entries: [...snapshot.dirs.map((d): DirEntry => d), ...written.entries],
      couchdb,
      skipped: snapshot.skipped,
    };
    const stored = delta ? deltaOf(catalog, parent.catalog, parent.manifest.body.id) : catalog;
    const catalogBytes = encodeCatalog(stored, codec, level, k?.catalog ?? null, recordSize);
    const catalogSize = await putBuffer(storage, keys.catalog(id), catalogBytes);
    const catalogSha = sha256Hex(catalogBytes);

    const body: ManifestBody = {
      format: FORMAT,
      version,
      id,
      created,
      completed: new Date().toISOString(),
      parent: parent ? parent.manifest.body.id : null,
      depends,
      host: hostname(),
      datastore: { type: 'couchdb', version: couchdb?.version ?? null },
      compression: { codec, level },
      encryption,
      recordSize,
      summary: { files: written.entries.length, dirs: snapshot.dirs.length, bytes: written.copied, totalBytes: total, size: written.size + catalogSize },
      objects: {
        data: { key: keys.data(id), size: written.size },
        catalog: { key: keys.catalog(id), size: catalogSize, sha256: catalogSha },
      },
      checksum: catalogSha,
      labels: { ...(opts.labels ?? {}), ...(opts.recordCut ? { cutStart: String(cutStart), cutEnd: String(cutEnd) } : {}) },
    };
    const manifestText = `${JSON.stringify(sealManifest(body, k), null, 1)}\n`;
    body.summary.size += Buffer.byteLength(manifestText);
    // The size recorded includes the manifest itself, so seal again with the final figure.
    const sealed = sealManifest(body, k);
    const finalText = `${JSON.stringify(sealed, null, 1)}\n`;
    // Last check before the commit point: every backup whose data this one uses is still there and
    // still authenticates (another tool may have deleted one while this backup was written).
    await checkDepends(storage, id, depends, opts);
    await putBuffer(storage, keys.manifest(id), finalText, { 'couchtrove-backup-id': id, 'couchtrove-format': String(version), 'couchtrove-datastore': 'couchdb', 'couchtrove-datastore-version': body.datastore.version ?? 'unknown' });
    await lock.release();
    const summary = snapshot.followed.length ? { ...summaryOf(body), followedSymlinks: snapshot.followed } : summaryOf(body);
    return { summary, opened: { manifest: sealed, catalog, keys: k }, cut: { start: cutStart, end: cutEnd } };
  } catch (err) {
    // Nothing of a failed backup may look usable: the manifest is never written, and the rest goes.
    await lock.stop();
    await removeObjects(storage, id).catch(() => undefined);
    throw err;
  } finally {
    snapshot?.close();
    await pool?.close();
  }
}

/**
 * The delta catalog of `full` on the parent's whole catalog: files that grew carry only their new extents
 * (`continues`), files new or rewritten are whole, unchanged files are left out, and files gone are named.
 */
export function deltaOf(full: Catalog, parent: Catalog, parentId: string): Catalog {
  const before = new Map<string, FileEntry>();
  for (const e of parent.entries) if (e.type === 'file') before.set(`${e.root}:${e.path}`, e);
  const entries: Catalog['entries'] = [];
  const seen = new Set<string>();
  for (const e of full.entries) {
    if (e.type === 'dir') {
      entries.push(e);
      continue;
    }
    const k = `${e.root}:${e.path}`;
    seen.add(k);
    const prev = before.get(k);
    const n = prev?.extents.length ?? 0;
    // Reused: the parent's extents are the first ones, exactly (writeData keeps them in order).
    const reused = prev !== undefined && n > 0 && e.extents.length >= n && e.extents.slice(0, n).every((x, i) => x === prev.extents[i]);
    if (!reused) entries.push(e);
    else if (e.extents.length > n || e.mode !== prev.mode || e.size !== prev.size) entries.push({ ...e, extents: e.extents.slice(n), continues: true });
  }
  const removed = [...before.keys()].filter((k) => !seen.has(k));
  return { ...full, entries, delta: { parent: parentId, removed } };
}

/** Every backup in `depends` still has its manifest (authenticating as it did) and its whole data object. */
async function checkDepends(storage: Backend, id: string, depends: string[], opts: BackupOptions): Promise<void> {
  for (const dep of depends) {
    try {
      const m = await readManifest(storage, dep);
      await openManifest(m, opts.key);
      const st = await storage.stat(m.body.objects.data.key);
      if (!st) throw new CouchtroveError(`its object ${m.body.objects.data.key} is missing`);
      if (st.size < m.body.objects.data.size) throw new CouchtroveError(`its object ${m.body.objects.data.key} is truncated`);
    } catch (err) {
      throw new CouchtroveError(`backup ${id} depends on backup ${dep}, which was deleted or damaged while it was written (${(err as Error).message}): the backup was not completed`);
    }
  }
}

export function summaryOf(body: ManifestBody): BackupSummary {
  return {
    id: body.id,
    created: body.created,
    completed: body.completed,
    size: body.summary.size,
    files: body.summary.files,
    bytes: body.summary.bytes,
    totalBytes: body.summary.totalBytes,
    checksum: body.checksum,
    compression: body.compression.codec,
    encrypted: body.encryption !== null,
    parent: body.parent,
    datastore: body.datastore,
    labels: body.labels,
  };
}

async function firstObject(storage: Backend, prefix: string): Promise<boolean> {
  for await (const _ of storage.list(prefix)) return true;
  return false;
}

/** Removes every object of a backup, the manifest first so that a partial removal never looks complete. */
export async function removeObjects(storage: Backend, id: string): Promise<number> {
  await storage.delete(keys.manifest(id));
  const found: string[] = [];
  for await (const o of storage.list(keys.dir(id))) found.push(o.key);
  for (const key of found) await storage.delete(key);
  return found.length;
}

interface WriteContext {
  codec: BackupOptions['compression'] & string;
  level: number;
  recordSize: number;
  keys: BackupKeys | null;
  pool: RecordPool;
  total: number;
  progress: BackupOptions['progress'];
  /** The parent's files by root:path (empty for a full backup). */
  previous: Map<string, FileEntry>;
  parentCheck: 'sampled' | 'full';
}

const INLINE_BYTES = 32 << 20;

/** The parent's file and this one are the same file, not shrunk: device, inode AND birth time (inodes are reused). */
function sameFile(prev: FileEntry, f: MeasuredFile): boolean {
  return prev.source.dev === f.dev && prev.source.ino === f.ino && prev.source.birthtimeMs === f.birthtimeMs && f.size >= prev.size;
}

/** The bytes a backup will copy if every file the parent holds by identity still matches. */
function toCopy(files: MeasuredFile[], previous: Map<string, FileEntry>): number {
  let n = 0;
  for (const f of files) {
    const prev = previous.get(`${f.root}:${f.path}`);
    n += prev && sameFile(prev, f) ? f.size - prev.size : f.size;
  }
  return n;
}

/**
 * How much of a file the parent already holds: its extents, when it is the same file (sameFile) and the
 * parent's prefix still reads the same (fingerprint.ts). Otherwise nothing: the file is copied whole.
 */
async function reusable(f: MeasuredFile, fd: number, ctx: WriteContext): Promise<FileEntry | undefined> {
  if (!ctx.previous.size) return undefined;
  const prev = ctx.previous.get(`${f.root}:${f.path}`);
  if (!prev || prev.size === 0 || !sameFile(prev, f)) return undefined;
  const same = ctx.parentCheck === 'full' ? await extentsMatch(fd, prev.extents) : fingerprint(fd, prev.size) === prev.fingerprint;
  return same ? prev : undefined;
}

async function writeData(
  storage: Backend,
  id: string,
  files: MeasuredFile[],
  ctx: WriteContext,
): Promise<{ entries: FileEntry[]; size: number; copied: number }> {
  const writer = await createObject(storage, keys.data(id), { sizeHint: ctx.total, metadata: { 'couchtrove-backup-id': id } });
  let offset = 0;
  let recordIndex = 0;
  let bytesDone = 0;
  let filesDone = 0;
  let copied = 0;

  /** A file being copied: its entry is completed when its last record comes back. */
  interface Copying {
    f: MeasuredFile;
    fd: number;
    owned: boolean;
    prev: FileEntry | undefined;
    hash: Hash;
    fp: Fingerprint;
    extent: Extent;
    entry: FileEntry;
    /** Records submitted and not yet back; `submitted` once the last one is. */
    pending: number;
    submitted: boolean;
  }
  const open = new Set<Copying>();
  const finish = (c: Copying) => {
    const { extent } = c;
    extent.sha256 = c.hash.digest('hex');
    copied += extent.bytes;
    filesDone++;
    // Copied whole, the extent's hash is the file's; on top of a parent's prefix each extent keeps its own.
    c.entry.sha256 = c.prev ? null : extent.sha256;
    c.entry.fingerprint = c.fp.digest();
    c.entry.extents = [...(c.prev?.extents ?? []), ...(extent.records > 0 ? [extent] : [])];
    open.delete(c);
    if (c.owned) closeSync(c.fd);
  };

  // Encoded records in submission order. The workers read each record's bytes from the file and encode
  // them, and hand the plain text back: this thread hashes it (SHA-256 is sequential) and feeds the
  // fingerprint, in order, and writes the record out. Its extent's offset and length are filled in as
  // its records are written, so small files do not stall the pipeline. Plain-text and output buffers
  // come back from the workers and are reused; they are allocated as the pipeline fills (encoding on
  // this thread, as an incremental does, takes one pair).
  const free: Buffer[] = [];
  const outs: Buffer[] = [];
  let pairs = 0;
  const inflight: { record: ReturnType<RecordPool['encode']>; file: Copying; pos: number; n: number; first: boolean }[] = [];
  const flushOne = async () => {
    const item = inflight.shift()!;
    const { file } = item;
    const { extent } = file;
    let done;
    try {
      done = await item.record;
    } catch (err) {
      if (!(err instanceof RecordTaskError)) throw err;
      if (err.kind === 'short') throw new CouchtroveError(`${file.f.path} shrank while being copied: measured ${file.f.size} bytes, only ${item.pos + Number(err.message)} could be read`);
      throw new CouchtroveError(`cannot copy ${file.f.path}: ${err.message}`);
    }
    recordDone();
    const plain = Buffer.from(done.plain.buffer).subarray(0, item.n);
    file.hash.update(plain);
    file.fp.feed(plain, item.pos);
    free.push(Buffer.from(done.plain.buffer));
    if (item.first) extent.offset = offset;
    const record = Buffer.from(done.out.buffer);
    await writer.write(record.subarray(0, done.length));
    outs.push(record);
    offset += done.length;
    extent.length = offset - extent.offset;
    if (--file.pending === 0 && file.submitted) finish(file);
  };

  const entries: FileEntry[] = [];
  let turn = performance.now();
  try {
    for (const f of files) {
      // Fingerprints, reads and inline encoding are synchronous: give the event loop (the agent
      // daemon answers requests on it) a turn at least every 50 ms.
      if (performance.now() - turn > 50) {
        await new Promise((resolve) => setImmediate(resolve));
        turn = performance.now();
      }
      const { fd, owned } = openMeasured(f);
      let file: Copying;
      try {
        const prev = await reusable(f, fd, ctx);
        const from = prev?.size ?? 0;
        bytesDone += from;
        // The new fingerprint comes from the bytes copied, and from the file only for the parent's part.
        const fp = new Fingerprint(fd, f.size).readUntil(from);
        const extent: Extent = { backup: id, offset: 0, length: 0, record: recordIndex, records: 0, bytes: f.size - from, sha256: '' };
        const entry: FileEntry = { type: 'file', root: f.root, path: f.path, mode: f.mode, mtimeMs: f.mtimeMs, size: f.size, sha256: null, fingerprint: '', extents: [], source: { dev: f.dev, ino: f.ino, birthtimeMs: f.birthtimeMs } };
        file = { f, fd, owned, prev, hash: createHash('sha256'), fp, extent, entry, pending: 0, submitted: false };
      } catch (err) {
        if (owned) closeSync(fd);
        throw err;
      }
      // Open until its last record is back: the workers read through it, the fingerprint may too.
      open.add(file);
      entries.push(file.entry);
      for (let pos = f.size - file.extent.bytes; pos < f.size; ) {
        if (free.length === 0 && pairs <= ctx.pool.depth) {
          free.push(Buffer.allocUnsafeSlow(ctx.recordSize));
          outs.push(Buffer.allocUnsafeSlow(maxRecordBytes(ctx.recordSize)));
          pairs++;
        }
        if (free.length === 0) await flushOne();
        const n = Math.min(ctx.recordSize, f.size - pos);
        const record = ctx.pool.encode({ codec: ctx.codec, level: ctx.level, key: ctx.keys?.data ?? null, index: recordIndex++, plain: free.pop()!.subarray(0, n), out: outs.pop()!, read: { fd, position: pos } });
        record.catch(() => undefined);
        inflight.push({ record, file, pos, n, first: file.extent.records === 0 });
        file.extent.records++;
        file.pending++;
        pos += n;
        bytesDone += n;
        if (inflight.length >= ctx.pool.depth) await flushOne();
        ctx.progress?.({ phase: 'backup', bytesDone, bytesTotal: ctx.total, filesDone, filesTotal: files.length });
      }
      file.submitted = true;
      if (file.pending === 0) finish(file);
    }
    while (inflight.length) await flushOne();
    ctx.progress?.({ phase: 'backup', bytesDone, bytesTotal: ctx.total, filesDone, filesTotal: files.length });
  } catch (err) {
    await writer.abort();
    await Promise.allSettled(inflight.map((i) => i.record));
    throw err;
  } finally {
    // Only once no worker reads through them (a failure waited for the records in flight above).
    for (const c of open) if (c.owned) closeSync(c.fd);
  }
  const info = await writer.commit();
  if (info.size !== offset) throw new CouchtroveError(`storage stored ${info.size} bytes of ${keys.data(id)}, ${offset} were sent`);
  return { entries, size: offset, copied };
}
