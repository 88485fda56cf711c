// The sampled fingerprint is the same whether it is read from the file or built from the bytes a
// backup copies, however the copy is cut into records, and it changes with any sampled byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { Fingerprint, fingerprint } from '../../src/backup/fingerprint.js';
import { tempDir } from '../support/tree.js';

test('fingerprint: streamed, partly read or read whole, the same digest', async () => {
  const { dir, cleanup } = await tempDir('fingerprint');
  try {
    const file = path.join(dir, 'f.couch');
    const bytes = randomBytes(3 * 1024 * 1024 + 1234);
    await fs.writeFile(file, bytes);
    const fd = openSync(file, 'r');
      for (const size of [0, 100, 65536, 131072, 131073, 140_000, 200_000, 700_000, bytes.length]) {
        const whole = fingerprint(fd, size);
        for (const record of [4096, 5000, 65536, 1 << 20]) {
          for (const from of [0, Math.floor(size / 3), size]) {
            const fp = new Fingerprint(fd, size).readUntil(from);
            for (let pos = from; pos < size; pos += record) fp.feed(bytes.subarray(pos, Math.min(size, pos + record)), pos);
            assert.equal(fp.digest(), whole, `size ${size}, records of ${record}, copied from ${from}`);
          }
        }
      }
      const before = fingerprint(fd, bytes.length);
      closeSync(fd);
      // A byte in the last 64 KiB changes it; asking for more bytes than the file has never matches.
      bytes[bytes.length - 10]! ^= 1;
      await fs.writeFile(file, bytes);
      const fd2 = openSync(file, 'r');
      assert.notEqual(fingerprint(fd2, bytes.length), before);
      assert.match(fingerprint(fd2, bytes.length + 1), /^short:/);
      closeSync(fd2);
  } finally {
    await cleanup();
  }
});
