// Verify: read the whole backup (and the parts of its ancestors it uses), decode every record and
// check every SHA-256, writing nothing.
import type { Backend } from '../storage/backend.js';
import type { KeyMaterial } from '../crypto/keys.js';
import type { FileEntry } from './format.js';
import { DataDecoder } from './reader.js';
import { openBackup } from './repository.js';
import { chainObjects } from './chain.js';
import type { Progress, VerifyResult } from './types.js';

export async function verifyBackup(opts: { storage: Backend; id: string; key?: KeyMaterial; progress?: (p: Progress) => void }): Promise<VerifyResult> {
  const decoder = new DataDecoder(opts.storage);
  try {
    const opened = await openBackup(opts.storage, opts.id, opts.key);
    await decoder.open(await chainObjects(opts.storage, opened, opts.key));
    const files = opened.catalog.entries.filter((e): e is FileEntry => e.type === 'file');
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
