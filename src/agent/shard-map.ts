// A database's shard map (a document of the node-local `_dbs`, mem3's) as CouchDB itself writes one. A
// tenant may be CouchDB's admin and write anything there, so a map is used only when its database name,
// node names, suffix and ranges are what CouchDB writes (the ranges cover the hash space once, without
// overlap); used by cluster backups, shard moves (cluster-resize.ts) and one database placed back (place-db.ts).
import { AgentError } from './errors.js';
import type { ShardMapDoc } from './couchdb.js';
import type { ShardMapRecord } from './protocol.js';
import { DATABASE_NAME_RE } from './validate.js';
import { SYSTEM_DATABASES } from './manage.js';

export const RANGE = /^([0-9a-f]{8})-([0-9a-f]{8})$/;
export const NODE = /^[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+$/;
const SUFFIX = /^\.[0-9]{1,20}$/;

const isDbName = (x: unknown): x is string => typeof x === 'string' && x.length <= 238 && (SYSTEM_DATABASES.includes(x) || DATABASE_NAME_RE.test(x));

/** The shard files' suffix (".1733581234"): `shard_suffix` holds its characters' codes. */
export const suffixOf = (m: Pick<ShardMapRecord, 'shard_suffix'>): string => String.fromCharCode(...m.shard_suffix);
export const suffixCodes = (suffix: string): number[] => [...suffix].map((c) => c.charCodeAt(0));

/** The shard of `range` of the map's database as CouchDB names it (`/_node/_local/<shard>` opens it). */
export function shardName(m: Pick<ShardMapRecord, '_id' | 'shard_suffix'>, range: string): string {
  return `shards/${range}/${m._id}${suffixOf(m)}`;
}

/** Its file, under the data directory. */
export const shardFile = (m: Pick<ShardMapRecord, '_id' | 'shard_suffix'>, range: string): string => `${shardName(m, range)}.couch`;

/** A map as CouchDB writes one, normalised; an error naming what is wrong otherwise. */
export function checkShardMap(doc: ShardMapDoc): ShardMapRecord {
  const bad = (why: string): AgentError => new AgentError('CONFLICT', `the shard map of ${JSON.stringify(String(doc._id).slice(0, 80))} is not usable: ${why}`);
  if (!isDbName(doc._id)) throw bad('not a database name');
  const s = doc.shard_suffix;
  if (!Array.isArray(s) || !s.every((c) => Number.isInteger(c)) || !SUFFIX.test(String.fromCharCode(...(s as number[])))) throw bad('no valid shard_suffix');
  const r = doc.by_range;
  if (!r || typeof r !== 'object' || Array.isArray(r)) throw bad('no by_range');
  const ranges = Object.keys(r).sort();
  if (ranges.length === 0 || ranges.length > 4096) throw bad(`${ranges.length} ranges`);
  // The ranges cover the hash space 00000000-ffffffff once: sorted, each begins where the last ended.
  let next = 0;
  for (const k of ranges) {
    const m = RANGE.exec(k);
    const nodes = (r as Record<string, unknown>)[k];
    if (!m || parseInt(m[1]!, 16) !== next || parseInt(m[2]!, 16) < next) throw bad(`range ${JSON.stringify(k.slice(0, 40))} does not continue the ranges before it`);
    if (!Array.isArray(nodes) || nodes.length === 0 || nodes.length > 64 || !nodes.every((n) => typeof n === 'string' && NODE.test(n))) throw bad(`range ${k} names no valid nodes`);
    next = parseInt(m[2]!, 16) + 1;
  }
  if (next !== 0x1_0000_0000) throw bad('the ranges do not reach ffffffff');
  const byRange = Object.fromEntries(ranges.map((k) => [k, [...(r as Record<string, string[]>)[k]!]]));
  const out: ShardMapRecord = { _id: doc._id, by_range: byRange, by_node: byNodeOf(byRange), changelog: [], shard_suffix: [...(s as number[])] };
  if ((doc.props as { partitioned?: unknown } | undefined)?.partitioned === true) out.props = { partitioned: true };
  return out;
}

export function byNodeOf(byRange: Record<string, string[]>): Record<string, string[]> {
  const byNode: Record<string, string[]> = {};
  for (const [range, nodes] of Object.entries(byRange)) for (const n of nodes) (byNode[n] ??= []).push(range);
  for (const ranges of Object.values(byNode)) ranges.sort();
  return byNode;
}

/** The maps rewritten for `nodes`: each range on min(3, nodes) of them, spread as CouchDB spreads new databases. */
export function placeMaps(maps: ShardMapRecord[], nodes: string[]): ShardMapRecord[] {
  const n = Math.min(3, nodes.length);
  return maps.map((m, i) => {
    const byRange: Record<string, string[]> = {};
    const changelog: unknown[] = [];
    for (const [j, range] of Object.keys(m.by_range).sort().entries()) {
      byRange[range] = Array.from({ length: n }, (_, k) => nodes[(i + j + k) % nodes.length]!).sort();
      for (const node of byRange[range]) changelog.push(['add', range, node]);
    }
    return { ...m, by_range: byRange, by_node: byNodeOf(byRange), changelog };
  });
}
