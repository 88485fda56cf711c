// What a cluster member knows of its own catch-up (docs/cluster.md, "What survives what"), for a rolling
// restart to wait on (src/tasks/cluster-restart.ts compares the members' answers). All CouchDB's own
// measures, read through this node's HTTP API about this node alone (CouchDB 3.5 answers a node-local
// request for another node's shard file with a function_clause error, so each member reports its own):
// - `_membership`: the nodes it is connected to;
// - mem3_sync's backlog (`/_node/_local/_system` internal_replication_jobs, what CouchDB's fabric_bench
//   waits on before it measures);
// - every shard file it holds with doc_count + doc_del_count (`/_node/_local/shards%2F...`).
// `sync` first asks CouchDB to push every range of those databases now (`POST /{db}/_sync_shards`: each
// copy to every other) rather than at mem3's next pass.
import { AgentError, invalid } from './errors.js';
import { enc } from './couchdb.js';
import type { AgentCore } from './core.js';
import type { ClusterShardState } from './protocol.js';
import { checkDatabaseName } from './validate.js';
import { SYSTEM_DATABASES } from './manage.js';

interface ShardInfo {
  doc_count?: number;
  doc_del_count?: number;
}

export class ClusterSync {
  constructor(private readonly c: AgentCore) {}

  async clusterShards(sync: string[] = []): Promise<ClusterShardState> {
    if (!this.c.requireUsable().settings.cluster) throw new AgentError('CONFLICT', 'this instance is not a cluster member');
    if (!Array.isArray(sync) || sync.length > 10_000) throw invalid('sync must be a list of database names');
    for (const db of sync) if (!SYSTEM_DATABASES.includes(db)) checkDatabaseName(db);
    const couch = this.c.client();
    for (const db of sync) {
      const r = await couch.raw('POST', `/${enc(db)}/_sync_shards`, { body: {} });
      // A database deleted meanwhile has nothing left to push.
      if (r.status !== 202 && r.status !== 404) throw new AgentError('CONFLICT', `POST /${db}/_sync_shards answered ${r.status}: ${JSON.stringify(r.body)}`);
    }
    const m = await couch.json<{ all_nodes: string[]; cluster_nodes: string[] }>('GET', '/_membership');
    const { name } = await couch.json<{ name: string }>('GET', '/_node/_local');
    const sys = await couch.json<{ internal_replication_jobs?: number }>('GET', '/_node/_local/_system');
    const shards: Record<string, number> = {};
    for (const file of await couch.json<string[]>('GET', '/_node/_local/_all_dbs')) {
      if (!file.startsWith('shards/')) continue;
      const r = await couch.raw<ShardInfo>('GET', `/_node/_local/${enc(file)}`);
      // Deleted between the listing and the read.
      if (r.status === 404) continue;
      if (r.status !== 200 || !r.body) throw new AgentError('CONFLICT', `GET /_node/_local/${file} answered ${r.status}`);
      shards[file] = (r.body.doc_count ?? 0) + (r.body.doc_del_count ?? 0);
    }
    return { node: name, allNodes: [...m.all_nodes].sort(), clusterNodes: [...m.cluster_nodes].sort(), backlog: sys.internal_replication_jobs ?? 0, shards };
  }
}
