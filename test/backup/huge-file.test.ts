// A file of many records is decoded on every worker at once, its SHA-256 checked on the caller's thread
// in order: it restores byte for byte, and a record damaged in its middle fails the restore naming the
// file, with nothing left in the target.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createBackup, restoreBackup, verifyBackup } from '../../src/backup/index.js';
import { keys, type FileEntry } from '../../src/backup/format.js';
import { RecordPool } from '../../src/backup/pool.js';
import { encodeRecord, HEADER_BYTES } from '../../src/backup/records.js';
import { openBackup } from '../../src/backup/repository.js';
import { KeyMaterial } from '../../src/crypto/keys.js';
import { openStorage } from '../../src/storage/index.js';
import { readTree, tempDir } from '../support/tree.js';

const key = new KeyMaterial(randomBytes(32));
const RECORD = 64 * 1024;

/** Compressible like a .couch file: runs of random bytes between repeated text. */
function couchLike(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let pos = 0; pos < bytes; pos += 4096) {
    const chunk = pos % 8192 === 0 ? randomBytes(4096) : Buffer.from(`{"_id":"doc-${pos}","value":${pos % 977}}`.repeat(120));
    chunk.copy(out, pos, 0, Math.min(4096, bytes - pos));
  }
  return out;
}

describe('one huge file', () => {
  let work: Awaited<ReturnType<typeof tempDir>>;
  let src: string;
  let n = 0;
  before(async () => {
    work = await tempDir('huge-file');
    src = path.join(work.dir, 'src');
    await fs.mkdir(path.join(src, 'shards/00000000-7fffffff'), { recursive: true });
    // 96 records plus a short one, and a small file beside it.
    await fs.writeFile(path.join(src, 'shards/00000000-7fffffff/big.1700000000.couch'), couchLike(96 * RECORD + 1234));
    await fs.writeFile(path.join(src, '_dbs.couch'), couchLike(10_000));
  });
  after(async () => work.cleanup());

  async function backedUp(encrypted: boolean) {
    const root = path.join(work.dir, `repo-${n++}`);
    const storage = await openStorage(`file://${root}`);
    const s = await createBackup({ dataDir: src, storage, key: encrypted ? key : undefined, recordSize: RECORD, workers: 2 });
    return { storage, id: s.id, root, target: path.join(work.dir, `target-${n}`) };
  }

  for (const encrypted of [false, true]) {
    const k = encrypted ? key : undefined;
    const label = encrypted ? 'encrypted' : 'unencrypted';

    for (const workers of [2, 3]) {
      test(`${label}, ${workers} workers: restores byte for byte`, async () => {
        const b = await backedUp(encrypted);
        await restoreBackup({ storage: b.storage, id: b.id, key: k, dataDir: b.target, workers });
        assert.deepEqual((await readTree(b.target)).files.map(({ path, size, sha256 }) => ({ path, size, sha256 })), (await readTree(src)).files.map(({ path, size, sha256 }) => ({ path, size, sha256 })));
      });
    }

    test(`${label}: a record damaged in the middle of the file fails the restore naming it, leaving nothing`, async () => {
      const b = await backedUp(encrypted);
      const { catalog } = await openBackup(b.storage, b.id, k);
      const big = catalog.entries.find((e): e is FileEntry => e.type === 'file' && e.path.endsWith('big.1700000000.couch'))!;
      const [extent] = big.extents;
      assert.equal(extent!.records, 97);
      const dataFile = path.join(b.root, ...keys.data(b.id).split('/'));
      const bytes = await fs.readFile(dataFile);
      // Inside a payload in the middle of the file's extent (not a header: that would be an impossible record).
      bytes[extent!.offset + Math.floor(extent!.length / 2)]! ^= 0x40;
      await fs.writeFile(dataFile, bytes);
      const named = encrypted ? /wrong key or corrupted data: object backups\/\S+\/data at offset \d+, file shards\/00000000-7fffffff\/big\.1700000000\.couch/ : /(corrupted data|checksum mismatch).*shards\/00000000-7fffffff\/big\.1700000000\.couch/;
      await assert.rejects(restoreBackup({ storage: b.storage, id: b.id, key: k, dataDir: b.target, workers: 3 }), named);
      assert.deepEqual(await fs.readdir(b.target), [], 'the target holds nothing after a failed restore');
      await assert.rejects(verifyBackup({ storage: b.storage, id: b.id, key: k }), named);
    });
  }
});

test('pool: records decoded on any worker come back with their plain text, written at their positions', async () => {
  const { dir, cleanup } = await tempDir('pool-spread');
  const pool = new RecordPool(3);
  try {
    const plain = couchLike(20 * RECORD + 77);
    const file = path.join(dir, 'f');
    const fd = openSync(file, 'wx');
    const replies = [];
    for (let pos = 0, i = 0; pos < plain.length; pos += RECORD, i++) {
      const rec = encodeRecord('zstd', 1, null, i, plain.subarray(pos, pos + RECORD));
      replies.push(pool.decode(null, { codec: 'zstd', key: null, index: i, header: Buffer.from(rec.subarray(0, HEADER_BYTES)), payload: Buffer.from(rec.subarray(HEADER_BYTES)), plain: Buffer.allocUnsafeSlow(RECORD), hash: null, write: { fd, position: pos } }));
    }
    const hash = createHash('sha256');
    for (const r of await Promise.all(replies)) {
      assert.equal(r.digest, null);
      hash.update(r.plain!.subarray(0, r.length));
    }
    closeSync(fd);
    assert.equal(hash.digest('hex'), createHash('sha256').update(plain).digest('hex'));
    assert.deepEqual(await fs.readFile(file), plain);
  } finally {
    await pool.close();
    await cleanup();
  }
});
