import { closeSync, constants, fchmodSync, openSync, read, readSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

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
export async function readAt(fd: number, buf: Buffer, pos: number): Promise<Buffer> {
  let got = 0;
  while (got < buf.length) {
    const n = await new Promise<number>((resolve, reject) => read(fd, buf, got, buf.length - got, pos + got, (err, bytes) => (err ? reject(err) : resolve(bytes))));
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/** readAt, synchronously: for small reads, where a thread-pool round trip costs more than the read. */
export function readAtSync(fd: number, buf: Buffer, pos: number): Buffer {
  let got = 0;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/**
 * Gives dir and everything below it to uid:gid, links themselves rather than what they point to. A file with
 * more than one name is skipped: it may be a hard link to a file elsewhere (a tenant's plant), whose owner
 * would change with it.
 */
export async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await fs.lchown(dir, uid, gid);
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid, gid);
    else if (e.isSymbolicLink() || (await fs.lstat(p)).nlink === 1) await fs.lchown(p, uid, gid);
  }
}

/**
 * Makes an SQLite database file and its companions (-wal, -shm, -journal) 0600 before it is opened: SQLite
 * creates the companions with the database file's mode, and a database left 0644 by the umask let every local
 * user read the control plane's state (issue 22). Never through a symbolic link; an existing file is fixed.
 */
export function makeSqlitePrivate(file: string): void {
  const fix = (f: string, create: boolean) => {
    let fd: number;
    try {
      fd = openSync(f, (create ? constants.O_RDWR | constants.O_CREAT : constants.O_RDONLY) | constants.O_NOFOLLOW, 0o600);
    } catch (err) {
      if (!create && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      fchmodSync(fd, 0o600);
    } finally {
      closeSync(fd);
    }
  };
  fix(file, true);
  for (const suffix of ['-wal', '-shm', '-journal']) fix(`${file}${suffix}`, false);
}
