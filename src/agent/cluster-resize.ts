// Moving shard copies between cluster members (docs/cluster.md, "Grow and shrink"): CouchDB's documented
// "moving a shard" procedure, through this member's own CouchDB. The shard maps are the `_dbs` documents
// (by_node, by_range and a changelog entry per change; mem3 spreads `_dbs` to every node); internal
// replication (`_sync_shards`, mem3_sync's push of every copy to every other copy of its range) fills a new
// copy; maintenance mode keeps a node's copies out of interactive requests while they fill. A tenant may be
// this CouchDB's admin, so what `_dbs` holds is checked before it is used, and a copy is dropped only when
// the map this node sees no longer names it here. A new member also takes root's hash from another member.
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, invalid, notFound } from './errors.js';
import { enc, type ShardMapDoc } from './couchdb.js';
import type { AgentCore } from './core.js';
import type { ResizeAnswer, ShardMap, ResizeRequest, ShardMapRecord } from './protocol.js';
import { byNodeOf, checkShardMap, NODE, RANGE, shardName } from './shard-map.js';

/** Every database's map on this node, each checked (a tenant may write `_dbs`): one that is not usable fails the move, naming it. */
async function allMaps(c: AgentCore): Promise<ShardMapRecord[]> {
  return (await c.client().nodeLocalDocs<ShardMapDoc>('_dbs')).filter((d) => !d._id.startsWith('_design/')).map(checkShardMap);
}

export class ClusterResize {
  constructor(
    private readonly c: AgentCore,
    private readonly adoptRootHash: (hash: string) => Promise<void>,
  ) {}

  async run(req: ResizeRequest): Promise<ResizeAnswer> {
    if (!this.c.requireUsable().settings.cluster) throw new AgentError('CONFLICT', 'this instance is not a cluster member');
    if (!req || typeof req !== 'object') throw invalid('a shard request is an object with "op"');
    const couch = this.c.client();
    const node = await couch.nodeName();
    switch (req.op) {
      case 'maps':
        return { node, maps: (await allMaps(this.c)).map((m) => ({ db: m._id, byRange: m.by_range })) };
      case 'place':
        return { node, maps: [await this.#place(req.db, req.add, req.remove)] };
      case 'copies': {
        const { map } = await this.#map(req.db);
        const copies: Record<string, number | null> = {};
        for (const [range, nodes] of Object.entries(map.by_range)) {
          if (!nodes.includes(node)) continue;
          const r = await couch.raw<{ doc_count?: number; doc_del_count?: number }>('GET', `/_node/_local/${enc(shardName(map, range))}`);
          if (r.status === 404) copies[range] = null;
          else if (r.status === 200 && typeof r.body?.doc_count === 'number') copies[range] = r.body.doc_count + (r.body.doc_del_count ?? 0);
          else throw new AgentError('CONFLICT', `the copy of ${req.db} ${range} here answered ${r.status}`);
        }
        return { node, copies };
      }
      case 'maintenance':
        if (typeof req.on !== 'boolean') throw invalid('"on" must be true or false');
        // Not persisted: a restart ends it, and internal replication fills what the restart interrupted.
        await couch.putConfig('couchdb', 'maintenance_mode', req.on ? 'true' : 'false', false);
        return { node };
      case 'sync':
        await this.#map(req.db);
        await couch.json('POST', `/${enc(req.db)}/_sync_shards`, { body: {} });
        return { node };
      case 'drop': {
        if (typeof req.range !== 'string' || !RANGE.test(req.range)) throw invalid(`invalid shard range ${JSON.stringify(req.range)}`);
        const { map } = await this.#map(req.db);
        if ((map.by_range[req.range] ?? []).includes(node)) throw new AgentError('CONFLICT', `the shard map of ${req.db} still names ${node} for ${req.range} here: its copy stays`);
        const p = `/_node/_local/${enc(shardName(map, req.range))}`;
        const r = await couch.raw('DELETE', p);
        if (r.status !== 200 && r.status !== 202 && r.status !== 404) throw new AgentError('CONFLICT', `dropping the copy of ${req.db} ${req.range} answered ${r.status}`);
        return { node, removed: r.status !== 404 };
      }
      case 'forget': {
        if (typeof req.node !== 'string' || !NODE.test(req.node)) throw invalid(`invalid node name ${JSON.stringify(req.node)}`);
        if (req.node === node) throw invalid('a node does not take itself off the node list');
        for (const m of await allMaps(this.c)) {
          if (Object.values(m.by_range).some((ns) => ns.includes(req.node))) throw new AgentError('CONFLICT', `${req.node} still holds copies of ${m._id}`);
        }
        return { node, removed: await couch.deleteNodeLocalDoc('_nodes', req.node) };
      }
      case 'adoptRoot': {
        if (typeof req.from !== 'string' || !NODE.test(req.from) || req.from === node) throw invalid(`invalid node to take root from: ${JSON.stringify(req.from)}`);
        // Read through this node's CouchDB from the other node's configuration: the hash never leaves CouchDB and the agent.
        const p = `/_node/${enc(req.from)}/_config/admins/root`;
        const r = await couch.raw<string>('GET', p);
        if (r.status === 404) return { node, adopted: false };
        if (r.status !== 200 || typeof r.body !== 'string') throw new AgentError('CONFLICT', `reading root on ${req.from} answered ${r.status}`);
        await this.adoptRootHash(r.body);
        return { node, adopted: true };
      }
      default:
        throw invalid(`unknown cluster resize operation ${JSON.stringify((req as { op?: unknown }).op)}`);
    }
  }

  /** The database's map as stored (to write back, with its _rev and changelog), and checked. */
  async #map(db: unknown): Promise<{ doc: ShardMapDoc; map: ShardMapRecord }> {
    if (typeof db !== 'string' || db === '' || db.length > 256) throw invalid('"db" must be a database name');
    const r = await this.c.client().raw<ShardMapDoc>('GET', `/_node/_local/_dbs/${enc(db)}`);
    if (r.status === 404 || !r.body) throw notFound(`database ${db} has no shard map on this node`);
    if (r.status !== 200) throw new AgentError('CONFLICT', `the shard map of ${db} answered ${r.status}`);
    return { doc: r.body, map: checkShardMap(r.body) };
  }

  /** Adds and removes copies in one map (by_range, by_node, changelog), as the documented procedure edits it. */
  async #place(db: string, add: unknown, remove: unknown): Promise<ShardMap> {
    const pairs = (x: unknown, what: string): Array<[string, string]> => {
      if (!Array.isArray(x) || x.length > 4096) throw invalid(`"${what}" must be a list of [range, node]`);
      return x.map((p) => {
        if (!Array.isArray(p) || p.length !== 2 || typeof p[0] !== 'string' || !RANGE.test(p[0]) || typeof p[1] !== 'string' || !NODE.test(p[1])) throw invalid(`"${what}": invalid [range, node] ${JSON.stringify(p)}`);
        return [p[0], p[1]];
      });
    };
    const adds = pairs(add, 'add');
    const removes = pairs(remove, 'remove');
    const couch = this.c.client();
    const known = new Set((await couch.nodeLocalDocs<{ _id: string }>('_nodes')).map((d) => d._id));
    for (const [, n] of adds) if (!known.has(n)) throw invalid(`${n} is not in the node list: it cannot hold a copy`);
    for (let attempt = 0; ; attempt++) {
      const { doc, map } = await this.#map(db);
      const byRange = structuredClone(map.by_range);
      const changelog = Array.isArray(doc.changelog) ? [...doc.changelog] : [];
      for (const [range, n] of adds) {
        const nodes = byRange[range];
        if (!nodes) throw invalid(`${db} has no shard range ${range}`);
        if (!nodes.includes(n)) {
          nodes.push(n);
          changelog.push(['add', range, n]);
        }
      }
      for (const [range, n] of removes) {
        const nodes = byRange[range];
        if (!nodes?.includes(n)) continue;
        if (nodes.length === 1) throw invalid(`${n} holds the last copy of ${db} ${range}: it is not removed`);
        nodes.splice(nodes.indexOf(n), 1);
        changelog.push(['remove', range, n]);
      }
      for (const nodes of Object.values(byRange)) nodes.sort();
      const r = await couch.raw('PUT', `/_node/_local/_dbs/${enc(db)}`, { body: { ...doc, by_node: byNodeOf(byRange), by_range: byRange, changelog } });
      if (r.status === 201 || r.status === 202) return { db, byRange };
      // Edited meanwhile (mem3 brought another node's change): read it again.
      if (r.status !== 409 || attempt >= 5) throw new AgentError('CONFLICT', `writing the shard map of ${db} answered ${r.status}: ${JSON.stringify(r.body)}`);
      await sleep(100);
    }
  }
}
