// Listing and deleting backups. A backup is listed as usable only when its manifest exists (the
// manifest is written last); anything else under backups/ is reported as incomplete.
import type { Backend } from '../storage/backend.js';
import { CouchtroveError } from '../util/errors.js';
import { keys, type ManifestBody } from './format.js';
import { readManifest, readObject, BackupNotFoundError } from './repository.js';
import { removeObjects, summaryOf } from './backup.js';
import type { BackupSummary } from './types.js';

export interface IncompleteBackup {
  id: string;
  reason: string;
  objects: number;
  bytes: number;
}

export async function listBackups(storage: Backend): Promise<{ backups: BackupSummary[]; incomplete: IncompleteBackup[] }> {
  const { backups, incomplete } = await scan(storage);
  return { backups: backups.map(summaryOf), incomplete };
}

/** Manifests of the usable backups, oldest first, and the incomplete ones. */
export async function scan(storage: Backend): Promise<{ backups: ManifestBody[]; incomplete: IncompleteBackup[] }> {
  const groups = new Map<string, { keys: string[]; bytes: number }>();
  for await (const o of storage.list(keys.backupsPrefix)) {
    const id = o.key.slice(keys.backupsPrefix.length).split('/')[0]!;
    const g = groups.get(id) ?? { keys: [], bytes: 0 };
    g.keys.push(o.key);
    g.bytes += o.size;
    groups.set(id, g);
  }
  const backups: ManifestBody[] = [];
  const incomplete: IncompleteBackup[] = [];
  for (const [id, g] of groups) {
    if (g.keys.includes(keys.manifest(id))) {
      try {
        backups.push((await readManifest(storage, id)).body);
      } catch (err) {
        incomplete.push({ id, reason: `unreadable manifest: ${(err as Error).message}`, objects: g.keys.length, bytes: g.bytes });
      }
      continue;
    }
    let reason = 'interrupted: no manifest was written';
    if (g.keys.includes(keys.lock(id))) {
      try {
        const lock = JSON.parse((await readObject(storage, keys.lock(id), 1 << 16)).toString('utf8')) as { host?: string; pid?: number; started?: string };
        reason = `no manifest: in progress or interrupted (started ${lock.started} on ${lock.host}, pid ${lock.pid})`;
      } catch {
        // keep the generic reason
      }
    }
    incomplete.push({ id, reason, objects: g.keys.length, bytes: g.bytes });
  }
  backups.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
  return { backups, incomplete };
}

/** Deletes a backup or the leftovers of an incomplete one. */
export async function deleteBackup(storage: Backend, id: string): Promise<{ objects: number }> {
  const { backups } = await scan(storage);
  const dependents = backups.filter((b) => b.parent === id || (b.depends ?? []).includes(id));
  if (dependents.length > 0) {
    throw new CouchtroveError(`backup ${id} cannot be deleted: incremental backup ${dependents.map((b) => b.id).join(', ')} depends on it`);
  }
  const removed = await removeObjects(storage, id);
  if (removed === 0) throw new BackupNotFoundError(id, storage.location);
  return { objects: removed };
}
