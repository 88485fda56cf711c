// CouchDB clusters through Trove's cluster API (docs/cluster.md). A cluster is a record (clusters) and
// its members, each an ordinary instance (its own agent, uid, volume, status) with cluster_id set. Members
// share the cluster's Erlang cookie, [chttpd_auth] secret and uuid (a 0600 file of the control plane's,
// read by their agents), register with the cluster's own epmd port and listen for their peers on a fixed
// distribution port each, on loopback. The cluster.create task waits for its members' instance.create tasks,
// joins them through the first member's node list, makes the system databases and probes every node; only
// then is the cluster's task NONE. cluster.delete deletes every member and then the record.
import { randomBytes, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentApi, AgentClusterApi, ClusterMemberSettings } from '../agent/protocol.js';
import { clusterSecretsFile, type ComputeDriver } from '../compute/driver.js';
import { freePort } from '../compute/local.js';
import { now, type ClusterTaskName, type Row } from '../state/index.js';
import { describeError } from '../util/errors.js';
import { agentCall, DATASTORE, type ControlPlane } from './control.js';
import { badRequest, notFound, unprocessable } from './errors.js';
import type { TaskContext } from './manager.js';
import { checkClusterRestore, restoreClusterBackup } from './cluster-backup.js';

/** How a cluster's fault begins when it never became ready (cluster-reset.ts leaves such a cluster ERROR). */
export const CREATE_FAILED = 'create failed: ';

/** Members a cluster may have on one host (the local driver). */
export const CLUSTER_SIZE = { min: 2, max: 9 } as const;

/** [cluster] n and q for a cluster of `nodes` (docs/cluster.md): n copies of each of q shard ranges. */
export function clusterDefaults(nodes: number): { n: number; q: number } {
  return { n: Math.min(3, nodes), q: nodes <= 3 ? 2 : nodes <= 6 ? 4 : 8 };
}

/**
 * A member's Erlang node name: stable for the instance's life (its id), distinct on the host; a container
 * driver's names one its peers resolve on the cluster's network (ComputeDriver.clusterNode).
 */
export function memberNode(inst: Pick<Row<'instances'>, 'id'>, compute: Pick<ComputeDriver, 'clusterNode'>): string {
  return compute.clusterNode ? compute.clusterNode(inst) : `couchdb-${inst.id}@127.0.0.1`;
}

interface ClusterSecrets {
  cookie: string;
  authSecret: string;
  uuid: string;
}

function secretsFile(plane: ControlPlane, clusterId: string): string {
  return clusterSecretsFile(plane.config.stateDir, clusterId);
}

function readSecrets(plane: ControlPlane, clusterId: string): ClusterSecrets {
  return JSON.parse(fs.readFileSync(secretsFile(plane, clusterId), 'utf8')) as ClusterSecrets;
}

/** What a member's agent gets in its settings (control.ts settings()). */
export async function memberSettings(plane: ControlPlane, inst: Row<'instances'>): Promise<ClusterMemberSettings> {
  const c = await plane.store.get('clusters', inst.cluster_id ?? '');
  if (!c) throw new Error(`the cluster ${inst.cluster_id} of instance ${inst.id} is gone`);
  if (!inst.dist_port) throw new Error(`cluster member ${inst.id} has no distribution port yet`);
  // Containers read their own copy of the secrets, and meet their peers without epmd.
  const copy = plane.compute.paths(inst).clusterSecretsFile;
  return {
    distPort: inst.dist_port, n: c.n, q: c.q, uuid: readSecrets(plane, c.id).uuid, secretsFile: copy ?? secretsFile(plane, c.id),
    ...(plane.compute.clusterNode ? { epmdless: true } : {}),
  };
}

export async function findCluster(plane: ControlPlane, projectId: string, ref: string): Promise<Row<'clusters'>> {
  const byId = await plane.store.get('clusters', ref);
  const c = byId?.project_id === projectId ? byId : (await plane.store.find('clusters', { project_id: projectId, name: ref }))[0];
  if (!c) throw notFound(`Cluster ${ref} could not be found.`);
  return c;
}

/** The members, in the order they were made (member 1 first). */
export async function clusterMembers(plane: ControlPlane, clusterId: string): Promise<Row<'instances'>[]> {
  const rows = await plane.store.find('instances', { cluster_id: clusterId });
  return rows.sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
}

export interface CreateClusterRequest {
  name: string;
  datastoreVersion: string | null;
  instances: Array<{ flavorRef: string; volumeSize: number | null }>;
  /** A cluster backup to restore into the new cluster (./cluster-backup.ts). */
  backupRef?: string | null;
}

export async function createCluster(plane: ControlPlane, projectId: string, req: CreateClusterRequest): Promise<Row<'clusters'>> {
  if (plane.compute.name !== 'local' && !plane.compute.clusterNode) throw badRequest(`Clusters are not supported by the ${plane.compute.name} compute driver (docs/cluster.md).`);
  if (plane.compute.engine.kind === 'devengine') throw badRequest('The development engine cannot play a cluster: set COUCHDB_HOME to an Apache CouchDB 3.x release to create clusters.');
  const count = req.instances.length;
  if (count < CLUSTER_SIZE.min || count > CLUSTER_SIZE.max) throw badRequest(`A cluster has ${CLUSTER_SIZE.min} to ${CLUSTER_SIZE.max} instances; ${count} given.`);
  // Shards are spread evenly: members of different sizes would fill the smallest first.
  const first = req.instances[0]!;
  const flavor = await plane.flavor(first.flavorRef);
  for (const [i, m] of req.instances.entries()) {
    if ((await plane.flavor(m.flavorRef)).id !== flavor.id || m.volumeSize !== first.volumeSize) {
      throw badRequest(`"instances"[${i}]: every member of a cluster has the same flavor and volume size as the first (${flavor.id}, ${first.volumeSize ?? 'no'} GB).`);
    }
  }
  const version = await plane.datastoreVersion(req.datastoreVersion);
  if (!version.couchdb_home && plane.compute.engine.kind !== 'couchdb') throw badRequest('The development engine cannot play a cluster.');
  if ((await plane.store.find('clusters', { project_id: projectId, name: req.name })).length > 0) throw badRequest(`A cluster named ${req.name} exists already.`);
  const restore = req.backupRef ? await plane.backup(projectId, req.backupRef) : null;
  if (restore) await checkClusterRestore(plane, restore, count, first.volumeSize ?? 0);
  await plane.ensureProject(projectId);
  const id = randomUUID();
  const file = secretsFile(plane, id);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const secrets: ClusterSecrets = { cookie: randomBytes(32).toString('hex'), authSecret: randomBytes(16).toString('hex'), uuid: randomUUID().replaceAll('-', '') };
  fs.writeFileSync(file, JSON.stringify(secrets), { mode: 0o600, flag: 'wx' });
  const { n, q } = clusterDefaults(count);
  const task = await plane.tasks.create({ kind: 'cluster.create', projectId, params: { clusterId: id, ...(restore ? { restore: restore.id } : {}) }, timeout: plane.config.couchdb.usageTimeout + 300 });
  const t = now();
  const row: Row<'clusters'> = {
    id, project_id: projectId, name: req.name, task_name: 'BUILDING_INITIAL', datastore: DATASTORE, datastore_version: version.name,
    epmd_port: await freePort(), n, q, fault: null, task_id: task.id, created: t, updated: t,
  };
  await plane.store.insert('clusters', row);
  try {
    for (let i = 0; i < count; i++) {
      await plane.createInstance(projectId, {
        name: `${req.name}-member-${i + 1}`, flavorRef: flavor.id, volumeSize: first.volumeSize, datastoreVersion: version.name,
        databases: [], users: [], backupRef: null, replicaOf: null, configurationId: null, cluster: { id, epmdPort: row.epmd_port },
      });
    }
  } catch (err) {
    // Checked above, so unlikely; the members already made go with `cluster delete`.
    await plane.tasks.discard(task.id);
    await plane.store.update('clusters', id, { task_name: 'ERROR', fault: `${CREATE_FAILED}${describeError(err)}`, task_id: null, updated: now() });
    throw err;
  }
  plane.tasks.start(task);
  return row;
}

export async function deleteCluster(plane: ControlPlane, projectId: string, ref: string): Promise<void> {
  const c = await findCluster(plane, projectId, ref);
  if (c.task_id) await plane.tasks.expireIfOverdue(c.task_id);
  const current = (await plane.store.get('clusters', c.id))!;
  if (current.task_id !== null) {
    const holder = await plane.store.get('tasks', current.task_id);
    if (holder && (holder.status === 'NEW' || holder.status === 'RUNNING')) throw unprocessable(`Cluster ${c.id} is busy: its ${holder.kind} task ${holder.id} runs (task ${current.task_name}).`);
  }
  const task = await plane.tasks.create({ kind: 'cluster.delete', projectId, params: { clusterId: c.id }, timeout: plane.config.taskTimeout });
  if (!(await plane.store.update('clusters', c.id, { task_name: 'DELETING', task_id: task.id, updated: now() }, { task_id: current.task_id }))) {
    await plane.tasks.discard(task.id);
    throw unprocessable(`Cluster ${c.id} is busy: try again.`);
  }
  plane.tasks.start(task);
}

/** Root on every member with one password: [admins] is each node's own configuration (docs/cluster.md). */
export async function enableClusterRoot(plane: ControlPlane, projectId: string, ref: string, password?: string): Promise<{ name: 'root'; password: string }> {
  const c = await findCluster(plane, projectId, ref);
  if (c.task_name !== 'NONE') throw unprocessable(`Cluster ${c.id} is not ready: its task is ${c.task_name} (root needs task NONE).`);
  const members = await clusterMembers(plane, c.id);
  let pw = password;
  let result: { name: 'root'; password: string } | null = null;
  for (const m of members) {
    if (m.status !== 'ACTIVE' && m.status !== 'RESTART_REQUIRED') throw unprocessable(`Cluster ${c.id}: member ${m.name} (${m.id}) is ${m.status}; root is set on every member, so all must be ACTIVE.`);
  }
  for (const m of members) {
    result = await agentCall((await plane.compute.agent(m)).enableRoot(pw));
    pw = result.password;
  }
  return result!;
}

export async function clusterRootEnabled(plane: ControlPlane, projectId: string, ref: string): Promise<boolean> {
  const c = await findCluster(plane, projectId, ref);
  const members = await clusterMembers(plane, c.id);
  if (members.length === 0) return false;
  for (const m of members) if (!(await agentCall((await plane.compute.agent(m)).isRootEnabled()))) return false;
  return true;
}

export function clusterAgent(a: AgentApi): AgentClusterApi {
  const c = a as AgentApi & Partial<AgentClusterApi>;
  if (!c.clusterJoin || !c.clusterMembership || !c.clusterSetup || !c.clusterProbe) throw new Error('this agent cannot join a cluster');
  return c as AgentClusterApi;
}

/** Waits until check() answers true; its last failure (or `what`) is the error at the deadline. */
export async function until(what: string, ms: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  let last = '';
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof StopWaiting) throw new Error(err.message);
      last = `: ${describeError(err)}`;
    }
    if (Date.now() > deadline) throw new Error(`${what} within ${Math.round(ms / 1000)} s${last}`);
    await sleep(250);
  }
}

const PROBE_DB = 'couchtrove-cluster-check';

/** Waits until no member has a task (each instance.create done); a member that failed fails the wait, naming it. */
export async function membersBuilt(plane: ControlPlane, clusterId: string, what: string): Promise<Row<'instances'>[]> {
  let members: Row<'instances'>[] = [];
  await until(what, (plane.config.couchdb.usageTimeout + 60) * 1000, async () => {
    members = await clusterMembers(plane, clusterId);
    const failed = members.find((m) => m.task_id === null && m.status !== 'ACTIVE');
    if (failed) throw new StopWaiting(`member ${failed.name} (${failed.id}) is ${failed.status}: ${failed.fault ?? 'no reason given'}`);
    return members.length > 0 && members.every((m) => m.task_id === null);
  });
  return members;
}

export function registerClusterTasks(plane: ControlPlane): void {
  const setCluster = async (ctx: TaskContext<{ clusterId: string }>, patch: Partial<Row<'clusters'>>): Promise<void> => {
    if (!(await plane.store.update('clusters', ctx.params.clusterId, { ...patch, updated: now() }, { task_id: ctx.task.id }))) {
      throw new Error(`cluster ${ctx.params.clusterId} is no longer held by task ${ctx.task.id}`);
    }
  };

  plane.tasks.register<{ clusterId: string; restore?: string }>('cluster.create', {
    resumable: true,
    run: async (ctx) => {
      const id = ctx.params.clusterId;
      // Every member's own instance.create task first: provisioned, prepared, CouchDB running.
      const members = await membersBuilt(plane, id, 'the members did not finish building');
      await ctx.step('members');
      const nodes = members.map((m) => memberNode(m, plane.compute));
      const agents = await Promise.all(members.map(async (m) => clusterAgent(await plane.compute.agent(m))));
      const everyNode = (xs: string[]): boolean => nodes.every((n) => xs.includes(n));
      // The node list of member 1 names every node; mem3 copies it (and _dbs) to each node it names.
      await agentCall(agents[0]!.clusterJoin(nodes));
      await until('not every member sees every node in _membership', 120_000, async () => {
        for (const a of agents) {
          const m = await a.clusterMembership();
          if (!everyNode(m.allNodes) || !everyNode(m.clusterNodes)) return false;
        }
        return true;
      });
      await ctx.step('joined');
      // A backup's databases (system databases among them) before the setup makes any.
      const backup = ctx.params.restore && !['restored', 'setup'].includes(ctx.task.step ?? '') ? await plane.store.get('backups', ctx.params.restore) : undefined;
      if (backup) {
        await restoreClusterBackup(plane, backup, members);
        await ctx.step('restored');
      }
      await until('the system databases could not be made', 60_000, async () => {
        await agents[0]!.clusterSetup();
        for (const a of agents) if ((await a.clusterMembership()).systemDatabases.length < 2) return false;
        return true;
      });
      await ctx.step('setup');
      // A write and a read through every node, in a database with the cluster's n and q; then it goes.
      const ids = members.map((_, i) => `probe-${i + 1}`);
      await agentCall(agents[0]!.clusterProbe({ db: PROBE_DB, create: true, write: ids[0]! }));
      for (let i = 1; i < agents.length; i++) await agentCall(agents[i]!.clusterProbe({ db: PROBE_DB, write: ids[i]!, read: ids.slice(0, i) }));
      await agentCall(agents[0]!.clusterProbe({ db: PROBE_DB, read: ids, drop: true }));
      await setCluster(ctx, { task_name: 'NONE', fault: null, task_id: null });
      plane.log(`cluster ${id}: ${members.length} members joined (${nodes.join(', ')}), n = ${(await plane.store.get('clusters', id))?.n}`);
    },
    failed: async (task, reason) => {
      const { clusterId } = JSON.parse(task.params) as { clusterId: string };
      await plane.store.update('clusters', clusterId, { task_name: 'ERROR', fault: `${CREATE_FAILED}${reason}`, task_id: null, updated: now() }, { task_id: task.id });
    },
  });

  plane.tasks.register<{ clusterId: string }>('cluster.delete', {
    resumable: true,
    run: async (ctx) => {
      const id = ctx.params.clusterId;
      for (const m of await clusterMembers(plane, id)) {
        const holder = m.task_id ? await plane.store.get('tasks', m.task_id) : undefined;
        if (holder?.kind === 'instance.delete' && (holder.status === 'NEW' || holder.status === 'RUNNING')) continue;
        // A member still building is deleted too: delete wins over a create (the claim allows BUILD).
        if (m.task_id) await plane.tasks.expireIfOverdue(m.task_id);
        await plane.deleteInstance(m.project_id, m.id, { cluster: true });
      }
      await until('the members were not all deleted', plane.config.taskTimeout * 1000, async () => {
        const left = await clusterMembers(plane, id);
        const stuck = left.find((m) => m.task_id === null && m.fault?.startsWith('delete failed: '));
        if (stuck) throw new StopWaiting(`member ${stuck.name} (${stuck.id}): ${stuck.fault}`);
        return left.length === 0;
      });
      await plane.compute.destroyCluster?.(id);
      fs.rmSync(path.dirname(secretsFile(plane, id)), { recursive: true, force: true });
      await plane.store.remove('clusters', id, { task_id: ctx.task.id });
    },
    failed: async (task, reason) => {
      const { clusterId } = JSON.parse(task.params) as { clusterId: string };
      await plane.store.update('clusters', clusterId, { task_name: 'ERROR', fault: `delete failed: ${reason}`, task_id: null, updated: now() }, { task_id: task.id });
    },
  });
}

/** A failure that ends a wait at once (a member that failed to build will not come back by itself). */
export class StopWaiting extends Error {}

/** Trove's task ids (trove/cluster/tasks.py); ERROR is couchtrove's. */
export const CLUSTER_TASKS: Record<ClusterTaskName, { id: number; description: string }> = {
  NONE: { id: 1, description: 'No tasks for the cluster.' },
  BUILDING_INITIAL: { id: 2, description: 'Building the initial cluster.' },
  DELETING: { id: 3, description: 'Deleting the cluster.' },
  GROWING_CLUSTER: { id: 5, description: 'Increasing the size of the cluster.' },
  SHRINKING_CLUSTER: { id: 6, description: 'Decreasing the size of the cluster.' },
  RESTARTING_CLUSTER: { id: 8, description: 'Restarting the cluster.' },
  // couchtrove's: Trove has no cluster backup.
  BACKING_UP: { id: 101, description: 'Backing up the cluster.' },
  ERROR: { id: 100, description: 'The last task of the cluster failed (see fault).' },
};
