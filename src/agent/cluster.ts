// A cluster member's duties (docs/cluster.md): join the other nodes through the node list (`_nodes`, which
// mem3 spreads to every node it names, as CouchDB's own `_cluster_setup` add_node does), report
// `_membership`, make the system databases once every node is connected, and probe the cluster through this
// node (write one document, read those written through the others). Everything goes through this node's
// CouchDB HTTP API with the agent's admin; clustered requests reach the other nodes over Erlang distribution.
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentError, invalid } from './errors.js';
import { SYSTEM_DATABASES } from './manage.js';
import type { AgentCore } from './core.js';
import type { ClusterMembership, ClusterProbe } from './protocol.js';
import { checkDatabaseName } from './validate.js';

const NODE = /^[A-Za-z0-9_-]+@[A-Za-z0-9_.-]+$/;

export class ClusterMember {
  constructor(private readonly c: AgentCore) {}

  private member(): void {
    if (!this.c.requireUsable().settings.cluster) throw new AgentError('CONFLICT', 'this instance is not a cluster member');
  }

  async clusterMembership(): Promise<ClusterMembership> {
    this.member();
    const couch = this.c.client();
    const m = await couch.json<{ all_nodes: string[]; cluster_nodes: string[] }>('GET', '/_membership');
    const systemDatabases: string[] = [];
    for (const db of SYSTEM_DATABASES) if ((await couch.dbInfo(db).catch(() => null)) !== null) systemDatabases.push(db);
    return { allNodes: [...m.all_nodes].sort(), clusterNodes: [...m.cluster_nodes].sort(), systemDatabases };
  }

  async clusterJoin(nodes: string[]): Promise<ClusterMembership> {
    this.member();
    if (!Array.isArray(nodes) || nodes.length === 0 || nodes.length > 64) throw invalid('nodes must be a list of 1 to 64 node names');
    for (const n of nodes) if (typeof n !== 'string' || !NODE.test(n)) throw invalid(`invalid node name ${JSON.stringify(n)}`);
    const couch = this.c.client();
    const known = new Set((await couch.nodeLocalDocs<{ _id: string }>('_nodes')).map((d) => d._id));
    for (const n of nodes) if (!known.has(n)) await couch.putNodeLocalDoc('_nodes', { _id: n });
    return this.clusterMembership();
  }

  async clusterSetup(): Promise<string[]> {
    this.member();
    const m = await this.clusterMembership();
    const missing = m.clusterNodes.filter((n) => !m.allNodes.includes(n));
    // Made before every node is connected, a system database's shards would all sit on the nodes seen.
    if (missing.length > 0) throw new AgentError('CONFLICT', `not every node is connected yet: ${missing.join(', ')}`);
    const couch = this.c.client();
    const created: string[] = [];
    for (const db of SYSTEM_DATABASES) {
      if ((await couch.dbInfo(db)) === null && (await couch.createDb(db)) === 'created') created.push(db);
    }
    return created;
  }

  /** Reads are retried for a few seconds: a document written through another node with w = majority is there on r = majority. */
  async clusterProbe(p: ClusterProbe): Promise<{ read: number }> {
    this.member();
    checkDatabaseName(p.db);
    const couch = this.c.client();
    if (p.create && (await couch.dbInfo(p.db)) === null) await couch.createDb(p.db);
    // Never created here otherwise: a database made through two nodes at once gets two shard maps.
    for (const until = Date.now() + 15_000; (await couch.dbInfo(p.db)) === null;) {
      if (Date.now() > until) throw new AgentError('CONFLICT', `database ${p.db} is not known to this node`);
      await sleep(200);
    }
    if (p.write !== undefined) {
      const r = await couch.raw('PUT', `/${encodeURIComponent(p.db)}/${encodeURIComponent(p.write)}`, { body: { at: new Date().toISOString() } });
      if (r.status !== 201 && r.status !== 202 && r.status !== 409) throw new AgentError('CONFLICT', `write of ${p.write} to ${p.db} answered ${r.status}: ${JSON.stringify(r.body)}`);
    }
    let read = 0;
    for (const id of p.read ?? []) {
      const until = Date.now() + 10_000;
      for (;;) {
        const r = await couch.raw('GET', `/${encodeURIComponent(p.db)}/${encodeURIComponent(id)}`);
        if (r.status === 200) break;
        if (Date.now() > until) throw new AgentError('CONFLICT', `document ${id} of ${p.db} cannot be read through this node: ${r.status} ${JSON.stringify(r.body)}`);
        await sleep(200);
      }
      read++;
    }
    if (p.drop) await couch.deleteDb(p.db);
    return { read };
  }
}
