// Restore: decode every file into a staging directory inside the target, check every SHA-256,
// fsync, and only then move the files into place. A failed restore leaves the target as it was
// (an empty or previous data directory), never a tree that looks complete but is missing data.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { CouchtroveError } from '../util/errors.js';
import { syncDir } from '../util/fs.js';
import { isSafeRelativePath, type DirEntry, type FileEntry } from './format.js';
import { DataDecoder, type FileSink } from './reader.js';
import { openBackup } from './repository.js';
import type { RestoreOptions, RestoreResult } from './types.js';
import { chainObjects } from './chain.js';

const STAGING_PREFIX = '.couchtrove-restore-';

export async function restoreBackup(opts: RestoreOptions): Promise<RestoreResult> {
  const decoder = new DataDecoder(opts.storage);
  try {
    return await restoreWith(decoder, opts);
  } finally {
    await decoder.close();
  }
}

async function restoreWith(decoder: DataDecoder, opts: RestoreOptions): Promise<RestoreResult> {
  const { storage, id } = opts;
  const target = path.resolve(opts.dataDir);
  const opened = await openBackup(storage, id, opts.key);
  const { catalog } = opened;
  for (const e of catalog.entries) {
    if (!isSafeRelativePath(e.path) || (e.type !== 'file' && e.type !== 'dir') || (e.root !== 'data' && e.root !== 'config')) {
      throw new CouchtroveError(`backup ${id} holds an unsafe entry ${JSON.stringify(e.path)} (${String(e.type)}): refusing to restore it`);
    }
  }
  const owner = opts.owner ? await resolveOwner(opts.owner) : undefined;
  await prepareTarget(target, opts.force === true);

  const objects = await chainObjects(storage, opened, opts.key);
  const stage = path.join(target, `${STAGING_PREFIX}${id}`);
  await fs.rm(stage, { recursive: true, force: true });
  await fs.mkdir(stage, { mode: 0o700 });
  const rootDir = (root: 'data' | 'config') => path.join(stage, root);
  try {
    await decoder.open(objects);
    const dirs = catalog.entries.filter((e): e is DirEntry => e.type === 'dir');
    const files = catalog.entries.filter((e): e is FileEntry => e.type === 'file');
    await fs.mkdir(rootDir('data'), { mode: 0o755 });
    await fs.mkdir(rootDir('config'), { mode: 0o755 });
    for (const d of dirs) await fs.mkdir(path.join(rootDir(d.root), ...d.path.split('/')), { recursive: true, mode: 0o755 });

    // The decoder's threads write each file at positions through its descriptor. Each file's
    // fdatasync runs in the background while the next files are written, and all of them complete
    // before anything is moved into place. fdatasync, not fsync: it still makes the data and the size
    // durable, and skipping the timestamps (set again below anyway) made a 1 GiB restore ~25% faster
    // here (docs/benchmarks.md). Directory entries are synced further down.
    const open = new Map<FileEntry, fs.FileHandle>();
    const syncing = new Set<Promise<void>>();
    const sink: FileSink = {
      begin: async (f) => {
        const p = path.join(rootDir(f.root), ...f.path.split('/'));
        await fs.mkdir(path.dirname(p), { recursive: true });
        // 'wx': the staging tree is ours and new, nothing can pre-exist (or be a planted link).
        const handle = await fs.open(p, 'wx', sanitizeMode(f.mode, false));
        open.set(f, handle);
        return handle.fd;
      },
      end: async (f) => {
        const handle = open.get(f)!;
        open.delete(f);
        while (syncing.size >= 8) await Promise.race(syncing);
        const p = handle.datasync().finally(() => handle.close());
        const tracked = p.then(() => void syncing.delete(tracked));
        syncing.add(tracked);
        p.catch(() => undefined);
      },
    };
    try {
      await decoder.run(files, sink, opts.progress, 'restore');
      await Promise.all(syncing);
    } finally {
      await Promise.allSettled(syncing);
      await Promise.all([...open.values()].map((h) => h.close()));
    }
    // Times and modes after the content: writing would change them again.
    await Promise.all(files.map((f) => fs.utimes(path.join(rootDir(f.root), ...f.path.split('/')), new Date(f.mtimeMs), new Date(f.mtimeMs))));
    for (const d of [...dirs].reverse()) {
      const p = path.join(rootDir(d.root), ...d.path.split('/'));
      await fs.chmod(p, sanitizeMode(d.mode, true));
      await fs.utimes(p, new Date(d.mtimeMs), new Date(d.mtimeMs));
    }
    if (owner) await chownTree(stage, owner.uid, owner.gid);
    // The new files' directory entries are durable before anything moves into place.
    await Promise.all([...dirs.map((d) => path.join(rootDir(d.root), ...d.path.split('/'))), rootDir('data'), rootDir('config')].map(syncDir));

    // Everything is on disk and checked: replace the target's contents.
    if (opts.force) await clearDirectory(target, stage);
    for (const name of await fs.readdir(rootDir('data'))) await fs.rename(path.join(rootDir('data'), name), path.join(target, name));
    if (owner) await fs.chown(target, owner.uid, owner.gid);
    await syncDir(target);
    let configFiles = 0;
    if (opts.configDir) configFiles = await installConfig(rootDir('config'), opts.configDir, files, owner);
    await fs.rm(stage, { recursive: true, force: true });
    return { id, files: files.filter((f) => f.root === 'data').length, bytes: files.reduce((n, f) => n + f.size, 0), dataDir: target, configFiles };
  } catch (err) {
    await fs.rm(stage, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

/** rw for the owner, never writable by others, no set-id bits. */
function sanitizeMode(mode: number, dir: boolean): number {
  return dir ? (mode & 0o755) | 0o700 : (mode & 0o644) | 0o600;
}

async function prepareTarget(target: string, force: boolean): Promise<void> {
  let st;
  try {
    st = await fs.stat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await fs.mkdir(target, { recursive: true, mode: 0o755 });
    return;
  }
  if (!st.isDirectory()) throw new CouchtroveError(`restore target ${target} is not a directory`);
  // Leftovers of an interrupted restore are ours to remove.
  const entries = (await fs.readdir(target)).filter((n) => !n.startsWith(STAGING_PREFIX));
  if (entries.length > 0 && !force) {
    throw new CouchtroveError(`restore target ${target} is not empty (${entries.length} entries, e.g. ${entries[0]}); use --force to replace its contents`);
  }
  await fs.access(target, fs.constants.W_OK).catch(() => {
    throw new CouchtroveError(`restore target ${target} is not writable`);
  });
}

async function clearDirectory(dir: string, keep: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    const p = path.join(dir, name);
    if (p !== keep) await fs.rm(p, { recursive: true, force: true });
  }
}

async function installConfig(from: string, to: string, files: FileEntry[], owner?: { uid: number; gid: number }): Promise<number> {
  const config = files.filter((f) => f.root === 'config');
  for (const f of config) {
    const dest = path.join(to, ...f.path.split('/'));
    await fs.mkdir(path.dirname(dest), { recursive: true });
    await fs.rename(path.join(from, ...f.path.split('/')), dest);
    if (owner) await fs.chown(dest, owner.uid, owner.gid);
  }
  if (config.length) await syncDir(to);
  return config.length;
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await fs.lchown(dir, uid, gid);
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid, gid);
    else await fs.lchown(p, uid, gid);
  }
}


const execFileP = promisify(execFile);

/** USER:GROUP by name (through the system's user database) or number. */
export async function resolveOwner(spec: string): Promise<{ uid: number; gid: number }> {
  const [user, group] = spec.split(':') as [string, string];
  const lookup = async (db: 'passwd' | 'group', name: string): Promise<number> => {
    if (/^\d+$/.test(name)) return Number(name);
    try {
      const { stdout } = await execFileP('getent', [db, name]);
      const id = Number(stdout.split(':')[2]);
      if (Number.isInteger(id)) return id;
    } catch {
      // fall through to the error below
    }
    throw new CouchtroveError(`--owner: unknown ${db === 'passwd' ? 'user' : 'group'} ${JSON.stringify(name)}`);
  };
  return { uid: await lookup('passwd', user), gid: await lookup('group', group) };
}
