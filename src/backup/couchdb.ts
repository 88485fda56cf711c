// What the manifest records about the running server: version, node name, and the set of databases
// with their shard maps when the backup began (a restore brings back exactly that set).
import { CouchtroveError } from '../util/errors.js';
import { mapLimit } from '../util/concurrency.js';
import { dirsOnWay, type CouchdbMetadata, type CouchdbDatabase } from './format.js';
import type { CouchdbSource } from './types.js';

async function getJson(src: CouchdbSource, path: string): Promise<unknown> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (src.username !== undefined) headers.authorization = `Basic ${Buffer.from(`${src.username}:${src.password ?? ''}`).toString('base64')}`;
  const url = new URL(path, src.url.endsWith('/') ? src.url : `${src.url}/`);
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
  } catch (err) {
    throw new CouchtroveError(`cannot reach CouchDB at ${src.url}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
  }
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    throw new CouchtroveError(`CouchDB at ${src.url} answered ${res.status} to GET /${path}${res.status === 401 ? ' (set COUCHDB_USER and COUCHDB_PASSWORD to an admin)' : ''}: ${text.slice(0, 200)}`);
  }
  return res.json();
}


export async function readCouchdbMetadata(src: CouchdbSource): Promise<CouchdbMetadata> {
  const root = (await getJson(src, '')) as { version?: string; uuid?: string };
  if (typeof root.version !== 'string') throw new CouchtroveError(`${src.url} does not look like CouchDB (GET / has no version)`);
  const local = (await getJson(src, '_node/_local')) as { name?: string };
  const node = typeof local.name === 'string' ? local.name : '';
  const names = (await getJson(src, '_all_dbs')) as string[];
  const databases = await mapLimit(names, 8, async (name): Promise<CouchdbDatabase> => {
    const enc = encodeURIComponent(name);
    const info = (await getJson(src, enc)) as { doc_count?: number; doc_del_count?: number; update_seq?: unknown };
    const map = (await getJson(src, `_node/_local/_dbs/${enc}`).catch(() => null)) as Record<string, unknown> | null;
    if (map) delete map._rev;
    return {
      name,
      docCount: info.doc_count ?? 0,
      docDelCount: info.doc_del_count ?? null,
      updateSeq: info.update_seq === undefined ? null : String(info.update_seq),
      shardMap: map,
    };
  });
  return { version: root.version, node, uuid: root.uuid ?? null, databases };
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/**
 * The files a one-database restore needs from a CouchDB 3 data directory: the node-local shard map
 * database (`_dbs.couch`, one small document per database, kept whole so that the map's properties,
 * partitioned and the shard suffix among them, are exactly the backup's) and the databases' shard files
 * (`shards/<range>/<name>.<suffix>.couch`; not their view indexes under `.shards/`). Null when the tree is
 * not laid out so (another engine): then the whole tree is restored.
 */
export function databaseFiles<E extends { path: string; type: string; root: string }>(entries: E[], databases: string[]): E[] | null {
  const data = entries.filter((e) => e.root === 'data');
  if (!data.some((e) => e.type === 'file' && e.path === '_dbs.couch')) return null;
  const shard = new RegExp(`^shards/[0-9a-f]+-[0-9a-f]+/(?:${databases.map(escapeRe).join('|')})\\.[0-9]+\\.couch$`);
  const wanted = new Set(data.filter((e) => e.type === 'file' && (e.path === '_dbs.couch' || shard.test(e.path))).map((e) => e.path));
  // The directories on the way to those files, and nothing else of the tree.
  const dirs = dirsOnWay(wanted);
  return data.filter((e) => (e.type === 'file' ? wanted.has(e.path) : dirs.has(e.path)));
}
