// Sampled fingerprint of a file's first `size` bytes: the size, the first and last 64 KiB, and 16
// blocks of 4 KiB spread evenly between. An incremental backup reuses the bytes its parent stored for
// a file only when the file is the same one (device, inode and birth time) AND this fingerprint of the
// parent's prefix, read from disk now, equals the one recorded by the parent. CouchDB never rewrites
// bytes before the end of a .couch/.view file: a compaction or a re-created database is a new file (new
// inode and birth time), a commit changes the tail. The samples catch a file that was truncated and
// regrew, or rewritten in place with the same size, at the cost of ~200 KiB of reads per file rather than
// a re-read of everything; `--parent-check full` re-reads the whole prefix and compares it extent by extent.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { readAt } from '../util/fs.js';

const EDGE = 64 * 1024;
const BLOCK = 4096;
const SAMPLES = 16;

export async function fingerprint(handle: FileHandle, size: number): Promise<string> {
  const h = createHash('sha256');
  const len = Buffer.alloc(8);
  len.writeBigUInt64BE(BigInt(size));
  h.update('couchtrove-fp-v1').update(len);
  const ranges: [number, number][] = [[0, Math.min(EDGE, size)]];
  if (size > 2 * EDGE) {
    const span = size - 2 * EDGE;
    for (let i = 1; i <= SAMPLES; i++) {
      const at = EDGE + Math.floor((span * i) / (SAMPLES + 1) / BLOCK) * BLOCK;
      ranges.push([at, Math.min(BLOCK, size - at)]);
    }
  }
  if (size > EDGE) ranges.push([Math.max(EDGE, size - EDGE), size - Math.max(EDGE, size - EDGE)]);
  for (const [at, n] of ranges) {
    const got = await readAt(handle, Buffer.allocUnsafe(n), at);
    if (got.length !== n) return `short:${at}`; // the file is shorter than `size`: never equal to a recorded fingerprint
    h.update(got);
  }
  return h.digest('hex');
}

/** The full parent check: every extent's bytes, read from disk now, hash to the extent's SHA-256. */
export async function extentsMatch(handle: FileHandle, extents: { bytes: number; sha256: string }[]): Promise<boolean> {
  const buf = Buffer.allocUnsafe(1 << 20);
  let pos = 0;
  for (const e of extents) {
    const h = createHash('sha256');
    for (let left = e.bytes; left > 0; ) {
      const got = await readAt(handle, buf.subarray(0, Math.min(buf.length, left)), pos);
      if (got.length === 0) return false;
      h.update(got);
      pos += got.length;
      left -= got.length;
    }
    if (h.digest('hex') !== e.sha256) return false;
  }
  return true;
}
