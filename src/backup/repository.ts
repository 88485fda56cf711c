// Reading and writing the small objects of the repository format: the repository marker, manifests
// and catalogs; opening a backup with every check that does not need the data object.
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import { ObjectNotFoundError, type Backend, type ObjectHandle } from '../storage/backend.js';
import { checkKdfParams, deriveKeys, KEY_ID, equalHex, hmac, type BackupKeys, type KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import { canonicalJson, FORMAT, FORMAT_VERSION, keys, sha256Hex, WRITE_VERSION, type Catalog, type FileEntry, type Manifest, type ManifestBody } from './format.js';
import { decodeRecord, encodeRecord, HEADER_BYTES, MAX_RECORD_SIZE, parseHeader, RecordAuthError } from './records.js';
import type { Codec } from '../config/catalogue.js';

export class BackupNotFoundError extends CouchtroveError {
  constructor(id: string, location: string) {
    super(`backup ${id} not found in ${location}`);
    this.name = 'BackupNotFoundError';
  }
}

export const WRONG_KEY = 'wrong key or corrupted data';

export async function readObject(storage: Backend, key: string, limit = 256 * 1024 * 1024): Promise<Buffer> {
  // A driver that reads at positions (local files) is read without a stream: for the small objects of a
  // long archive chain (two per cut), the stream's set-up and chunks were most of the cost.
  if (storage.open) return readWhole(await storage.open(key), key, limit);
  const stream = await storage.get(key);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    n += (c as Buffer).length;
    if (n > limit) throw new CouchtroveError(`object ${key} is larger than expected (${n} bytes)`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** All of an object through a positional handle (closed), growing the buffer as needed. */
export async function readWhole(handle: ObjectHandle, key: string, limit: number): Promise<Buffer> {
  try {
    let buf = Buffer.allocUnsafe(64 * 1024);
    let n = 0;
    for (;;) {
      const got = await handle.readInto(buf.subarray(n), n);
      n += got;
      if (n < buf.length) return buf.subarray(0, n);
      if (n > limit) throw new CouchtroveError(`object ${key} is larger than expected (more than ${limit} bytes)`);
      const bigger = Buffer.allocUnsafe(buf.length * 2);
      buf.copy(bigger, 0, 0, n);
      buf = bigger;
    }
  } finally {
    await handle.close();
  }
}

export async function putBuffer(storage: Backend, key: string, data: Buffer | string, metadata?: Record<string, string>): Promise<number> {
  const info = await storage.put(key, Readable.from([Buffer.from(data)]), { metadata, sizeHint: Buffer.byteLength(data) });
  return info.size;
}

/** Creates the repository marker on first use; refuses a repository written by a newer format. */
export async function ensureRepository(storage: Backend): Promise<void> {
  let marker: { format?: string; version?: number } | undefined;
  try {
    marker = JSON.parse((await readObject(storage, keys.repository, 1 << 20)).toString('utf8')) as typeof marker;
  } catch (err) {
    if (!(err instanceof ObjectNotFoundError)) {
      if (err instanceof SyntaxError) throw new CouchtroveError(`${storage.location} has an unreadable ${keys.repository}: not a couchtrove repository?`);
      throw err;
    }
  }
  if (!marker) {
    await putBuffer(storage, keys.repository, `${JSON.stringify({ format: FORMAT, version: WRITE_VERSION, created: new Date().toISOString(), host: hostname() })}\n`);
    return;
  }
  if (marker.format !== FORMAT) throw new CouchtroveError(`${storage.location} is not a couchtrove repository (${keys.repository} says format ${JSON.stringify(marker.format)})`);
  if ((marker.version ?? 0) > FORMAT_VERSION) throw new CouchtroveError(`${storage.location} uses repository format ${marker.version}; this couchtrove reads up to ${FORMAT_VERSION}`);
}

export function sealManifest(body: ManifestBody, k: BackupKeys | null): Manifest {
  const text = canonicalJson(body);
  return { body, seal: k ? { alg: 'hmac-sha256', value: hmac(k.seal, text) } : { alg: 'sha256', value: sha256Hex(text) } };
}

export async function readManifest(storage: Backend, id: string): Promise<Manifest> {
  let raw: Buffer;
  try {
    raw = await readObject(storage, keys.manifest(id), 64 << 20);
  } catch (err) {
    if (err instanceof ObjectNotFoundError) throw new BackupNotFoundError(id, storage.location);
    throw err;
  }
  let m: Manifest;
  try {
    m = JSON.parse(raw.toString('utf8')) as Manifest;
  } catch {
    throw new CouchtroveError(`manifest of backup ${id} is corrupted: not valid JSON`);
  }
  if (!m?.body || !m.seal || m.body.format !== FORMAT) throw new CouchtroveError(`manifest of backup ${id} is corrupted: not a couchtrove manifest`);
  if (m.body.version > FORMAT_VERSION) throw new CouchtroveError(`backup ${id} uses format version ${m.body.version}; this couchtrove reads up to ${FORMAT_VERSION}`);
  if (!Number.isInteger(m.body.recordSize) || m.body.recordSize < 1 || m.body.recordSize > MAX_RECORD_SIZE) throw new CouchtroveError(`manifest of backup ${id} is corrupted: record size ${m.body.recordSize}`);
  if (m.body.id !== id) throw new CouchtroveError(`manifest of backup ${id} is corrupted: it names backup ${JSON.stringify(m.body.id)}`);
  // The key derivation runs before the seal can be checked: its parameters are bounded first.
  const enc: unknown = m.body.encryption;
  if (enc !== null) {
    const e = enc as Record<string, unknown> | undefined;
    if (!e || typeof e !== 'object' || e.cipher !== 'aes-256-gcm') throw new CouchtroveError(`manifest of backup ${id} is corrupted: unsupported encryption`);
    checkKdfParams(e.kdf, `manifest of backup ${id}`);
    if (typeof e.keySalt !== 'string' || e.keySalt.length === 0 || e.keySalt.length > 2048) throw new CouchtroveError(`manifest of backup ${id} is corrupted: bad keySalt`);
    if (e.keyId !== undefined && (typeof e.keyId !== 'string' || !KEY_ID.test(e.keyId))) throw new CouchtroveError(`manifest of backup ${id} is corrupted: bad keyId`);
  }
  return m;
}

/** Checks the seal and derives the backup's keys. */
export async function openManifest(m: Manifest, key: KeyMaterial | undefined): Promise<BackupKeys | null> {
  const text = canonicalJson(m.body);
  const id = m.body.id;
  if (m.body.encryption) {
    if (!key) throw new CouchtroveError(`backup ${id} is encrypted: give its key with --key-file`);
    if (m.seal.alg !== 'hmac-sha256') throw new CouchtroveError(`manifest of backup ${id} is corrupted: encrypted backup without an HMAC seal`);
    const { keyId } = m.body.encryption;
    const k = await deriveKeys(key, m.body.encryption.kdf, m.body.encryption.keySalt, keyId);
    if (!equalHex(hmac(k.seal, text), m.seal.value)) {
      // The key id is not secret and says which key to look for; the seal, not the id, decides.
      const which = keyId !== key.id ? ` (it names key ${keyId ?? 'master'}, this is key ${key.id ?? 'master'})` : '';
      throw new CouchtroveError(`${WRONG_KEY}: the manifest of backup ${id} does not authenticate with this key${which}`);
    }
    return k;
  }
  // With a key, a plain manifest proves nothing: anyone who can write to the repository can compute its
  // SHA-256 seal, so it could be a forgery placed under a real backup's id (issue 22).
  if (key) throw new CouchtroveError(`backup ${id} is not encrypted, but a key was given: its manifest cannot be authenticated (forged, or written without a key), so it is refused`);
  if (m.seal.alg !== 'sha256' || !equalHex(sha256Hex(text), m.seal.value)) throw new CouchtroveError(`manifest of backup ${id} is corrupted: its checksum does not match`);
  return null;
}

/** The catalog's records: same framing as data records, under the catalog key, counted from 0. */
export function encodeCatalog(catalog: Catalog, codec: Codec, level: number, key: Buffer | null, recordSize: number): Buffer {
  const json = Buffer.from(JSON.stringify(catalog), 'utf8');
  const parts: Buffer[] = [];
  for (let i = 0, off = 0; off < json.length || i === 0; i++, off += recordSize) {
    parts.push(encodeRecord(codec, level, key, i, json.subarray(off, off + recordSize)));
  }
  return Buffer.concat(parts);
}

export function decodeCatalog(stored: Buffer, codec: Codec, key: Buffer | null, id: string): Catalog {
  const parts: Uint8Array[] = [];
  let off = 0;
  for (let i = 0; off < stored.length; i++) {
    if (off + HEADER_BYTES > stored.length) throw new CouchtroveError(`catalog of backup ${id} is truncated`);
    const header = stored.subarray(off, off + HEADER_BYTES);
    const { payloadLength } = parseHeader(header);
    const end = off + HEADER_BYTES + payloadLength;
    if (end > stored.length) throw new CouchtroveError(`catalog of backup ${id} is truncated`);
    try {
      parts.push(decodeRecord(codec, key, i, header, stored.subarray(off + HEADER_BYTES, end)));
    } catch (err) {
      throw new CouchtroveError(err instanceof RecordAuthError ? `${WRONG_KEY}: catalog of backup ${id}` : `catalog of backup ${id} is corrupted: ${(err as Error).message}`);
    }
    off = end;
  }
  let catalog: Catalog;
  try {
    catalog = JSON.parse(Buffer.concat(parts).toString('utf8')) as Catalog;
  } catch {
    throw new CouchtroveError(`catalog of backup ${id} is corrupted: not valid JSON`);
  }
  if (catalog.id !== id || !Array.isArray(catalog.entries)) throw new CouchtroveError(`catalog of backup ${id} is corrupted: it does not describe this backup`);
  return catalog;
}

export interface OpenedBackup {
  manifest: Manifest;
  catalog: Catalog;
  keys: BackupKeys | null;
  /** For a delta catalog: every ancestor opened on the way (seal checked), so that nothing reads them twice. */
  ancestors?: Map<string, { manifest: Manifest; keys: BackupKeys | null }>;
}

/**
 * Manifest (seal checked), catalog (checksum and authenticity checked). The catalog of an archive cut
 * (a delta) comes back materialized: the whole tree, as any other backup's.
 */
export async function openBackup(storage: Backend, id: string, key: KeyMaterial | undefined, chainHint: string[] = []): Promise<OpenedBackup> {
  // The ancestors a caller expects (an archive stream knows them from its listing) are read 16 at a time:
  // one after the other, a chain of 1,000 small objects took 3.5 s of waiting on reads.
  const prefetched = new Map<string, Promise<OpenedBackup>>();
  const hinted = chainHint.filter((h) => h !== id);
  let next = 0;
  const fetchMore = () => {
    while (next < hinted.length && prefetched.size - settled.size < 16) {
      const h = hinted[next++]!;
      const p = openBackupRaw(storage, h, key);
      p.catch(() => undefined).finally(() => {
        settled.add(h);
        fetchMore();
      });
      prefetched.set(h, p);
    }
  };
  const settled = new Set<string>();
  fetchMore();
  const open = (b: string) => prefetched.get(b) ?? openBackupRaw(storage, b, key);
  const opened = await openBackupRaw(storage, id, key);
  if (!opened.catalog.delta) return opened;
  // Walk back to the nearest full catalog, then apply the deltas forward (no recursion: chains are long).
  const ancestors = new Map<string, { manifest: Manifest; keys: BackupKeys | null }>();
  const deltas: Catalog[] = [opened.catalog];
  let base: Catalog | undefined;
  for (let parent = opened.catalog.delta.parent; ; ) {
    const p = await open(parent).catch((err: Error) => {
      throw new CouchtroveError(`backup ${id} depends on backup ${parent}: ${err.message}`);
    });
    ancestors.set(parent, { manifest: p.manifest, keys: p.keys });
    if (!p.catalog.delta) {
      base = p.catalog;
      break;
    }
    deltas.push(p.catalog);
    parent = p.catalog.delta.parent;
  }
  return { ...opened, catalog: materializeChain(base, deltas), ancestors };
}

/** The whole tree of a delta catalog, from its parent's whole tree (docs/backup-format.md). */
export function materializeCatalog(parent: Catalog, delta: Catalog): Catalog {
  return delta.delta ? materializeChain(parent, [delta]) : delta;
}

/**
 * The whole tree after a chain of delta catalogs (newest first), in one pass: one map of files, and each file's
 * extents appended in place. Materializing the tree of every cut in turn made a chain of 1,000 cuts copy
 * every file's growing extent list 1,000 times (garbage collection was a tenth of such a restore).
 */
function materializeChain(base: Catalog, deltas: Catalog[]): Catalog {
  const files = new Map<string, FileEntry>();
  for (const e of base.entries) if (e.type === 'file') files.set(`${e.root}:${e.path}`, e);
  // Entries made here, whose extent lists are ours to append to (the catalogs' own are never changed).
  const own = new Set<FileEntry>();
  for (let i = deltas.length - 1; i >= 0; i--) {
    const delta = deltas[i]!;
    if (!delta.delta) throw new CouchtroveError(`catalog of backup ${delta.id} is not a delta`);
    for (const k of delta.delta.removed) files.delete(k);
    for (const e of delta.entries) {
      if (e.type !== 'file') continue;
      const k = `${e.root}:${e.path}`;
      if (e.continues) {
        const prev = files.get(k);
        if (!prev) throw new CouchtroveError(`catalog of backup ${delta.id} is corrupted: ${e.path} continues a file its parent ${delta.delta.parent} does not hold`);
        const { continues: _c, ...rest } = e;
        const extents = own.has(prev) ? prev.extents : [...prev.extents];
        for (const x of e.extents) extents.push(x);
        const next: FileEntry = { ...rest, sha256: null, extents };
        own.add(next);
        files.set(k, next);
      } else {
        files.set(k, e);
      }
    }
  }
  const { delta: _d, ...rest } = deltas[0]!;
  return { ...rest, entries: [...deltas[0]!.entries.filter((e) => e.type === 'dir'), ...files.values()] };
}

async function openBackupRaw(storage: Backend, id: string, key: KeyMaterial | undefined): Promise<OpenedBackup> {
  const manifest = await readManifest(storage, id);
  const k = await openManifest(manifest, key);
  const cat = manifest.body.objects.catalog;
  let stored: Buffer;
  try {
    stored = await readObject(storage, cat.key);
  } catch (err) {
    if (err instanceof ObjectNotFoundError) throw new CouchtroveError(`object ${cat.key} of backup ${id} is missing`);
    throw err;
  }
  if (stored.length < cat.size) throw new CouchtroveError(`object ${cat.key} is truncated: ${stored.length} of ${cat.size} bytes`);
  if (sha256Hex(stored) !== cat.sha256) throw new CouchtroveError(`object ${cat.key} is corrupted: its SHA-256 does not match the manifest`);
  const catalog = decodeCatalog(stored, manifest.body.compression.codec, k?.catalog ?? null, id);
  return { manifest, catalog, keys: k };
}
