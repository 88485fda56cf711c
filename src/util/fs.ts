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
