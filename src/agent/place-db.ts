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
import { enc, type CouchClient, type ShardMapDoc } from './couchdb.js';
import type { ShardMapRecord } from './protocol.js';
import { checkShardMap, shardFile, suffixCodes } from './shard-map.js';
import { DATABASE_NAME_RE } from './validate.js';

const run = promisify(execFile);

export interface Placement {
  /** The scratch's shard map of the database, checked, and its shard files, by range. */
  map: ShardMapRecord;
  files: Array<{ range: string; file: string }>;
}

/**
 * The database's shard files in the scratch server's data directory, when its shard map is one CouchDB
 * writes (shard-map.ts: the backup is the tenant's data) and every file it names is a plain file there;
 * null when the database cannot be placed (no shard map: the development engine).
 */
export async function findPlacement(scratch: CouchClient, scratchData: string, db: string): Promise<Placement | null> {
  const r = await scratch.raw<ShardMapDoc>('GET', `/_node/_local/_dbs/${enc(db)}`);
  if (r.status !== 200 || !r.body) return null;
  let map: ShardMapRecord;
  try {
    map = checkShardMap(r.body);
  } catch {
    return null;
  }
  const files: Placement['files'] = [];
  for (const range of Object.keys(map.by_range)) {
    const file = path.join(scratchData, shardFile(map, range));
    const st = await fsp.lstat(file).catch(() => null);
    if (!st?.isFile()) return null;
    files.push({ range, file });
  }
  return { map, files };
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
  // CouchDB's names hold no `.`: one never climbs out of `shards/<range>/` (a `/` makes a directory).
  if (!DATABASE_NAME_RE.test(as)) throw invalid(`${JSON.stringify(as)} is not a CouchDB database name`);
  let suffix = `.${Math.floor(Date.now() / 1000)}`;
  if (suffix === notSuffix) suffix = `.${Math.floor(Date.now() / 1000) + 1}`;
  const opts = { timeout: 600_000, ...(runAs ?? {}) };
  const files: string[] = [];
  for (const f of p.files) {
    const to = path.join(dataDir, shardFile({ _id: as, shard_suffix: suffixCodes(suffix) }, f.range));
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

/** Removes placed files a failed or killed restore left, as the instance's uid (never root in the tenant's tree). */
export async function removePlaced(files: string[], runAs: { uid: number; gid: number } | undefined): Promise<void> {
  if (files.length > 0) await run('rm', ['-f', '--', ...files], { timeout: 60_000, ...(runAs ?? {}) });
}
