// One database back at the speed of the disk (issue 24, target 1). The scratch CouchDB holds the database's
// shard files exactly as the backup recorded them (every extent checksummed by the restore), so rather than
// copying every document through two CouchDBs' JSON (copy-db.ts, ~7 MB/s on 2 cores), the files are moved
// under the live node with a shard suffix of their own, and a shard map naming them is written to the live
// node's `_dbs`: CouchDB opens them as the database `as`, with every revision tree, attachment, local
// document and `_security` of the file. Only for a single node running Apache CouchDB: the development
// engine's files are not shard files, and a cluster member's ranges have copies on other nodes.
import { execFile } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { AgentError, invalid } from './errors.js';
import { enc, type CouchClient } from './couchdb.js';

const run = promisify(execFile);
const RANGE = /^[0-9a-f]{8}-[0-9a-f]{8}$/;
const SUFFIX = /^\.[0-9]{1,20}$/;
/** CouchDB's database names: no `.`, so a name never climbs out of `shards/<range>/` (a `/` makes a directory). */
const DB_NAME = /^[a-z][a-z0-9_$()+/-]*$/;

/** A database's shard map in `_dbs` (mem3), as much of it as placing needs. */
interface ShardMap {
  shard_suffix: number[];
  by_range: Record<string, string[]>;
  props?: Record<string, unknown>;
}

export interface Placement {
  /** The scratch's shard files of the database, by range. */
  files: Array<{ range: string; file: string }>;
  props: Record<string, unknown>;
}

export const shardFile = (dataDir: string, range: string, db: string, suffix: string): string => path.join(dataDir, 'shards', range, `${db}${suffix}.couch`);

/**
 * The database's shard files in the scratch server's data directory, when the scratch serves them as plain
 * shard files of its own node (read from its shard map; ranges and suffix checked, since the backup is the
 * tenant's data); null when the database cannot be placed (no shard map: the development engine).
 */
export async function findPlacement(scratch: CouchClient, scratchData: string, db: string): Promise<Placement | null> {
  const r = await scratch.raw<ShardMap>('GET', `/_node/_local/_dbs/${enc(db)}`);
  if (r.status !== 200 || !r.body || !Array.isArray(r.body.shard_suffix) || typeof r.body.by_range !== 'object') return null;
  const suffix = String.fromCharCode(...r.body.shard_suffix.filter((c) => Number.isInteger(c)));
  const ranges = Object.keys(r.body.by_range);
  if (!SUFFIX.test(suffix) || ranges.length === 0 || !ranges.every((x) => RANGE.test(x))) return null;
  const files: Placement['files'] = [];
  for (const range of ranges) {
    const file = shardFile(scratchData, range, db, suffix);
    const st = await fsp.lstat(file).catch(() => null);
    if (!st?.isFile()) return null;
    files.push({ range, file });
  }
  const props = r.body.props && typeof r.body.props === 'object' && !Array.isArray(r.body.props) ? r.body.props : {};
  return { files, props };
}

/**
 * Moves the placement's files (the scratch server stopped: nothing has them open) to `as` under the live
 * data directory with a new suffix, as the instance's uid: the live data directory is the tenant's
 * (CouchDB's uid writes it), so nothing here runs there with more than that uid's rights, and no existing
 * file is replaced. Returns the files placed and the suffix; `placed` hears of each one as it lands.
 * The suffix is never the replaced database's (`notSuffix`): the files keep the backup's database uuid, and
 * under a new name CouchDB takes no sequence of the replaced database (a client's `since`, a replication's
 * checkpoint) for theirs, but starts such a changes feed over (restore-database.test.ts).
 */
export async function moveShards(p: Placement, dataDir: string, as: string, runAs: { uid: number; gid: number } | undefined, placed: (file: string) => Promise<void>, notSuffix?: string): Promise<{ suffix: string; files: string[] }> {
  if (!DB_NAME.test(as)) throw invalid(`${JSON.stringify(as)} is not a CouchDB database name`);
  let suffix = `.${Math.floor(Date.now() / 1000)}`;
  if (suffix === notSuffix) suffix = `.${Math.floor(Date.now() / 1000) + 1}`;
  const opts = { timeout: 600_000, ...(runAs ?? {}) };
  const files: string[] = [];
  for (const f of p.files) {
    const to = shardFile(dataDir, f.range, as, suffix);
    // Recorded before the move, so that a restore dying in the middle leaves nothing unnamed.
    await placeFile(f.file, to, dataDir, opts, () => placed(to));
    files.push(to);
  }
  return { suffix, files };
}

/**
 * Moves one file to `to` under the live data directory as `opts`' uid (the tenant's tree: never more than
 * its rights there), never over an existing file; `before` runs once the directory is made.
 */
export async function placeFile(from: string, to: string, dataDir: string, opts: { timeout: number; uid?: number; gid?: number }, before?: () => Promise<void>): Promise<void> {
  await run('mkdir', ['-p', '--', path.dirname(to)], opts);
  await before?.();
  // --no-clobber: a file of that name is never replaced; -T: never into a directory of that name. A copy
  // when the source is on another filesystem (a container's volume), a rename otherwise.
  await run('mv', ['--no-clobber', '-T', '--', from, to], opts);
  const st = await fsp.lstat(to).catch(() => null);
  const left = await fsp.lstat(from).then(() => true, () => false);
  if (!st?.isFile() || left) throw new AgentError('BACKUP_FAILED', `shard file ${path.relative(dataDir, to)} was not placed (a file of that name exists, or the move failed)`);
}

/** The shard map that makes the live node open the placed files as `as`. */
export function shardMapFor(as: string, node: string, ranges: string[], suffix: string, props: Record<string, unknown>): { _id: string; [k: string]: unknown } {
  return {
    _id: as,
    shard_suffix: [...suffix].map((c) => c.charCodeAt(0)),
    changelog: ranges.map((r) => ['add', r, node]),
    by_node: { [node]: ranges },
    by_range: Object.fromEntries(ranges.map((r) => [r, [node]])),
    props,
  };
}

/** Removes placed files a failed or killed restore left, as the instance's uid (never root in the tenant's tree). */
export async function removePlaced(files: string[], runAs: { uid: number; gid: number } | undefined): Promise<void> {
  if (files.length > 0) await run('rm', ['-f', '--', ...files], { timeout: 60_000, ...(runAs ?? {}) });
}
