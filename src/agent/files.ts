// The instance's files, and the only ways the agent (root, in the default deployment) touches them.
//
// A tenant with CouchDB server admin can make its CouchDB write any file its uid can write, and with code
// execution as that uid it could plant links and hard links there. So the agent treats everything the
// instance's uid can write as hostile: it never opens, chowns or chmods a path in that area through a
// link; files it gives the instance are created afresh (a new inode in a directory of the agent's, owner and
// mode set on the open descriptor, then renamed into place), never "fixed" where they lie. What CouchDB reads
// but must not change (local.ini, vm.args, the directories that hold them) belongs to the agent and is only
// readable by the instance's group. docs/security.md has the table of files, owners and modes.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { InstanceSettings } from './protocol.js';
import { CouchtroveError } from '../util/errors.js';

export function instanceFiles(s: InstanceSettings) {
  return {
    etcDir: path.join(s.instanceDir, 'etc'),
    localIni: path.join(s.instanceDir, 'etc', 'local.ini'),
    vmArgs: path.join(s.instanceDir, 'vm.args'),
    secret: path.join(s.instanceDir, 'admin.secret'),
    /** When the agent enabled root (ISO time): what `root show` says; the agent's own, like admin.secret. */
    rootSince: path.join(s.instanceDir, 'root-enabled-at'),
    log: path.join(s.instanceDir, 'log', 'couchdb.log'),
    smoosh: path.join(s.instanceDir, 'smoosh'),
    /** CouchDB's HOME: holds the Erlang cookie (.erlang.cookie, 0400), which never goes on a command line. */
    home: path.join(s.instanceDir, 'home'),
    cookie: path.join(s.instanceDir, 'home', '.erlang.cookie'),
  };
}

export interface Owner {
  uid: number;
  gid: number;
}

/**
 * Who owns what, for an instance whose CouchDB runs as runAs (isolated) or as the agent itself.
 * - agent-private: the agent's alone (admin.secret, state, logs).
 * - readable: the agent's, readable (never writable) by the instance's group: local.ini, vm.args, etc/, home/.
 * - instance: the instance's uid's own (data, smoosh state, the cookie).
 */
export function ownership(s: InstanceSettings) {
  const me: Owner = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const run = s.runAs;
  return {
    isolated: run !== undefined,
    readable: run ? { owner: { uid: me.uid, gid: run.gid }, fileMode: 0o640, dirMode: 0o750 } : { owner: me, fileMode: 0o600, dirMode: 0o700 },
    instance: run ? { uid: run.uid, gid: run.gid } : me,
  };
}

/**
 * Writes file as a new inode: a temporary name created exclusively (O_EXCL|O_NOFOLLOW) beside it, owner and
 * mode set on the descriptor, synced, renamed over the old name. A link or a hard link planted at the name is
 * replaced, never written through. The directory must be the agent's (nobody else can add names to it).
 */
export async function replaceFile(file: string, content: string | Buffer, mode: number, owner?: Owner): Promise<void> {
  const tmp = `${file}.tmp-${randomBytes(6).toString('hex')}`;
  const h = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    await h.writeFile(content);
    if (owner) await h.chown(owner.uid, owner.gid);
    await h.chmod(mode);
    await h.sync();
  } catch (err) {
    await h.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw err;
  }
  await h.close();
  await fsp.rename(tmp, file);
}

/** Writes a file readable by its owner only (the agent), atomically, creating its directory. */
export async function writePrivateFile(file: string, content: string): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await replaceFile(file, content, 0o600);
}

/**
 * Reads a file that someone else may control: never through a link (O_NOFOLLOW), never a FIFO or device
 * (O_NONBLOCK, then a regular file checked on the descriptor), at most maxBytes. null when it does not exist.
 */
export async function readUntrusted(file: string, maxBytes: number): Promise<string | null> {
  let h: fsp.FileHandle;
  try {
    h = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new CouchtroveError(`${file} is a symbolic link: refused`);
    throw err;
  }
  try {
    const st = await h.stat();
    if (!st.isFile()) throw new CouchtroveError(`${file} is not a regular file: refused`);
    if (st.size > maxBytes) throw new CouchtroveError(`${file} is ${st.size} bytes, more than the ${maxBytes} allowed`);
    return await h.readFile('utf8');
  } finally {
    await h.close();
  }
}

/**
 * Makes dir a real directory with this owner and mode, creating it if needed. Its parent must be the agent's,
 * so the name cannot be swapped for a link between the lstat and the change. Something else at the name (a
 * file, a link: only an older version's layout or a hand edit put one there) is moved aside, never followed.
 * With `accept`, a directory that already has that owner and mode 0700 is left as it is, and false is
 * returned for a new or different one: the caller gives it to that owner (privileged.ts).
 */
export async function ensureDir(dir: string, owner: Owner, mode: number, accept?: Owner): Promise<boolean> {
  let st = await fsp.lstat(dir).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err)));
  if (st && !st.isDirectory()) {
    await fsp.rename(dir, `${dir}.moved-aside-${Date.now()}`);
    st = null;
  }
  if (!st) {
    await fsp.mkdir(dir, { mode });
    st = await fsp.lstat(dir);
  }
  if (accept) return st.uid === accept.uid && st.gid === accept.gid && (st.mode & 0o7777) === 0o700;
  if (st.uid !== owner.uid || st.gid !== owner.gid) await fsp.lchown(dir, owner.uid, owner.gid);
  if ((st.mode & 0o7777) !== mode) await fsp.chmod(dir, mode);
  return true;
}

/** Whether file is a regular file (not a link) with exactly this owner and mode. */
export async function isFileAsExpected(file: string, owner: Owner, mode: number): Promise<boolean> {
  const st = await fsp.lstat(file).catch(() => null);
  return st !== null && st.isFile() && st.nlink === 1 && st.uid === owner.uid && st.gid === owner.gid && (st.mode & 0o7777) === mode;
}
