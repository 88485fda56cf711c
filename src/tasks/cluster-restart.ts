// A rolling restart of a CouchDB cluster (docs/cluster.md, "What survives what"): Trove's cluster action
// {"restart": {}} (trove/cluster/models.py rolling_restart, task RESTARTING_CLUSTER) and `couchtrove cluster
// restart`. One member at a time: the cluster must be whole before a member goes down (every node connected
// to every other), so that with n = 3 at most one copy of any range is ever missing; the member is
// restarted through its own instance.restart task (status REBOOT, then ACTIVE); then the task waits until
// the member is caught up (src/agent/cluster-sync.ts: connected, mem3_sync idle on every node, and every
// shard copy on it as full as the other copies of its range, twice in a row) before the next. Each member
// done is a step, so a control plane restarted meanwhile resumes with the next member.
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentApi, AgentClusterApi, AgentClusterSyncApi, ClusterShardState } from '../agent/protocol.js';
import { now, type Row } from '../state/index.js';
import { agentCall, type ControlPlane } from './control.js';
import { clusterMembers, findCluster, memberNode, StopWaiting, until } from './clusters.js';
import { unprocessable } from './errors.js';

type RestartAgent = AgentClusterApi & AgentClusterSyncApi;

function restartAgent(a: AgentApi): RestartAgent {
  const c = a as AgentApi & Partial<RestartAgent>;
  if (!c.clusterMembership || !c.clusterShards) throw new Error('this agent cannot report a cluster catch-up');
  return c as RestartAgent;
}

const RESTART_FAULT = 'restart failed: ';

/** Members that may be restarted: running (a pending configuration restart included). */
const RESTARTABLE = ['ACTIVE', 'RESTART_REQUIRED'];

export async function restartCluster(plane: ControlPlane, projectId: string, ref: string): Promise<Row<'clusters'>> {
  const c = await findCluster(plane, projectId, ref);
  if (c.task_id) await plane.tasks.expireIfOverdue(c.task_id);
  const current = (await plane.store.get('clusters', c.id))!;
  // As Trove's validate_cluster_available: only an idle cluster, or one whose last rolling restart failed
  // (a restart is how to finish it).
  const retry = current.task_name === 'ERROR' && (current.fault?.startsWith(RESTART_FAULT) ?? false);
  if ((current.task_name !== 'NONE' && !retry) || current.task_id !== null) throw unprocessable(`This action cannot be performed on the cluster while the current cluster task is '${current.task_name}'.`);
  for (const m of await clusterMembers(plane, c.id)) {
    if (!RESTARTABLE.includes(m.status) || m.task_id !== null) throw unprocessable(`Cluster ${c.id}: member ${m.name} (${m.id}) is ${m.status}${m.fault ? ` (${m.fault})` : ''}; a rolling restart needs every member running.`);
  }
  const count = (await clusterMembers(plane, c.id)).length;
  const task = await plane.tasks.create({ kind: 'cluster.restart', projectId, params: { clusterId: c.id }, timeout: count * 2 * plane.config.taskTimeout });
  if (!(await plane.store.update('clusters', c.id, { task_name: 'RESTARTING_CLUSTER', task_id: task.id, fault: null, updated: now() }, { task_id: null }))) {
    await plane.tasks.discard(task.id);
    throw unprocessable(`Cluster ${c.id} is busy: try again.`);
  }
  plane.tasks.start(task);
  return (await plane.store.get('clusters', c.id))!;
}

/** How far one member is from the others (docs/cluster.md, "What survives what"). */
export interface CatchUp {
  /** The member is connected to every other member, and every other member to it. */
  connected: boolean;
  /** mem3_sync's backlog on each member (by node). */
  backlog: Record<string, number>;
  /** Shard files of the member with fewer documents (doc_count + doc_del_count) than another copy. */
  behind: Array<{ shard: string; count: number; peer: string; peerCount: number }>;
}

/** The database a shard file belongs to: shards/<range>/<db>.<suffix> (database names hold no dot). */
export function shardDatabase(file: string): string {
  return file.slice(file.indexOf('/', 'shards/'.length) + 1, file.lastIndexOf('.'));
}

/**
 * Compares the member's shard files with the other copies, the others read first: writes made while it
 * was down are on the other copies only, so a copy that is behind cannot look caught up through writes
 * made after the others were read (it can look behind once more through a write in flight, never the reverse).
 */
export function compareCopies(target: ClusterShardState, peers: ClusterShardState[], nodes: string[]): CatchUp {
  const connected = nodes.every((n) => target.allNodes.includes(n)) && peers.every((p) => p.allNodes.includes(target.node));
  const backlog = Object.fromEntries([target, ...peers].map((s) => [s.node, s.backlog]));
  const behind: CatchUp['behind'] = [];
  for (const [shard, count] of Object.entries(target.shards)) {
    let peer = '';
    let peerCount = -1;
    for (const p of peers) {
      const c = p.shards[shard];
      if (c !== undefined && c > peerCount) [peer, peerCount] = [p.node, c];
    }
    if (count < peerCount) behind.push({ shard, count, peer, peerCount });
  }
  return { connected, backlog, behind };
}

/** Caught up: connected, nothing behind, mem3_sync idle on every member. */
export function caughtUp(s: CatchUp): boolean {
  return s.connected && s.behind.length === 0 && Object.values(s.backlog).every((n) => n === 0);
}

function describeCatchUp(node: string, s: CatchUp): string {
  if (!s.connected) return `${node} is not connected to every member`;
  const backlog = Object.entries(s.backlog).filter(([, n]) => n > 0).map(([n, c]) => `${n}: ${c}`);
  const behind = s.behind.slice(0, 3).map((b) => `${b.shard}: ${b.count} of ${b.peerCount}`);
  return [backlog.length ? `internal replication backlog ${backlog.join(', ')}` : '', behind.length ? `behind in ${s.behind.length} shard copies (${behind.join('; ')})` : ''].filter(Boolean).join('; ');
}

export function registerClusterRestartTask(plane: ControlPlane): void {
  const agentOf = async (m: Row<'instances'>): Promise<RestartAgent> => restartAgent(await plane.compute.agent(m));

  /** Every member running, idle and connected to every node: the state a member may be taken down in. */
  const whole = async (clusterId: string): Promise<void> => {
    const members = await clusterMembers(plane, clusterId);
    const nodes = members.map((x) => memberNode(x, plane.compute));
    await until('the cluster is not whole (every member running and connected to every node)', plane.config.taskTimeout * 1000, async () => {
      for (const m of await clusterMembers(plane, clusterId)) {
        if (m.task_id === null && !RESTARTABLE.includes(m.status)) throw new StopWaiting(`member ${m.name} (${m.id}) is ${m.status}: ${m.fault ?? 'no reason given'}`);
        if (m.task_id !== null) return false;
      }
      for (const m of members) {
        const seen = await agentCall((await agentOf(m)).clusterMembership());
        if (!nodes.every((n) => seen.allNodes.includes(n))) return false;
      }
      return true;
    });
  };

  plane.tasks.register<{ clusterId: string }>('cluster.restart', {
    resumable: true,
    run: async (ctx) => {
      const id = ctx.params.clusterId;
      const members = await clusterMembers(plane, id);
      // Steps: restart-<i> once member i's restart was asked for, caught-up-<i> once it is back and caught up.
      const last = /^(restart|caught-up)-(\d+)$/.exec(ctx.resumed ? (ctx.task.step ?? '') : '');
      const first = last ? Number(last[2]) + (last[1] === 'caught-up' ? 1 : 0) : 0;
      let askedAlready = last?.[1] === 'restart';
      for (let i = first; i < members.length; i++, askedAlready = false) {
        const m = members[i]!;
        const node = memberNode(m, plane.compute);
        const t0 = Date.now();
        if (!askedAlready) {
          await whole(id);
          await plane.restartInstance(m.project_id, m.id);
          await ctx.step(`restart-${i}`);
        }
        await until(`member ${m.name} did not come back`, plane.config.taskTimeout * 1000, async () => {
          const row = await plane.store.get('instances', m.id);
          if (!row) throw new StopWaiting(`member ${m.name} (${m.id}) is gone`);
          if (row.task_id !== null) return false;
          if (!RESTARTABLE.includes(row.status)) throw new StopWaiting(`member ${m.name} (${m.id}) is ${row.status} after its restart: ${row.fault ?? 'no reason given'}`);
          return true;
        });
        const back = Date.now();
        const peers = await Promise.all(members.filter((p) => p.id !== m.id).map(agentOf));
        const agent = await agentOf(m);
        const nodes = members.map((x) => memberNode(x, plane.compute));
        let clean = 0;
        let lastState = '';
        let sync: string[] = [];
        await until(`member ${m.name} did not catch up`, plane.config.taskTimeout * 1000, async () => {
          const others: ClusterShardState[] = [];
          for (const p of peers) others.push(await agentCall(p.clusterShards()));
          const s = compareCopies(await agentCall(agent.clusterShards(sync)), others, nodes);
          lastState = describeCatchUp(node, s);
          sync = [...new Set(s.behind.map((b) => shardDatabase(b.shard)))];
          // Twice in a row, a second apart: a push mem3_sync has just started counts in no backlog yet.
          clean = caughtUp(s) ? clean + 1 : 0;
          if (clean === 1) await sleep(1000);
          return clean >= 2;
        }).catch((err: unknown) => {
          throw new Error(`${(err as Error).message}${lastState ? ` (${lastState})` : ''}`);
        });
        await ctx.step(`caught-up-${i}`);
        plane.log(`cluster ${id}: member ${m.name} restarted (${((back - t0) / 1000).toFixed(1)} s) and caught up (${((Date.now() - back) / 1000).toFixed(1)} s)`);
      }
      if (!(await plane.store.update('clusters', id, { task_name: 'NONE', fault: null, task_id: null, updated: now() }, { task_id: ctx.task.id }))) {
        throw new Error(`cluster ${id} is no longer held by task ${ctx.task.id}`);
      }
    },
    failed: async (task, reason) => {
      const { clusterId } = JSON.parse(task.params) as { clusterId: string };
      await plane.store.update('clusters', clusterId, { task_name: 'ERROR', fault: `${RESTART_FAULT}${reason}`, task_id: null, updated: now() }, { task_id: task.id });
    },
  });
}
