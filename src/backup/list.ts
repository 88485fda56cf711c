// Listing and deleting backups. A backup is listed as usable only when its manifest exists (the
// manifest is written last) and authenticates with the key given; a manifest that does not is listed
// as unverified: kept, never chosen, counted or deleted by a policy. Anything else under backups/ is
// reported as incomplete, with its writer's lock.
import type { Backend } from '../storage/backend.js';
import { deriveKeys, type KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import { keys, type Manifest, type ManifestBody } from './format.js';
import { BackupNotFoundError, decodeCatalog, openManifest, readManifest, readObject } from './repository.js';
import { removeObjects, summaryOf } from './backup.js';
import { lockState, readLock, type LockBody } from './lock.js';
import type { BackupSummary } from './types.js';

export interface IncompleteBackup {
  id: string;
  reason: string;
  objects: number;
  bytes: number;
  /** A live writer is still writing it (its lock beats). */
  writing: boolean;
}

export interface UnverifiedBackup {
  id: string;
  /** Why its manifest does not authenticate. */
  reason: string;
  /** What the manifest claims, when it can be parsed: untrusted, for display only. */
  claimed: { created: string; parent: string | null } | null;
  objects: number;
  bytes: number;
}

export interface Scan {
  /** Authenticated manifests, oldest first. */
  backups: ManifestBody[];
  unverified: UnverifiedBackup[];
  incomplete: IncompleteBackup[];
  /** Live locks of backups being written, with what each may build on. */
  writing: Partial<LockBody>[];
}

export async function listBackups(storage: Backend, key?: KeyMaterial): Promise<{ backups: BackupSummary[]; unverified: UnverifiedBackup[]; incomplete: IncompleteBackup[] }> {
  const { backups, unverified, incomplete } = await scan(storage, key);
  return { backups: backups.map(summaryOf), unverified, incomplete };
}

/**
 * Why a manifest cannot be trusted to list, choose or delete backups, or null when it authenticates.
 * With a key, only an encrypted manifest whose HMAC seal checks does: a plain one's SHA-256 seal can be
 * recomputed by anyone who can write to the repository. Without a key, encrypted manifests cannot be
 * checked, and plain ones only for corruption (an unencrypted repository trusts its storage).
 */
export async function untrusted(m: Manifest, key: KeyMaterial | undefined): Promise<string | null> {
  if (key && !m.body.encryption) return 'not encrypted, so its seal (a plain SHA-256 anyone could recompute) cannot be authenticated with the key';
  try {
    await openManifest(m, key);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

export async function scan(storage: Backend, key?: KeyMaterial): Promise<Scan> {
  const groups = new Map<string, { keys: string[]; bytes: number }>();
  for await (const o of storage.list(keys.backupsPrefix)) {
    const id = o.key.slice(keys.backupsPrefix.length).split('/')[0]!;
    const g = groups.get(id) ?? { keys: [], bytes: 0 };
    g.keys.push(o.key);
    g.bytes += o.size;
    groups.set(id, g);
  }
  const out: Scan = { backups: [], unverified: [], incomplete: [], writing: [] };
  for (const [id, g] of groups) {
    const lock = g.keys.includes(keys.lock(id)) ? await readLock(storage, id) : null;
    const state = lock ? lockState({ ...lock, id }) : null;
    if (lock && state?.alive) out.writing.push({ ...lock, id });
    if (g.keys.includes(keys.manifest(id))) {
      let reason: string | null;
      let m: Manifest | undefined;
      try {
        m = await readManifest(storage, id);
        reason = await untrusted(m, key);
      } catch (err) {
        // Deleted since it was listed: gone. A storage failure is no verdict on the manifest: it fails the scan.
        if (err instanceof BackupNotFoundError) continue;
        if (!(err instanceof CouchtroveError)) throw err;
        reason = err.message;
      }
      if (m && reason === null) out.backups.push(m.body);
      else out.unverified.push({ id, reason: reason!, claimed: m ? { created: String(m.body.created), parent: typeof m.body.parent === 'string' ? m.body.parent : null } : null, objects: g.keys.length, bytes: g.bytes });
      continue;
    }
    let reason = 'interrupted: no manifest was written';
    if (lock && state) reason = state.alive ? `no manifest yet: ${state.why}` : `interrupted: no manifest, and ${state.why} (started ${lock.started})`;
    out.incomplete.push({ id, reason, objects: g.keys.length, bytes: g.bytes, writing: state?.alive === true });
  }
  out.backups.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
  return out;
}

/**
 * What an unverified backup may need: what its manifest claims, and every backup its catalog's extents
 * use when the catalog can be read (authenticated by AES-GCM under the key when encrypted; its catalog
 * holds the truth even when the manifest's parent or depends were edited). null when the catalog cannot
 * be read: then it may need any backup.
 */
export async function mayNeed(storage: Backend, id: string, key: KeyMaterial | undefined): Promise<Set<string> | null> {
  try {
    const m = await readManifest(storage, id);
    const enc = m.body.encryption;
    if (enc && !key) return null;
    const catalogKey = enc && key ? (await deriveKeys(key, enc.kdf, enc.keySalt, enc.keyId)).catalog : null;
    const catalog = decodeCatalog(await readObject(storage, keys.catalog(id)), m.body.compression.codec, catalogKey, id);
    const needs = new Set<string>([...(typeof m.body.parent === 'string' ? [m.body.parent] : []), ...(Array.isArray(m.body.depends) ? m.body.depends.map(String) : [])]);
    for (const e of catalog.entries) if (e.type === 'file') for (const x of e.extents) needs.add(x.backup);
    needs.delete(id);
    return needs;
  } catch {
    return null;
  }
}

/** Deletes a backup or the leftovers of an incomplete one. The key authenticates the other backups' claims. */
export async function deleteBackup(storage: Backend, id: string, key?: KeyMaterial): Promise<{ objects: number }> {
  const { backups, unverified, incomplete, writing } = await scan(storage, key);
  if (![...backups, ...unverified, ...incomplete].some((b) => b.id === id)) throw new BackupNotFoundError(id, storage.location);
  const writer = writing.find((w) => w.id === id);
  if (writer) throw new CouchtroveError(`backup ${id} cannot be deleted: it is still being written (${lockState(writer).why})`);
  const dependents = backups.filter((b) => b.parent === id || (b.depends ?? []).includes(id));
  if (dependents.length > 0) {
    throw new CouchtroveError(`backup ${id} cannot be deleted: incremental backup ${dependents.map((b) => b.id).join(', ')} depends on it`);
  }
  const builder = writing.find((w) => Array.isArray(w.depends) && w.depends.includes(id));
  if (builder) throw new CouchtroveError(`backup ${id} cannot be deleted: backup ${builder.id}, still being written, builds on it (${lockState(builder).why})`);
  // An unverified backup's own claims are not believed; what it may really need is kept.
  for (const u of unverified) {
    if (u.id === id) continue;
    const needs = await mayNeed(storage, u.id, key);
    if (needs === null) {
      throw new CouchtroveError(
        `backup ${id} cannot be deleted: backup ${u.id} does not authenticate (${u.reason}) and its catalog cannot be read, so it may depend on ${id}` +
          `${key ? '' : ' (give --key-file)'}; delete or repair ${u.id} first`,
      );
    }
    if (needs.has(id)) throw new CouchtroveError(`backup ${id} cannot be deleted: backup ${u.id}, which does not authenticate (${u.reason}), depends on it`);
  }
  const removed = await removeObjects(storage, id);
  if (removed === 0) throw new BackupNotFoundError(id, storage.location);
  return { objects: removed };
}
