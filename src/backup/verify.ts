// Verify: read the whole backup (and the parts of its ancestors it uses), decode every record and
// check every SHA-256, writing nothing.
import type { Backend } from '../storage/backend.js';
import type { KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import type { FileEntry, StoredObject } from './format.js';
import { DataDecoder } from './reader.js';
import { openBackup } from './repository.js';
import { chainObjects } from './chain.js';
import type { Progress, VerifyResult } from './types.js';

export async function verifyBackup(opts: { storage: Backend; id: string; key?: KeyMaterial; progress?: (p: Progress) => void }): Promise<VerifyResult> {
  const decoder = new DataDecoder(opts.storage);
  try {
    const opened = await openBackup(opts.storage, opts.id, opts.key);
    await decoder.open(await chainObjects(opts.storage, opened, opts.key), true);
    const files = opened.catalog.entries.filter((e): e is FileEntry => e.type === 'file');
    checkCoverage(opts.id, opened.manifest.body.objects.data, files);
    await decoder.run(files, { begin: async () => null, end: async () => undefined }, opts.progress, 'verify');
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

/**
 * Every byte of the backup's own data object belongs to exactly one extent of its catalog: the records
 * are written file after file with no gap. Bytes no file uses (inserted or appended with the manifest
 * rewritten to match) are reported, not silently skipped.
 */
function checkCoverage(id: string, data: StoredObject, files: FileEntry[]): void {
  const own = files.flatMap((f) => f.extents.filter((x) => x.backup === id).map((x) => ({ x, path: f.path }))).sort((a, b) => a.x.offset - b.x.offset);
  let end = 0;
  for (const { x, path } of own) {
    if (x.offset > end) throw new CouchtroveError(`object ${data.key} of backup ${id}: bytes ${end} to ${x.offset} belong to no file of the catalog`);
    if (x.offset < end) throw new CouchtroveError(`object ${data.key} of backup ${id}: file ${path} overlaps another file's bytes at offset ${x.offset}`);
    end = x.offset + x.length;
  }
  if (end < data.size) throw new CouchtroveError(`object ${data.key} of backup ${id}: bytes ${end} to ${data.size} belong to no file of the catalog`);
  if (end > data.size) throw new CouchtroveError(`object ${data.key} of backup ${id}: the catalog's files need bytes up to ${end}, its manifest records ${data.size}`);
}
