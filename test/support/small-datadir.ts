// A small data directory shaped like CouchDB's (a node-local database, one shard, .delete/): quick to
// back up where the fixtures' content does not matter.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

export const SMALL_SHARD = 'shards/00000000-7fffffff/db.1700000000.couch';

export async function smallDatadir(dir: string): Promise<string> {
  await fs.mkdir(path.join(dir, path.dirname(SMALL_SHARD)), { recursive: true });
  await fs.mkdir(path.join(dir, '.delete'));
  await fs.writeFile(path.join(dir, '_dbs.couch'), randomBytes(64 << 10));
  await fs.writeFile(path.join(dir, SMALL_SHARD), randomBytes(200 << 10));
  return dir;
}
