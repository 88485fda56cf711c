// Cluster backups (docs/cluster.md, "Cluster backups"): one copy of every shard range, each taken from one
// member that answers, through the same physical engine, repository, keys and manifests as an instance's
// backup. A cluster backup is a backups row (cluster_id set, instance_id null) whose record (the `cluster`
// column) holds the shard maps read before any file was measured and its parts: one ordinary backup per
// member that was given ranges, of those ranges' shard files only, with that member's own key. Restore
// rewrites the maps for the new nodes (n = min(3, nodes)), places each range's file on the nodes its new map
// names before the map is written (mem3 then opens the files rather than creating empty ones), and writes
// the maps through one node (mem3 spreads `_dbs`).
import { createHash, randomUUID } from 'node:crypto';
import type { AgentApi, AgentClusterBackupApi, AgentClusterSyncApi, ClusterShardState, ShardMapRecord, ShardRef } from '../agent/protocol.js';
import { placeMaps, shardFile, shardName } from '../agent/shard-map.js';
import { now, type Row } from '../state/index.js';
import { withTimeout } from '../util/concurrency.js';
import { describeError } from '../util/errors.js';
import { agentCall, type ControlPlane } from './control.js';
import { badRequest, unprocessable } from './errors.js';
import { resolveParent } from './incremental.js';
import { backupTaskId, requestFailure } from './backups.js';
import { clusterMembers, findCluster, memberNode, until } from './clusters.js';

/** One member's part: an ordinary backup of its copies of `shards`. */
export interface ClusterBackupPart {
  id: string;
  instanceId: string;
  node: string;
  location: string;
  checksum: string;
  size: number;
  shards: ShardRef[];
}

export interface ClusterBackupRecord {
  cluster: { id: string; name: string; n: number; q: number; nodes: string[] };
  maps: ShardMapRecord[];
  parts: ClusterBackupPart[];
}

type BackupAgent = AgentApi & AgentClusterBackupApi & AgentClusterSyncApi;

function backupAgent(a: AgentApi): BackupAgent {
  const c = a as AgentApi & Partial<AgentClusterBackupApi & AgentClusterSyncApi>;
  if (!c.clusterBackup || !c.clusterShards) throw new Error('this agent cannot back up a cluster');
  return c as BackupAgent;
}

/** The part of member k (1-based, in member order): an id of its own in the repository. */
const partId = (backupId: string, k: number): string => `${backupId}-part-${k}`;

export function clusterRecord(b: Row<'backups'>): ClusterBackupRecord | null {
  return b.cluster ? (JSON.parse(b.cluster) as ClusterBackupRecord) : null;
}

/** The repository objects of a backup: its own, or a cluster backup's parts. */
export function storedBackups(plane: ControlPlane, b: Row<'backups'>): Array<{ location: string; id: string }> {
  const r = clusterRecord(b);
  if (r) return r.parts.map((p) => ({ location: p.location, id: p.id }));
  return b.cluster_id ? [] : [{ location: b.location ?? plane.config.repository, id: b.id }];
}

export interface CreateClusterBackupRequest {
  name: string;
  clusterRef: string;
  description: string | null;
  /** Incremental: on this cluster backup, or (incremental without it) on the cluster's latest. */
  parentId: string | null;
  incremental: boolean;
  /** A schedule's run: the backup id its slot gives (the task's id then follows from it, as for an instance's). */
  id?: string;
}

export async function createClusterBackup(plane: ControlPlane, projectId: string, req: CreateClusterBackupRequest): Promise<Row<'backups'>> {
  const c = await findCluster(plane, projectId, req.clusterRef);
  if (c.task_name !== 'NONE' || c.task_id !== null) throw unprocessable(`Cluster ${c.id} is busy (task ${c.task_name}): a backup needs task NONE.`);
  const parent = await resolveParent(plane.store, projectId, { cluster_id: c.id }, req.parentId, req.incremental);
  const id = req.id ?? randomUUID();
  let task: Row<'tasks'>;
  try {
    task = await plane.tasks.create({ kind: 'cluster.backup', ...(req.id ? { id: backupTaskId(id) } : {}), projectId, backupId: id, params: { clusterId: c.id, parent }, timeout: plane.config.backupTimeout });
  } catch (err) {
    throw await requestFailure(plane, req.id, err);
  }
  // The cluster is held while its parts are taken: no shard moves, restarts or other backups meanwhile.
  if (!(await plane.store.update('clusters', c.id, { task_name: 'BACKING_UP', task_id: task.id, updated: now() }, { task_id: null, task_name: 'NONE' }))) {
    await plane.tasks.discard(task.id);
    throw unprocessable(`Cluster ${c.id} is busy: try again.`);
  }
  const t = now();
  const row: Row<'backups'> = {
    id, project_id: projectId, instance_id: null, cluster_id: c.id, cluster: null, name: req.name, description: req.description, status: 'NEW', parent_id: parent,
    location: plane.config.repository, size_bytes: null, data_bytes: null, files: null, checksum: null, datastore: c.datastore,
    datastore_version: c.datastore_version, progress: null, fail_reason: null, task_id: task.id, created: t, updated: t, verified_at: null, verify_result: null,
  };
  await plane.store.insert('backups', row);
  plane.tasks.start(task);
  return row;
}

/**
 * The copy each range is taken from: among the members that answer and hold one, the copy with the most
 * documents (live and deleted; internal replication was given its chance to even them out), then the
 * member given the fewest ranges so far.
 */
export function chooseCopies(maps: ShardMapRecord[], states: ClusterShardState[]): Map<string, ShardRef[]> {
  const given = new Map<string, ShardRef[]>(states.map((s) => [s.node, []]));
  for (const m of maps) {
    for (const [range, nodes] of Object.entries(m.by_range)) {
      const shard = shardName(m, range);
      const holders = states.filter((s) => nodes.includes(s.node) && s.shards[shard] !== undefined);
      if (holders.length === 0) throw new Error(`no member that answers holds a copy of ${m._id} ${range} (its copies are on ${nodes.join(', ')})`);
      holders.sort((a, b) => b.shards[shard]! - a.shards[shard]! || given.get(a.node)!.length - given.get(b.node)!.length);
      given.get(holders[0]!.node)!.push({ db: m._id, range });
    }
  }
  return given;
}

/**
 * The checks of a restore from a cluster backup, before anything is made: COMPLETED, every part in the
 * repository with the checksum recorded, and each node's share fits its volume (`copies` of the data over `nodes`).
 */
export async function checkClusterRestore(plane: ControlPlane, b: Row<'backups'>, nodes: number, sizeGb: number): Promise<ClusterBackupRecord> {
  const r = clusterRecord(b);
  if (!r) throw badRequest(`Backup ${b.id} is not a cluster backup.`);
  if (b.status !== 'COMPLETED') throw unprocessable(`Backup ${b.id} is not COMPLETED (status ${b.status}): it cannot be restored.`);
  const share = ((b.data_bytes ?? 0) * Math.min(3, nodes)) / nodes;
  if (plane.config.couchdb.volumeSupport && share > sizeGb * 2 ** 30) throw unprocessable(`Backup ${b.id} gives each of ${nodes} nodes ${(share / 2 ** 30).toFixed(3)} GB of data: it does not fit a volume of ${sizeGb} GB.`);
  for (const p of r.parts) {
    const stored = await plane.backups.storedChecksum(p.location, p.id, plane.backupKeyFile).catch((err: unknown) => Promise.reject(unprocessable(`Backup ${b.id}: its part ${p.id} cannot be read from ${p.location}: ${describeError(err)}`)));
    if (stored !== p.checksum) throw unprocessable(`Backup ${b.id}: the stored checksum of its part ${p.id} does not match the recorded one.`);
  }
  return r;
}

/** A cluster backup restored into new instances (a new cluster's members, or one single instance), their CouchDB running. */
export async function restoreClusterBackup(plane: ControlPlane, b: Row<'backups'>, targets: Row<'instances'>[]): Promise<void> {
  const r = clusterRecord(b);
  if (!r) throw new Error(`backup ${b.id} is not a cluster backup`);
  const agents = await Promise.all(targets.map(async (t) => backupAgent(await plane.compute.agent(t))));
  // Each node's own name, as its CouchDB says it.
  const nodes = await Promise.all(agents.map(async (a) => (await agentCall(a.clusterBackup({ op: 'maps' }))).node));
  const maps = placeMaps(r.maps, nodes);
  const part = new Map<string, ClusterBackupPart>();
  for (const p of r.parts) for (const s of p.shards) part.set(`${s.db} ${s.range}`, p);
  // Every node's files first: a map written before its files are in place would make them empty.
  await Promise.all(targets.map(async (t, i) => {
    const wanted = new Map<ClusterBackupPart, string[]>();
    for (const m of maps) {
      for (const [range, holders] of Object.entries(m.by_range)) {
        if (!holders.includes(nodes[i]!)) continue;
        const p = part.get(`${m._id} ${range}`);
        if (!p) throw new Error(`backup ${b.id} holds no copy of ${m._id} ${range}`);
        wanted.set(p, [...(wanted.get(p) ?? []), shardFile(m, range)]);
      }
    }
    try {
      const parts = [];
      for (const [p, files] of wanted) parts.push({ storage: p.location, backupId: p.id, files, ...(await plane.restoreKey(t, p.instanceId, p.location, p.id)) });
      await agentCall(agents[i]!.clusterBackup({ op: 'restoreFiles', parts }));
    } finally {
      await plane.compute.removeRestoreKey?.(t).catch(() => undefined);
    }
  }));
  const docs = await agentCall(agents[0]!.clusterBackup({ op: 'restoreMaps', maps, write: true }));
  for (const a of agents.slice(1)) await agentCall(a.clusterBackup({ op: 'restoreMaps', maps, write: false }));
  plane.log(`backup ${b.id} of cluster ${r.cluster.id} restored onto ${nodes.join(', ')}: ${maps.length} databases (${Object.entries(docs.docs ?? {}).map(([db, n]) => `${db} ${n}`).join(', ')})`);
}

export function registerClusterBackupTasks(plane: ControlPlane): void {
  const releaseCluster = async (clusterId: string, taskId: string): Promise<void> => {
    await plane.store.update('clusters', clusterId, { task_name: 'NONE', task_id: null, updated: now() }, { task_id: taskId });
  };

  plane.tasks.register<{ clusterId: string; parent?: string | null }>('cluster.backup', {
    resumable: false,
    run: async (ctx) => {
      const backupId = ctx.task.backup_id!;
      const c = await plane.store.get('clusters', ctx.params.clusterId);
      if (!c) throw new Error(`cluster ${ctx.params.clusterId} is gone`);
      await plane.store.update('backups', backupId, { status: 'BUILDING', updated: now() }, { task_id: ctx.task.id });
      const members = await clusterMembers(plane, c.id);
      // The members that answer now; a member down gives no part (its ranges come from the others).
      const up: Array<{ m: Row<'instances'>; a: BackupAgent; k: number }> = [];
      for (const [i, m] of members.entries()) {
        if (m.status !== 'ACTIVE' && m.status !== 'RESTART_REQUIRED') continue;
        try {
          const a = backupAgent(await plane.compute.agent(m));
          if ((await withTimeout(a.status(), 5000)).state === 'RUNNING') up.push({ m, a, k: i + 1 });
        } catch (err) {
          plane.log(`cluster backup ${backupId}: member ${m.name} does not answer (${describeError(err)}): its ranges come from the others`);
        }
      }
      if (up.length === 0) throw new Error('no member of the cluster answers');
      // The maps first: every map predates every shard file measured (a database made meanwhile is left out).
      const { maps = [] } = await agentCall(withTimeout(up[0]!.a.clusterBackup({ op: 'maps' }), 60_000));
      const dbs = maps.map((m) => m._id);
      // Internal replication pushes each copy's documents to the others: once idle, a copy that answers
      // holds what a copy it cannot reach had acknowledged (w = a majority).
      await until('internal replication did not become idle', 60_000, async () => {
        const s = await Promise.all(up.map((u) => agentCall(withTimeout(u.a.clusterShards(dbs), 30_000))));
        return s.every((x) => x.backlog === 0);
      }).catch((err: unknown) => plane.log(`cluster backup ${backupId}: ${describeError(err)}; taking the fullest copies`));
      const states = await Promise.all(up.map((u) => agentCall(withTimeout(u.a.clusterShards(), 30_000))));
      const given = chooseCopies(maps, states);
      // Incremental: each member's part builds on its part of the parent (same member: same key and
      // repository); a member without one there gives a full part (the engine copies what its parent lacks).
      const parentRow = ctx.params.parent ? await plane.store.get('backups', ctx.params.parent) : undefined;
      const parentParts = new Map((parentRow ? clusterRecord(parentRow)?.parts ?? [] : []).map((p) => [p.instanceId, p.id]));
      if (ctx.params.parent && !parentRow) throw new Error(`the parent backup ${ctx.params.parent} is gone`);
      await plane.store.update('backups', backupId, { status: 'SAVING', updated: now() }, { task_id: ctx.task.id });
      type Written = ClusterBackupPart & { bytes: number; files: number };
      const results = await Promise.allSettled(up.map(async (u, i): Promise<Written | null> => {
        const shards = given.get(states[i]!.node) ?? [];
        if (shards.length === 0) return null;
        const id = partId(backupId, u.k);
        const location = plane.repositoryOf(u.m.id);
        const labels = { cluster_id: c.id, cluster_backup: backupId, instance_id: u.m.id, project_id: u.m.project_id };
        const parent = parentParts.get(u.m.id);
        const s = await agentCall(u.a.backup({ storage: location, id, labels, shards, ...(parent ? { parent } : {}), ...(await plane.ownKey(u.m)) }));
        return { id, instanceId: u.m.id, node: states[i]!.node, location, checksum: s.checksum, size: s.size, shards, bytes: s.totalBytes, files: s.files };
      }));
      const failed = results.find((x): x is PromiseRejectedResult => x.status === 'rejected');
      if (failed) throw failed.reason instanceof Error ? failed.reason : new Error(String(failed.reason));
      const parts = results.map((x) => (x as PromiseFulfilledResult<Written | null>).value).filter((p) => p !== null);
      const record: ClusterBackupRecord = {
        cluster: { id: c.id, name: c.name, n: c.n, q: c.q, nodes: members.map((m) => memberNode(m, plane.compute)) },
        maps,
        parts: parts.map(({ bytes: _b, files: _f, ...p }) => p),
      };
      const done = await plane.store.update('backups', backupId, {
        status: 'COMPLETED', cluster: JSON.stringify(record), size_bytes: parts.reduce((n, p) => n + p.size, 0), data_bytes: parts.reduce((n, p) => n + p.bytes, 0),
        files: parts.reduce((n, p) => n + p.files, 0), checksum: createHash('sha256').update(parts.map((p) => `${p.id}:${p.checksum}`).join('\n')).digest('hex'), progress: null, updated: now(),
      }, { task_id: ctx.task.id });
      if (!done) throw new Error('the backup row changed while the backup ran');
      await releaseCluster(c.id, ctx.task.id);
      plane.log(`cluster backup ${backupId} of ${c.name}: ${maps.length} databases, ${given.size} members asked, parts ${parts.map((p) => `${p.id} (${p.shards.length} ranges)`).join(', ')}`);
    },
    failed: async (task, reason) => {
      const { clusterId } = JSON.parse(task.params) as { clusterId: string };
      if (task.backup_id) {
        await plane.store.update('backups', task.backup_id, { status: 'FAILED', fail_reason: reason, progress: null, updated: now() }, { task_id: task.id });
        // What parts were written go (an engine's delete of a backup that is not there does nothing).
        for (const [i, m] of (await clusterMembers(plane, clusterId)).entries()) {
          await plane.backups.delete(plane.repositoryOf(m.id), partId(task.backup_id, i + 1), plane.backupKeyFile).catch((err: unknown) => plane.log(`cluster backup ${task.backup_id}: removing part ${i + 1}: ${describeError(err)}`));
        }
      }
      await releaseCluster(clusterId, task.id);
    },
  });
}
