// The data objects a backup's catalog refers to: its own, and (for incremental backups) its ancestors'.
import type { Backend } from '../storage/backend.js';
import type { KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import type { DataObject } from './reader.js';
import { openManifest, readManifest, type OpenedBackup } from './repository.js';

export async function chainObjects(storage: Backend, opened: OpenedBackup, key: KeyMaterial | undefined): Promise<Map<string, DataObject>> {
  const { manifest, catalog, keys } = opened;
  const objects = new Map<string, DataObject>();
  objects.set(manifest.body.id, { backup: manifest.body.id, object: manifest.body.objects.data, codec: manifest.body.compression.codec, recordSize: manifest.body.recordSize, keys });
  const needed = new Set<string>();
  for (const e of catalog.entries) if (e.type === 'file') for (const x of e.extents) if (!objects.has(x.backup)) needed.add(x.backup);
  for (const backup of needed) {
    const known = opened.ancestors?.get(backup);
    if (known) {
      objects.set(backup, { backup, object: known.manifest.body.objects.data, codec: known.manifest.body.compression.codec, recordSize: known.manifest.body.recordSize, keys: known.keys });
      continue;
    }
    let parent;
    try {
      parent = await readManifest(storage, backup);
    } catch (err) {
      throw new CouchtroveError(`backup ${manifest.body.id} depends on backup ${backup}, which cannot be read: ${(err as Error).message}`);
    }
    const k = await openManifest(parent, key).catch((err: Error) => {
      throw new CouchtroveError(`backup ${manifest.body.id} depends on backup ${backup}: ${err.message}`);
    });
    objects.set(backup, { backup, object: parent.body.objects.data, codec: parent.body.compression.codec, recordSize: parent.body.recordSize, keys: k });
  }
  return objects;
}
