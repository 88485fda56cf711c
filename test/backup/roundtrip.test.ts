// Backup -> restore of every real CouchDB 3.5 data directory gives a byte-identical tree, for every
// codec, with and without a key; verify agrees.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBackup, listBackups, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { KeyMaterial } from '../../src/crypto/keys.js';
import { openStorage } from '../../src/storage/index.js';
import { CODECS } from '../../src/config/catalogue.js';
import { expectedFiles, extractDatadir, VERSIONS } from '../support/fixtures.js';
import { readTree, tempDir } from '../support/tree.js';

describe('round trip on the CouchDB 3.5 fixtures', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    work = await tempDir('roundtrip');
  });
  after(async () => work.cleanup());

  for (const v of VERSIONS) {
    for (const codec of CODECS) {
      for (const encrypted of [false, true]) {
        test(`${v} ${codec} ${encrypted ? 'encrypted' : 'unencrypted'}`, async () => {
          const base = path.join(work.dir, `${v}-${codec}-${encrypted}`);
          const src = await extractDatadir(v, path.join(base, 'src'));
          const storage = await openStorage(`file://${base}/repo`);
          const key = encrypted ? new KeyMaterial(randomBytes(32)) : undefined;
          // The unencrypted cases encode on the calling thread; the encrypted ones go through worker threads,
          // with records small enough that a restore has many writes of one file in flight.
          const summary = await createBackup({ dataDir: src, storage, key, compression: codec, recordSize: encrypted ? 64 << 10 : 1 << 20, workers: encrypted ? 2 : 0 });
          const expected = expectedFiles(v);
          assert.equal(summary.files, expected.length);
          assert.equal(summary.bytes, expected.reduce((n, f) => n + f.size, 0));
          assert.equal(summary.encrypted, encrypted);
          assert.match(summary.checksum, /^[0-9a-f]{64}$/);
          if (codec !== 'none') assert.ok(summary.size < summary.bytes, `compressed ${summary.size} < raw ${summary.bytes}`);

          const verified = await verifyBackup({ storage, id: summary.id, key });
          assert.equal(verified.files.length, expected.length);

          const dst = path.join(base, 'restored');
          const r = await restoreBackup({ storage, id: summary.id, dataDir: dst, key });
          assert.equal(r.files, expected.length);
          const tree = await readTree(dst);
          assert.deepEqual(
            tree.files.map((f) => [f.path, f.size, f.sha256]),
            expected.map((f) => [f.path, f.size, f.sha256]),
          );
          // mtimes kept (whole seconds in the fixture list), and the empty .delete/ directory is there.
          for (const f of tree.files) assert.equal(Math.floor(f.mtimeMs / 1000), expected.find((e) => e.path === f.path)!.mtime, f.path);
          assert.ok(tree.dirs.includes('.delete'));
          assert.ok(tree.dirs.includes('.shards/00000000-7fffffff'));
          // Modes are sane: never writable by group or others.
          for (const f of tree.files) assert.equal(f.mode & 0o022, 0, `${f.path} mode ${f.mode.toString(8)}`);

          const { backups, incomplete } = await listBackups(storage, key);
          assert.deepEqual(backups.map((b) => b.id), [summary.id]);
          assert.deepEqual(incomplete, []);
          await storage.close();
        });
      }
    }
  }
});
