// Growing and shrinking a CouchDB cluster (Trove's `cluster grow` / `cluster shrink`; docs/cluster.md, "Grow
// and shrink"). A new member is made like the others and joins through the node list; shard copies then
// move with CouchDB's own mechanisms (the documented "moving a shard" procedure): the target node goes into
// maintenance mode, the shard maps (`_dbs`) name it for the ranges it takes, internal replication fills its
// copies (`_sync_shards`), it leaves maintenance mode, and only once it holds at least what the source
// copy holds does the map drop the source copy (and the source node its file). Shrinking moves every copy
// off the leaving nodes this way first, then takes them off the node list and deletes them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { AgentResizeApi, ResizeAnswer, ShardMap, ResizeRequest } from '../agent/protocol.js';
import { now, type Row } from '../state/index.js';
import { agentCall, type ControlPlane } from './control.js';
import { CLUSTER_SIZE, clusterAgent, clusterMembers, findCluster, memberNode, membersBuilt, StopWaiting, until } from './clusters.js';
import { badRequest, unprocessable } from './errors.js';
import type { TaskContext } from './manager.js';

/** One shard copy to make on `to`; `from` (when set) is the copy it replaces. */
export interface ShardMove {
  db: string;
  range: string;
  from: string | null;
  to: string;
}

const loads = (m: ShardMap, nodes: string[]): Map<string, number> => {
  const load = new Map(nodes.map((n) => [n, 0] as [string, number]));
  for (const holders of Object.values(m.byRange)) for (const n of holders) if (load.has(n)) load.set(n, load.get(n)! + 1);
  return load;
};

/**
 * The copies that move onto the new nodes `fresh` so that every node of `nodes` holds as many copies of
 * the database as any other, give or take one: each from the most loaded node that holds a range the new
 * node lacks. A range keeps its number of copies, each on a distinct node.
 */
export function planGrow(m: ShardMap, nodes: string[], fresh: string[]): ShardMove[] {
  const byRange = structuredClone(m.byRange);
  const load = loads(m, nodes);
  const moves: ShardMove[] = [];
  for (;;) {
    const to = [...fresh].sort((a, b) => load.get(a)! - load.get(b)!)[0];
    if (to === undefined) return moves;
    const donors = nodes.filter((n) => !fresh.includes(n)).sort((a, b) => load.get(b)! - load.get(a)!);
    let moved = false;
    for (const from of donors) {
      if (load.get(from)! - load.get(to)! <= 1) break;
      const range = Object.keys(byRange).sort().find((r) => byRange[r]!.includes(from) && !byRange[r]!.includes(to));
      if (!range) continue;
      byRange[range] = byRange[range]!.map((n) => (n === from ? to : n));
      load.set(from, load.get(from)! - 1);
      load.set(to, load.get(to)! + 1);
      moves.push({ db: m.db, range, from, to });
      moved = true;
      break;
    }
    if (!moved) return moves;
  }
}

/**
 * Where each copy held by a leaving node goes: to the least loaded remaining node that holds no copy of
 * that range. Throws (naming the database) when the remaining nodes cannot hold a range's copies apart.
 */
export function planShrink(m: ShardMap, remaining: string[], leaving: string[]): ShardMove[] {
  const byRange = structuredClone(m.byRange);
  const load = loads(m, remaining);
  const moves: ShardMove[] = [];
  for (const range of Object.keys(byRange).sort()) {
    for (const from of leaving) {
      if (!byRange[range]!.includes(from)) continue;
      const to = remaining.filter((n) => !byRange[range]!.includes(n)).sort((a, b) => load.get(a)! - load.get(b)!)[0];
      if (to === undefined) throw new Error(`database ${m.db} keeps ${byRange[range]!.length} copies of range ${range}, each on its own node, and only ${remaining.length} members would remain`);
      byRange[range] = byRange[range]!.map((n) => (n === from ? to : n));
      load.set(to, load.get(to)! + 1);
      moves.push({ db: m.db, range, from, to });
    }
  }
  return moves;
}

function resizeAgent(a: unknown): AgentResizeApi {
  const s = a as Partial<AgentResizeApi>;
  if (!s.clusterResize) throw new Error('this agent cannot move shards');
  return s as AgentResizeApi;
}

async function shards(plane: ControlPlane, m: Row<'instances'>, req: ResizeRequest): Promise<ResizeAnswer> {
  return agentCall(resizeAgent(await plane.compute.agent(m)).clusterResize(req));
}

/** Claims a cluster whose task is NONE for a resize task, or refuses (422) naming what it is doing. */
async function claim(plane: ControlPlane, c: Row<'clusters'>, kind: 'cluster.grow' | 'cluster.shrink', params: unknown): Promise<Row<'tasks'>> {
  if (c.task_name !== 'NONE' || c.task_id !== null) throw unprocessable(`Cluster ${c.id} is not ready: its task is ${c.task_name} (grow and shrink need task NONE).`);
  const task = await plane.tasks.create({ kind, projectId: c.project_id, params, timeout: plane.config.couchdb.usageTimeout + plane.config.taskTimeout + 600 });
  const name = kind === 'cluster.grow' ? 'GROWING_CLUSTER' : 'SHRINKING_CLUSTER';
  if (!(await plane.store.update('clusters', c.id, { task_name: name, task_id: task.id, fault: null, updated: now() }, { task_id: null }))) {
    await plane.tasks.discard(task.id);
    throw unprocessable(`Cluster ${c.id} is busy: try again.`);
  }
  return task;
}

async function requireAllActive(c: Row<'clusters'>, members: Row<'instances'>[]): Promise<void> {
  for (const m of members) {
    if (m.status !== 'ACTIVE') throw unprocessable(`Cluster ${c.id}: member ${m.name} (${m.id}) is ${m.status}; shard copies move between every member, so all must be ACTIVE.`);
  }
}

export async function growCluster(plane: ControlPlane, projectId: string, ref: string, instances: Array<{ flavorRef: string; volumeSize: number | null }>): Promise<Row<'clusters'>> {
  const c = await findCluster(plane, projectId, ref);
  const members = await clusterMembers(plane, c.id);
  if (instances.length === 0) throw badRequest('"grow" names no instance to add.');
  if (members.length + instances.length > CLUSTER_SIZE.max) throw badRequest(`A cluster has at most ${CLUSTER_SIZE.max} members: ${c.name} has ${members.length}, ${instances.length} more asked.`);
  const first = members[0];
  if (!first) throw unprocessable(`Cluster ${c.id} has no members.`);
  // Shards are spread evenly, so a new member is the size of the others.
  for (const [i, m] of instances.entries()) {
    const flavor = await plane.flavor(m.flavorRef);
    const size = m.volumeSize ?? first.volume_size;
    if (flavor.id !== first.flavor_id || size !== first.volume_size) {
      throw badRequest(`"grow"[${i}]: a new member has the flavor and volume size of the others (${first.flavor_id}, ${first.volume_size ?? 'no'} GB).`);
    }
  }
  await requireAllActive(c, members);
  const used = members.map((m) => Number(/-member-(\d+)$/.exec(m.name)?.[1] ?? 0));
  const next = Math.max(members.length, ...used) + 1;
  const task = await claim(plane, c, 'cluster.grow', { clusterId: c.id });
  try {
    for (let i = 0; i < instances.length; i++) {
      await plane.createInstance(projectId, {
        name: `${c.name}-member-${next + i}`, flavorRef: first.flavor_id, volumeSize: first.volume_size, datastoreVersion: c.datastore_version,
        databases: [], users: [], backupRef: null, replicaOf: null, configurationId: null, cluster: { id: c.id, epmdPort: c.epmd_port },
      });
    }
  } catch (err) {
    // A member already made stays in the cluster (shrink or delete removes it); the cluster says why.
    await plane.tasks.discard(task.id);
    await plane.store.update('clusters', c.id, { task_name: 'ERROR', fault: `grow failed: ${err instanceof Error ? err.message : String(err)}`, task_id: null, updated: now() }, { task_id: task.id });
    throw err;
  }
  plane.tasks.start(task);
  return (await plane.store.get('clusters', c.id))!;
}

/** The pid of the cluster's epmd and the environment it was started with (the member whose CouchDB started it). */
function epmdOf(epmdPort: number): string | null {
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim() !== 'epmd') continue;
      const env = fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
      if (env.includes(`ERL_EPMD_PORT=${epmdPort}`)) return env.join('\n');
    } catch {
      // gone, or not ours to read
    }
  }
  return null;
}

export async function shrinkCluster(plane: ControlPlane, projectId: string, ref: string, ids: string[]): Promise<Row<'clusters'>> {
  const c = await findCluster(plane, projectId, ref);
  const members = await clusterMembers(plane, c.id);
  if (ids.length === 0) throw badRequest('"shrink" names no instance to remove.');
  if (new Set(ids).size !== ids.length) throw badRequest('"shrink" names an instance twice.');
  const leaving: Row<'instances'>[] = [];
  for (const id of ids) {
    const m = members.find((x) => x.id === id || x.name === id);
    if (!m) throw badRequest(`Instance ${id} is not a member of cluster ${c.name} (${c.id}).`);
    leaving.push(m);
  }
  const remaining = members.filter((m) => !leaving.includes(m));
  if (remaining.length < CLUSTER_SIZE.min) throw badRequest(`A cluster keeps at least ${CLUSTER_SIZE.min} members: shrinking ${c.name} from ${members.length} by ${leaving.length} would leave ${remaining.length}.`);
  if (remaining.length < c.n) throw badRequest(`Cannot shrink cluster ${c.name} to ${remaining.length} members: it keeps n = ${c.n} copies of every shard range, each on its own node, so at least ${c.n} members must remain.`);
  await requireAllActive(c, members);
  // Every database's own copies too (a client may have created one with ?n=).
  const maps = (await shards(plane, remaining[0]!, { op: 'maps' })).maps ?? [];
  const nodes = remaining.map((x) => memberNode(x, plane.compute));
  for (const m of maps) {
    try {
      planShrink(m, nodes, leaving.map((x) => memberNode(x, plane.compute)));
    } catch (err) {
      throw badRequest(`Cannot shrink cluster ${c.name} to ${remaining.length} members: ${(err as Error).message}.`);
    }
  }
  // The cluster's epmd goes with the uid of the member whose CouchDB started it (docs/cluster.md).
  const epmd = plane.compute.name === 'local' ? epmdOf(c.epmd_port) : null;
  const holder = epmd === null ? undefined : leaving.find((m) => m.instance_dir && epmd.includes(path.join(m.instance_dir, path.sep)));
  if (holder) throw badRequest(`Member ${holder.name} (${holder.id}) runs the cluster's Erlang port mapper (epmd), which the other members need to reach each other: it cannot leave the cluster (docs/cluster.md).`);
  const task = await claim(plane, c, 'cluster.shrink', { clusterId: c.id, leaving: leaving.map((m) => m.id) });
  plane.tasks.start(task);
  return (await plane.store.get('clusters', c.id))!;
}

export function registerClusterResizeTasks(plane: ControlPlane): void {
  const finish = async (ctx: TaskContext<{ clusterId: string }>): Promise<void> => {
    if (!(await plane.store.update('clusters', ctx.params.clusterId, { task_name: 'NONE', fault: null, task_id: null, updated: now() }, { task_id: ctx.task.id }))) {
      throw new Error(`cluster ${ctx.params.clusterId} is no longer held by task ${ctx.task.id}`);
    }
  };
  const failed = (what: string) => async (task: Row<'tasks'>, reason: string): Promise<void> => {
    const { clusterId } = JSON.parse(task.params) as { clusterId: string };
    await plane.store.update('clusters', clusterId, { task_name: 'ERROR', fault: `${what} failed: ${reason}`, task_id: null, updated: now() }, { task_id: task.id });
  };

  /** Every member sees exactly `nodes` as the cluster's nodes, connected. */
  const membershipIs = async (members: Row<'instances'>[], nodes: string[]): Promise<void> => {
    const want = [...nodes].sort().join(',');
    await until('not every member sees the new node list in _membership', 120_000, async () => {
      for (const m of members) {
        const s = await agentCall(clusterAgent(await plane.compute.agent(m)).clusterMembership());
        if (s.clusterNodes.join(',') !== want || !nodes.every((n) => s.allNodes.includes(n))) return false;
      }
      return true;
    });
  };

  /**
   * Makes the copies of `moves` (all onto one node) as CouchDB's moving-a-shard procedure does, then
   * drops the copies they replace: from the map, and from the source node's disk unless it is leaving.
   */
  const moveOnto = async (ctx: TaskContext<unknown>, byNode: Map<string, Row<'instances'>>, target: Row<'instances'>, moves: ShardMove[], leaving: Set<string>): Promise<void> => {
    const holders = async (db: string): Promise<Map<string, Record<string, number | null>>> => {
      const out = new Map<string, Record<string, number | null>>();
      for (const m of byNode.values()) {
        const a = await shards(plane, m, { op: 'copies', db }).catch(() => null);
        if (a?.copies) out.set(a.node, a.copies);
      }
      return out;
    };
    const dbs = [...new Set(moves.map((m) => m.db))];
    // Held out of interactive requests while its copies are empty or partial (fabric asks the others).
    await shards(plane, target, { op: 'maintenance', on: true });
    try {
      for (const db of dbs) {
        const mine = moves.filter((m) => m.db === db);
        // What the target must hold at least: the most any copy of the range held when it was added.
        const before = await holders(db);
        const want = new Map(mine.map((m) => [m.range, Math.max(0, ...[...before.values()].map((c) => c[m.range] ?? 0))]));
        await shards(plane, target, { op: 'place', db, add: mine.map((m) => [m.range, m.to]), remove: [] });
        let synced = 0;
        await until(`the new copies of ${db} on ${memberNode(target, plane.compute)} were not filled by internal replication`, plane.config.taskTimeout * 1000, async () => {
          if (Date.now() - synced > 5000) {
            await shards(plane, target, { op: 'sync', db });
            synced = Date.now();
          }
          const have = (await shards(plane, target, { op: 'copies', db })).copies ?? {};
          return mine.every((m) => (have[m.range] ?? -1) >= want.get(m.range)!);
        });
        await ctx.heartbeat();
      }
    } finally {
      await shards(plane, target, { op: 'maintenance', on: false });
    }
    // The source copy goes only once the target holds at least what it holds now (written meanwhile too).
    for (const db of dbs) {
      const replaced = moves.filter((m) => m.db === db && m.from !== null);
      if (replaced.length === 0) continue;
      let synced = 0;
      await until(`the new copies of ${db} on ${memberNode(target, plane.compute)} did not catch up with the copies they replace`, plane.config.taskTimeout * 1000, async () => {
        if (Date.now() - synced > 5000) {
          await shards(plane, target, { op: 'sync', db });
          synced = Date.now();
        }
        const now = await holders(db);
        const have = now.get(memberNode(target, plane.compute)) ?? {};
        return replaced.every((m) => (have[m.range] ?? -1) >= (now.get(m.from!)?.[m.range] ?? 0));
      });
      await shards(plane, target, { op: 'place', db, add: [], remove: replaced.map((m) => [m.range, m.from!]) });
      for (const m of replaced) {
        const source = byNode.get(m.from!);
        if (!source || leaving.has(m.from!)) continue;
        // Once the source node's own copy of the map no longer names it there (mem3 spreads _dbs).
        await until(`the replaced copy of ${db} ${m.range} on ${m.from} was not dropped`, 60_000, async () => (await shards(plane, source, { op: 'drop', db, range: m.range })).node === m.from);
      }
    }
  };

  const moveAll = async (ctx: TaskContext<unknown>, members: Row<'instances'>[], moves: ShardMove[], leaving: Set<string>): Promise<number> => {
    const byNode = new Map(members.map((m) => [memberNode(m, plane.compute), m]));
    // One target at a time: at most one copy of any range is held out of requests.
    for (const to of [...new Set(moves.map((m) => m.to))]) await moveOnto(ctx, byNode, byNode.get(to)!, moves.filter((m) => m.to === to), leaving);
    return moves.length;
  };

  /** A resumed task first ends a maintenance mode its interrupted run left (not persisted, but the node may still run). */
  const noMaintenance = async (members: Row<'instances'>[]): Promise<void> => {
    for (const m of members) await shards(plane, m, { op: 'maintenance', on: false }).catch(() => undefined);
  };

  plane.tasks.register<{ clusterId: string }>('cluster.grow', {
    resumable: true,
    run: async (ctx) => {
      const id = ctx.params.clusterId;
      const members = await membersBuilt(plane, id, 'the new members did not finish building');
      await ctx.step('members');
      if (ctx.resumed) await noMaintenance(members);
      const nodes = members.map((x) => memberNode(x, plane.compute));
      // The node list of an existing member names the new nodes; mem3 gives them _nodes and _dbs.
      await agentCall(clusterAgent(await plane.compute.agent(members[0]!)).clusterJoin(nodes));
      await membershipIs(members, nodes);
      const coordinator = members[0]!;
      const maps = (await shards(plane, coordinator, { op: 'maps' })).maps ?? [];
      // New nodes: those holding no copy yet (on a resume, also those that got some already).
      const holding = new Set(maps.flatMap((m) => Object.values(m.byRange).flat()));
      const fresh = nodes.filter((n) => !holding.has(n));
      await until('the new members cannot open the system databases', 60_000, async () => {
        for (const m of members) if ((await agentCall(clusterAgent(await plane.compute.agent(m)).clusterMembership())).systemDatabases.length < 2) return false;
        return true;
      });
      // Root (each node's own [admins]) as on the others: the hash read from member 1 by the new member's CouchDB.
      for (const m of members) if (fresh.includes(memberNode(m, plane.compute))) await shards(plane, m, { op: 'adoptRoot', from: memberNode(coordinator, plane.compute) });
      await ctx.step('joined');
      const moves = fresh.length === 0 ? [] : maps.flatMap((m) => planGrow(m, nodes, fresh));
      const moved = await moveAll(ctx, members, moves, new Set());
      await finish(ctx);
      plane.log(`cluster ${id}: grown to ${members.length} members; ${moved} shard copies moved onto ${fresh.join(', ') || 'no new node'}`);
    },
    failed: failed('grow'),
  });

  plane.tasks.register<{ clusterId: string; leaving: string[] }>('cluster.shrink', {
    resumable: true,
    run: async (ctx) => {
      const id = ctx.params.clusterId;
      const members = await clusterMembers(plane, id);
      const leaving = members.filter((m) => ctx.params.leaving.includes(m.id));
      const remaining = members.filter((m) => !ctx.params.leaving.includes(m.id));
      const leavingNodes = leaving.map((x) => memberNode(x, plane.compute));
      if (ctx.resumed) await noMaintenance(members);
      const maps = (await shards(plane, remaining[0]!, { op: 'maps' })).maps ?? [];
      const moves = maps.flatMap((m) => planShrink(m, remaining.map((x) => memberNode(x, plane.compute)), leavingNodes));
      const moved = await moveAll(ctx, members, moves, new Set(leavingNodes));
      await ctx.step('moved');
      // No copy is left on the leaving nodes (in every remaining node's map): off the node list, then deleted.
      await until('the leaving nodes still hold copies in a remaining member\'s shard maps', 60_000, async () => {
        for (const m of remaining) {
          const left = ((await shards(plane, m, { op: 'maps' })).maps ?? []).some((x) => Object.values(x.byRange).some((ns) => ns.some((n) => leavingNodes.includes(n))));
          if (left) return false;
        }
        return true;
      });
      for (const n of leavingNodes) await shards(plane, remaining[0]!, { op: 'forget', node: n });
      await membershipIs(remaining, remaining.map((x) => memberNode(x, plane.compute)));
      await ctx.step('forgotten');
      for (const m of leaving) await plane.deleteInstance(m.project_id, m.id, { cluster: true });
      await until('the leaving members were not deleted', plane.config.taskTimeout * 1000, async () => {
        const left = (await clusterMembers(plane, id)).filter((m) => ctx.params.leaving.includes(m.id));
        const stuck = left.find((m) => m.task_id === null && m.fault?.startsWith('delete failed: '));
        if (stuck) throw new StopWaiting(`member ${stuck.name} (${stuck.id}): ${stuck.fault}`);
        return left.length === 0;
      });
      await finish(ctx);
      plane.log(`cluster ${id}: shrunk to ${remaining.length} members; ${moved} shard copies moved off ${leavingNodes.join(', ')}`);
    },
    failed: failed('shrink'),
  });
}
