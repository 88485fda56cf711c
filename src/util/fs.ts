import * as fs from 'node:fs/promises';

/** fsync a directory, so that the names created or renamed in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const h = await fs.open(dir, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Fills buf from the file at pos; shorter only where the file ends. Returns the part filled. */
export async function readAt(handle: fs.FileHandle, buf: Buffer, pos: number): Promise<Buffer> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await handle.read(buf, got, buf.length - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}
