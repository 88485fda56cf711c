// The record pool's decoding lanes: each lane's records are decoded, hashed and written in order on
// one thread, and a failure says what failed (key, data or the write).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { RecordPool, RecordTaskError } from '../../src/backup/pool.js';
import { encodeRecord, HEADER_BYTES } from '../../src/backup/records.js';
import { tempDir } from '../support/tree.js';

const RECORD = 64 * 1024;

/** One file's records, encoded as a backup stores them (records numbered from `first`). */
function records(plain: Buffer, key: Buffer | null, first: number): { header: Buffer; payload: Buffer; length: number }[] {
  const out = [];
  for (let pos = 0, i = first; pos < plain.length; pos += RECORD, i++) {
    const chunk = plain.subarray(pos, pos + RECORD);
    const rec = encodeRecord('zstd', 1, key, i, chunk);
    out.push({ header: Buffer.from(rec.subarray(0, HEADER_BYTES)), payload: Buffer.from(rec.subarray(HEADER_BYTES)), length: chunk.length });
  }
  return out;
}

for (const workers of [0, 2]) {
  test(`pool (${workers} workers): lanes decode, hash and write two files at once, each in order`, async () => {
    const { dir, cleanup } = await tempDir('pool');
    const pool = new RecordPool(workers);
    try {
      const key = randomBytes(32);
      const files = [randomBytes(5 * RECORD + 123), randomBytes(3 * RECORD)].map((plain, n) => ({ plain, path: path.join(dir, `f${n}`), recs: records(plain, key, n * 100) }));
      const fds = files.map((f) => openSync(f.path, 'wx'));
      // Interleaved submission across lanes, as the restore's lanes do.
      const replies: Promise<{ length: number; digest: string | null }>[][] = files.map(() => []);
      const positions = files.map(() => 0);
      for (let i = 0; i < Math.max(...files.map((f) => f.recs.length)); i++) {
        files.forEach((f, n) => {
          const r = f.recs[i];
          if (!r) return;
          const lane = n % pool.lanes;
          replies[n]!.push(pool.decode(lane, { codec: 'zstd', key, index: n * 100 + i, header: r.header, payload: r.payload, plain: null, hash: { stream: 1000 + n, final: i === f.recs.length - 1 }, write: { fd: fds[n]!, position: positions[n]! } }));
          positions[n]! += r.length;
        });
      }
      for (const [n, f] of files.entries()) {
        const got = await Promise.all(replies[n]!);
        assert.equal(got.reduce((s, r) => s + r.length, 0), f.plain.length);
        assert.deepEqual(got.map((r) => r.digest !== null), f.recs.map((_, i) => i === f.recs.length - 1), 'only the final record returns a digest');
        assert.equal(got.at(-1)!.digest, createHash('sha256').update(f.plain).digest('hex'));
        closeSync(fds[n]!);
        assert.deepEqual(await fs.readFile(f.path), f.plain);
      }
    } finally {
      await pool.close();
      await cleanup();
    }
  });
}

test('pool: a wrong key fails as auth, a descriptor that cannot be written as io', async () => {
  const { dir, cleanup } = await tempDir('pool');
  const pool = new RecordPool(1);
  try {
    const key = randomBytes(32);
    const [r] = records(randomBytes(1000), key, 0);
    const wrong = pool.decode(0, { codec: 'zstd', key: randomBytes(32), index: 0, header: r!.header, payload: Buffer.from(r!.payload), plain: null, hash: { stream: 1, final: true }, write: null });
    await assert.rejects(wrong, (err: unknown) => err instanceof RecordTaskError && err.kind === 'auth');
    const file = path.join(dir, 'read-only');
    await fs.writeFile(file, '');
    const fd = openSync(file, 'r');
    const unwritable = pool.decode(0, { codec: 'zstd', key, index: 0, header: r!.header, payload: Buffer.from(r!.payload), plain: null, hash: { stream: 2, final: true }, write: { fd, position: 0 } });
    await assert.rejects(unwritable, (err: unknown) => err instanceof RecordTaskError && err.kind === 'io' && /EBADF/.test(err.message));
    closeSync(fd);
  } finally {
    await pool.close();
    await cleanup();
  }
});
