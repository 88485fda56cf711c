// Restore: decode every file into a staging directory inside the target, check every SHA-256,
// fsync, and only then move the files into place. A failed restore leaves the target as it was
// (an empty or previous data directory), never a tree that looks complete but is missing data.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { CouchtroveError } from '../util/errors.js';
import { chownTree, syncDir } from '../util/fs.js';
import { dirsOnWay, isSafeRelativePath, type DirEntry, type FileEntry } from './format.js';
import { DataDecoder, type FileSink } from './reader.js';
import { openBackup } from './repository.js';
import type { RestoreOptions, RestoreResult } from './types.js';
import { chainObjects } from './chain.js';
import { databaseFiles } from './couchdb.js';

const STAGING_PREFIX = '.couchtrove-restore-';
/** While a file is written, it is flushed to disk every this many bytes (measured: docs/benchmarks.md, "One huge file"). */
const FLUSH_EVERY = 64 << 20;
/** A staging directory's name: the prefix and a backup id (format.ts). */
const STAGING_NAME = /^\.couchtrove-restore-[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Written first into a staging directory: who restores into it. */
const WRITER_FILE = 'writer.json';
/** All a staging directory ever holds. */
const STAGING_CONTENT = new Set(['data', 'config', WRITER_FILE]);

export async function restoreBackup(opts: RestoreOptions): Promise<RestoreResult> {
  const decoder = new DataDecoder(opts.storage, opts.workers);
  try {
    return await restoreWith(decoder, opts);
  } finally {
    await decoder.close();
  }
}

async function restoreWith(decoder: DataDecoder, opts: RestoreOptions): Promise<RestoreResult> {
  const { storage, id } = opts;
  const target = path.resolve(opts.dataDir);
  const opened = await openBackup(storage, id, opts.key, opts.chainHint);
  const { catalog } = opened;
  const entries = opts.files ? onlyFiles(catalog.entries, opts.files) : (opts.databases && databaseFiles(catalog.entries, opts.databases)) || catalog.entries;
  for (const e of catalog.entries) {
    if (!isSafeRelativePath(e.path) || (e.type !== 'file' && e.type !== 'dir') || (e.root !== 'data' && e.root !== 'config')) {
      throw new CouchtroveError(`backup ${id} holds an unsafe entry ${JSON.stringify(e.path)} (${String(e.type)}): refusing to restore it`);
    }
  }
  const owner = opts.owner ? await resolveOwner(opts.owner) : undefined;
  const configDir = opts.configDir ? path.resolve(opts.configDir) : undefined;
  // Refused before anything is written: an existing configuration file (without --force), a link on the way.
  if (configDir) await checkConfigTarget(configDir, entries.filter((e): e is FileEntry => e.type === 'file' && e.root === 'config'), opts.force === true);
  const removedStaging = await prepareTarget(target, opts.force === true);

  const objects = await chainObjects(storage, opened, opts.key);
  const stage = path.join(target, `${STAGING_PREFIX}${id}`);
  await fs.rm(stage, { recursive: true, force: true });
  await fs.mkdir(stage, { mode: 0o700 });
  // Tells a later restore whether this directory is a leftover (its writer gone) or in use.
  await fs.writeFile(path.join(stage, WRITER_FILE), `${JSON.stringify({ host: hostname(), pid: process.pid, backup: id, started: new Date().toISOString() })}\n`, { mode: 0o600, flag: 'wx' });
  const rootDir = (root: 'data' | 'config') => path.join(stage, root);
  try {
    await decoder.open(objects);
    const dirs = entries.filter((e): e is DirEntry => e.type === 'dir');
    const files = entries.filter((e): e is FileEntry => e.type === 'file');
    await fs.mkdir(rootDir('data'), { mode: 0o755 });
    await fs.mkdir(rootDir('config'), { mode: 0o755 });
    for (const d of dirs) await fs.mkdir(path.join(rootDir(d.root), ...d.path.split('/')), { recursive: true, mode: 0o755 });

    // The decoder's threads write each file at positions through its descriptor. Each file's
    // fdatasync runs in the background while the next files are written, and all of them complete
    // before anything is moved into place. fdatasync, not fsync: it still makes the data and the size
    // durable, and skipping the timestamps (set again below anyway) made a 1 GiB restore ~25% faster
    // here (docs/benchmarks.md). Directory entries are synced further down. A big file is also flushed
    // every FLUSH_EVERY bytes while it is written: its bytes then go to the disk while the next ones
    // are decoded, instead of all at its end (the kernel's own writeback starts only at 10% of RAM dirty).
    const open = new Map<FileEntry, fs.FileHandle>();
    const syncing = new Set<Promise<void>>();
    const early = new Map<FileEntry, { at: number; running: Promise<void> | null; error: unknown }>();
    const sink: FileSink = {
      begin: async (f) => {
        const p = path.join(rootDir(f.root), ...f.path.split('/'));
        await fs.mkdir(path.dirname(p), { recursive: true });
        // 'wx': the staging tree is ours and new, nothing can pre-exist (or be a planted link).
        const handle = await fs.open(p, 'wx', sanitizeMode(f.mode, false));
        open.set(f, handle);
        return handle.fd;
      },
      written: (f, bytes) => {
        const handle = open.get(f);
        let e = early.get(f);
        if (!handle || bytes - (e?.at ?? 0) < FLUSH_EVERY || e?.running) return;
        if (!e) early.set(f, (e = { at: 0, running: null, error: null }));
        const state = e;
        state.at = bytes;
        state.running = handle.datasync().then(
          () => void (state.running = null),
          (err: unknown) => void ((state.error ??= err), (state.running = null)),
        );
      },
      end: async (f) => {
        const handle = open.get(f)!;
        const e = early.get(f);
        early.delete(f);
        await e?.running;
        if (e?.error) throw e.error;
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
      await Promise.allSettled([...syncing, ...[...early.values()].map((e) => e.running)]);
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
    if (configDir) configFiles = await installConfig(rootDir('config'), configDir, files, opts.force === true, owner);
    await fs.rm(stage, { recursive: true, force: true });
    return { id, files: files.filter((f) => f.root === 'data').length, bytes: files.reduce((n, f) => n + f.size, 0), dataDir: target, configFiles, removedStaging };
  } catch (err) {
    await fs.rm(stage, { recursive: true, force: true }).catch(() => undefined);
    throw err;
  }
}

/** The data files named (every one must be in the backup) and the directories on their way. */
function onlyFiles<E extends { path: string; type: string; root: string }>(entries: E[], files: string[]): E[] {
  const wanted = new Set(files);
  const data = entries.filter((e) => e.root === 'data');
  const found = data.filter((e) => e.type === 'file' && wanted.has(e.path));
  if (found.length !== wanted.size) {
    const have = new Set(found.map((e) => e.path));
    throw new CouchtroveError(`the backup does not hold ${files.filter((f) => !have.has(f)).slice(0, 3).join(', ')}`);
  }
  const dirs = dirsOnWay(wanted);
  return data.filter((e) => (e.type === 'file' ? wanted.has(e.path) : dirs.has(e.path)));
}

/** rw for the owner, never writable by others, no set-id bits. */
function sanitizeMode(mode: number, dir: boolean): number {
  return dir ? (mode & 0o755) | 0o700 : (mode & 0o644) | 0o600;
}

/** Checks the target; removes the staging directories that killed restores left in it, and returns them. */
async function prepareTarget(target: string, force: boolean): Promise<string[]> {
  let st;
  try {
    st = await fs.stat(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await fs.mkdir(target, { recursive: true, mode: 0o755 });
    return [];
  }
  if (!st.isDirectory()) throw new CouchtroveError(`restore target ${target} is not a directory`);
  const removed: string[] = [];
  const entries: string[] = [];
  for (const name of await fs.readdir(target)) {
    const p = path.join(target, name);
    const state = STAGING_NAME.test(name) ? await stagingState(p) : { kind: 'foreign' as const };
    if (state.kind === 'leftover') {
      await fs.rm(p, { recursive: true, force: true });
      removed.push(p);
    } else if (state.kind === 'foreign') {
      entries.push(name);
    } else {
      throw new CouchtroveError(`restore target ${target} is being restored into by another process (pid ${state.pid}, staging directory ${p})`);
    }
  }
  if (entries.length > 0 && !force) {
    throw new CouchtroveError(`restore target ${target} is not empty (${entries.length} entries, e.g. ${entries[0]}); use --force to replace its contents`);
  }
  await fs.access(target, fs.constants.W_OK).catch(() => {
    throw new CouchtroveError(`restore target ${target} is not writable`);
  });
  return removed;
}

/**
 * A directory named like a staging directory is a leftover only if it is one: a real directory holding
 * nothing but what a restore puts there, whose writer (if it got as far as naming itself) is no longer
 * running on this host. Anything else is left alone: foreign, or in use by the live writer it names.
 */
async function stagingState(dir: string): Promise<{ kind: 'leftover' } | { kind: 'foreign' } | { kind: 'live'; pid: number }> {
  const st = await fs.lstat(dir);
  if (!st.isDirectory()) return { kind: 'foreign' };
  const names = await fs.readdir(dir);
  if (!names.every((n) => STAGING_CONTENT.has(n))) return { kind: 'foreign' };
  if (!names.includes(WRITER_FILE)) return { kind: 'leftover' };
  let writer: { host?: unknown; pid?: unknown };
  try {
    writer = JSON.parse(await fs.readFile(path.join(dir, WRITER_FILE), 'utf8')) as typeof writer;
  } catch {
    // Killed while writing it: nothing else was written after it.
    return { kind: 'leftover' };
  }
  if (writer.host !== hostname() || typeof writer.pid !== 'number') return { kind: 'foreign' };
  if (writer.pid === process.pid) return { kind: 'leftover' };
  try {
    process.kill(writer.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return { kind: 'leftover' };
  }
  return { kind: 'live', pid: writer.pid };
}

async function clearDirectory(dir: string, keep: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    const p = path.join(dir, name);
    if (p !== keep) await fs.rm(p, { recursive: true, force: true });
  }
}

/**
 * The configuration files' destinations, before anything is written: every directory on the way is a
 * real directory (a link there would take the files out of the configuration directory), and no file
 * exists yet unless `force` allows replacing it.
 */
async function checkConfigTarget(to: string, config: FileEntry[], force: boolean): Promise<void> {
  const kind = async (p: string) => (await fs.lstat(p).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : Promise.reject(err))));
  const top = await fs.stat(to).catch(() => null);
  if (top && !top.isDirectory()) throw new CouchtroveError(`configuration directory ${to} is not a directory`);
  const checked = new Set<string>();
  for (const f of config) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = path.join(to, ...parts.slice(0, i));
      if (checked.has(dir)) continue;
      checked.add(dir);
      const st = await kind(dir);
      if (st?.isSymbolicLink()) throw new CouchtroveError(`configuration directory: ${dir} is a symbolic link: refusing to write through it`);
      if (st && !st.isDirectory()) throw new CouchtroveError(`configuration directory: ${dir} is not a directory`);
      if (!st) break;
    }
    const dest = path.join(to, ...parts);
    const st = await kind(dest);
    if (st?.isDirectory()) throw new CouchtroveError(`configuration directory: ${dest} is a directory, the backup holds a file there`);
    if (st && !force) throw new CouchtroveError(`configuration directory: ${dest} already exists; use --force to replace it`);
  }
}

/** mkdir -p that never goes through a link: each level is created, or must already be a real directory. */
async function mkdirNoFollow(base: string, parts: string[]): Promise<void> {
  let dir = base;
  for (const part of parts) {
    dir = path.join(dir, part);
    try {
      await fs.mkdir(dir, { mode: 0o755 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const st = await fs.lstat(dir);
      if (st.isSymbolicLink()) throw new CouchtroveError(`configuration directory: ${dir} is a symbolic link: refusing to write through it`);
      if (!st.isDirectory()) throw new CouchtroveError(`configuration directory: ${dir} is not a directory`);
    }
  }
}

async function installConfig(from: string, to: string, files: FileEntry[], force: boolean, owner?: { uid: number; gid: number }): Promise<number> {
  const config = files.filter((f) => f.root === 'config');
  if (config.length) await fs.mkdir(to, { recursive: true, mode: 0o755 });
  for (const f of config) {
    const parts = f.path.split('/');
    await mkdirNoFollow(to, parts.slice(0, -1));
    const dest = path.join(to, ...parts);
    // Checked again at the last moment; rename replaces a link itself, never what it points to.
    const st = await fs.lstat(dest).catch(() => null);
    if (st && (!force || st.isDirectory())) throw new CouchtroveError(`configuration directory: ${dest} ${st.isDirectory() ? 'is a directory' : 'already exists; use --force to replace it'}`);
    await fs.rename(path.join(from, ...parts), dest);
    if (owner) await fs.lchown(dest, owner.uid, owner.gid);
  }
  if (config.length) await syncDir(to);
  return config.length;
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
