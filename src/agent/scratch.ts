// What a `database restore` leaves when its agent dies in the middle (SIGKILL, host crash): a scratch CouchDB
// (and its epmd) still running from <instanceDir>/scratch-*, that directory, and an unverified partial copy in
// the live CouchDB. A restore writes a marker (<instanceDir>/scratch-*.restore.json, root's, 0600) naming the
// database it copies into before it touches that database, and removes it once the copy is verified; the
// agent's start and every new restore clean what a dead agent left: scratch processes stopped, directories
// removed, marked copies deleted. A scratch in use by a restore of this process is never touched.
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { processesUsing } from '../compute/local.js';
import { describeError } from '../util/errors.js';

const SCRATCH = /^scratch-[0-9a-f]{8}$/;
const MARKER = /^(scratch-[0-9a-f]{8})\.restore\.json$/;
/** CouchDB's rule for database names: a marker naming anything else is not acted on. */
const DB_NAME = /^[a-z][a-z0-9_$()+/-]*$/;

/** Scratch directories in use by restores of this process (absolute paths). */
const inUse = new Set<string>();

export interface RestoreMarker {
  /** The live database the restore copies into (deleted when the copy was not verified). */
  database: string;
  started: string;
  /** Shard files placed under the live data directory for it (place-db.ts), perhaps before any shard map names them. */
  files?: string[];
}

export const markerFile = (scratchDir: string): string => `${scratchDir}.restore.json`;

/** Claims a new scratch directory for this process's restore; release() when it is removed. */
export function claimScratch(scratchDir: string): { release: () => void } {
  inUse.add(path.resolve(scratchDir));
  return { release: () => inUse.delete(path.resolve(scratchDir)) };
}

/** Records, before the live database is deleted or created, that it holds an unverified copy until cleared. */
export async function markCopy(scratchDir: string, database: string, files?: string[]): Promise<void> {
  const body: RestoreMarker = { database, started: new Date().toISOString(), ...(files ? { files } : {}) };
  // Created afresh (a leftover of the same name is removed first), never followed through a link.
  await fsp.rm(markerFile(scratchDir), { force: true });
  const fh = await fsp.open(markerFile(scratchDir), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(body)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The copy is verified: the marker goes. */
export async function clearMark(scratchDir: string): Promise<void> {
  await fsp.rm(markerFile(scratchDir), { force: true });
}

async function readMarker(file: string): Promise<RestoreMarker | null> {
  try {
    const fh = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const v = JSON.parse(await fh.readFile('utf8')) as Partial<RestoreMarker>;
      const files = Array.isArray(v.files) ? v.files.filter((f): f is string => typeof f === 'string' && path.isAbsolute(f) && f.endsWith('.couch')) : [];
      return typeof v.database === 'string' && DB_NAME.test(v.database) ? { database: v.database, started: String(v.started), files } : null;
    } finally {
      await fh.close();
    }
  } catch {
    return null;
  }
}

/** Stops every process started from the scratch directory (CouchDB, its children, its epmd), SIGKILL after `graceMs`. */
export async function stopScratchProcesses(scratchDir: string, graceMs = 5000): Promise<number[]> {
  // Found by the directory in their command line or environment (CouchDB's ini files, HOME; epmd
  // inherits them): never by a pid a file names, which whoever can write the directory could forge.
  const pids = processesUsing(scratchDir);
  const signal = (sig: NodeJS.Signals): void => {
    for (const pid of processesUsing(scratchDir)) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone already
      }
    }
  };
  if (pids.length === 0) return [];
  signal('SIGTERM');
  const until = Date.now() + graceMs;
  while (processesUsing(scratchDir).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  signal('SIGKILL');
  const hard = Date.now() + 5000;
  while (processesUsing(scratchDir).length > 0 && Date.now() < hard) await new Promise((r) => setTimeout(r, 50));
  return pids;
}

const REMOVING = /^\.removing-/;

/**
 * Removes a scratch tree, which the instance's uid owns, without racing that uid: the tree is first moved
 * into a new directory only root can enter (mkdtemp: 0700, in the root-owned instance directory), so no
 * link can be swapped in while root walks it.
 */
export async function removeScratchDir(dir: string): Promise<void> {
  const trash = await fsp.mkdtemp(path.join(path.dirname(dir), '.removing-'));
  try {
    await fsp.rename(dir, path.join(trash, path.basename(dir)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      await fsp.rm(trash, { recursive: true, force: true });
      throw err;
    }
  }
  await fsp.rm(trash, { recursive: true, force: true });
}

export interface CleanResult {
  /** Scratch directories stopped and removed. */
  scratches: string[];
  /** Live databases deleted as unverified partial copies. */
  deleted: string[];
  /** Markers kept because their database could not be deleted now (CouchDB down): tried again next time. */
  kept: string[];
}

/**
 * Cleans what dead restores left under instanceDir. `deleteDb` removes a live database (a missing one is
 * not an error) and the shard files the restore had placed for it; when it fails (CouchDB not up yet) the
 * marker stays for the next clean.
 */
export async function cleanScratches(instanceDir: string, deleteDb: (name: string, files: string[]) => Promise<void>, log: (m: string) => void): Promise<CleanResult> {
  const out: CleanResult = { scratches: [], deleted: [], kept: [] };
  let names: string[];
  try {
    names = await fsp.readdir(instanceDir);
  } catch {
    return out;
  }
  for (const name of names.filter((n) => SCRATCH.test(n))) {
    const dir = path.resolve(instanceDir, name);
    if (inUse.has(dir)) continue;
    const stopped = await stopScratchProcesses(dir);
    await removeScratchDir(dir);
    out.scratches.push(name);
    log(`database restore: removed the scratch ${name} a stopped agent left${stopped.length ? ` (stopped pids ${stopped.join(', ')})` : ''}`);
  }
  // A removal a dead agent did not finish (root's directory: nothing to race).
  for (const name of names.filter((n) => REMOVING.test(n))) await fsp.rm(path.join(instanceDir, name), { recursive: true, force: true });
  for (const name of names) {
    const m = MARKER.exec(name);
    if (!m || inUse.has(path.resolve(instanceDir, m[1]!))) continue;
    const file = path.join(instanceDir, name);
    const marker = await readMarker(file);
    if (marker) {
      try {
        await deleteDb(marker.database, marker.files ?? []);
        out.deleted.push(marker.database);
        log(`database restore: deleted ${marker.database}, an unverified partial copy of a restore started ${marker.started} that did not finish`);
      } catch (err) {
        out.kept.push(marker.database);
        log(`database restore: the partial copy ${marker.database} is not deleted yet (${describeError(err)}); tried again later`);
        continue;
      }
    }
    await fsp.rm(file, { force: true });
  }
  return out;
}
