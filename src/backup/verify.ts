// Verify: read the whole backup (and the parts of its ancestors it uses), decode every record and
// check every SHA-256, writing nothing.
import type { Backend } from '../storage/backend.js';
import type { KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import type { FileEntry } from './format.js';
import { DataDecoder } from './reader.js';
import { openBackup } from './repository.js';
import { chainObjects } from './chain.js';
import type { Progress, VerifyResult } from './types.js';

export async function verifyBackup(opts: { storage: Backend; id: string; key?: KeyMaterial; progress?: (p: Progress) => void }): Promise<VerifyResult> {
  const opened = await openBackup(opts.storage, opts.id, opts.key);
  const objects = await chainObjects(opts.storage, opened, opts.key);
  const decoder = new DataDecoder(opts.storage, objects, true);
  try {
    await decoder.checkObjects();
    const files = opened.catalog.entries.filter((e): e is FileEntry => e.type === 'file');
    await decoder.run(files, { begin: async () => undefined, write: async () => undefined, end: async () => undefined }, opts.progress, 'verify');
    const own = opened.manifest.body.objects.data;
    // A full backup's data object is read from its first to its last byte: its stored SHA-256 must match too.
    if (decoder.objectsChecked.get(own.key) === false) throw new CouchtroveError(`object ${own.key} is corrupted: its SHA-256 does not match the manifest`);
    return {
      id: opts.id,
      ok: true,
      files: files.map((f) => ({ path: f.path, root: f.root, size: f.size, sha256: f.sha256 })),
      bytes: files.reduce((n, f) => n + f.size, 0),
    };
  } finally {
    await decoder.close();
  }
}
