// Replication in the control plane (issue 6): detach a replica, promote a replica to replica source,
// eject a source that is gone, and the replication part of `show`. The agents do the CouchDB work
// (docs/replication.md); this module sequences it across instances as durable tasks.
import type { AgentApi, AgentReplicationApi, ReplicationStatus } from '../agent/protocol.js';
import type { Row } from '../state/index.js';
import { now } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { agentCall } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { badRequest, unprocessable } from './errors.js';
import { lastSeen } from './health.js';

type ReplicationAgent = AgentApi & AgentReplicationApi;

interface PromoteParams {
  /** The source the promoted replica followed; null when that row is gone. */
  oldPrimary: string | null;
  /** The other replicas of that source. */
  others: string[];
}

interface EjectParams {
  /** The replicas of the ejected source. */
  replicas: string[];
  /** Why it counts as gone, with when it was last seen (absent in tasks from before). */
  why?: string;
}

/** How long promote waits for the replica to catch up with its source before detaching it. */
const CATCH_UP_MS = 30_000;

export async function replicationAgent(plane: ControlPlane, inst: Row<'instances'>): Promise<ReplicationAgent> {
  const a = (await plane.compute.agent(inst)) as AgentApi & Partial<AgentReplicationApi>;
  if (!a.detach || !a.followPrimary || !a.replicationSource || !a.replicationStatus || !a.syncReplication) {
    throw new Error(`the agent of instance ${inst.id} cannot replicate`);
  }
  return a as ReplicationAgent;
}

/**
 * The URL at which `follower` reaches `source`'s CouchDB: on a network between the two when the compute
 * driver makes one (containers, Swarm: docs/compute.md "Replicas"), else the source's couchdb_url.
 */
export async function sourceUrl(plane: ControlPlane, source: Row<'instances'>, follower: Row<'instances'>): Promise<string> {
  if (plane.compute.linkReplica) return plane.compute.linkReplica(source, follower);
  return `http://${source.host ?? '127.0.0.1'}:${source.port ?? 0}`;
}

/** `follower` no longer follows `sourceId`: off the network between them. A failure is logged, never fatal (the network is left). */
export async function unlinkSource(plane: ControlPlane, sourceId: string | null, follower: Row<'instances'>): Promise<void> {
  if (!sourceId || !plane.compute.unlinkReplica) return;
  try {
    await plane.compute.unlinkReplica(sourceId, follower);
  } catch (err) {
    plane.log(`instance ${follower.id}: taking it off the network of its former source ${sourceId}: ${describeError(err)}`);
  }
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** How long a source has to answer before it counts as gone: a stopped (black-holed) host never does. */
const SOURCE_ANSWER_MS = 3000;

/**
 * A source is healthy when its row is usable and its agent says CouchDB runs, within SOURCE_ANSWER_MS; else
 * why not. A source that does not answer at all is as gone as a dead one (issue 23).
 */
async function probe(plane: ControlPlane, inst: Row<'instances'>): Promise<{ ok: boolean; reason: string }> {
  const usable = ['ACTIVE', 'RESTART_REQUIRED', 'BACKUP'].includes(inst.status);
  // An ERROR or SHUTDOWN source is asked too: whether it answers at all is the reason an operator needs (the
  // health monitor may have marked a black-holed source ERROR a moment before).
  if (!inst.agent_port || (!usable && !['ERROR', 'SHUTDOWN'].includes(inst.status))) return { ok: false, reason: `it is ${inst.status}` };
  try {
    const s = await withTimeout((await plane.compute.agent(inst)).status(), SOURCE_ANSWER_MS);
    lastSeen(plane).set(inst.id, Date.now());
    if (!usable) return { ok: false, reason: `it is ${inst.status}${inst.fault ? ` (${inst.fault})` : ''}` };
    return s.state === 'RUNNING' || s.state === 'RESTART_REQUIRED' ? { ok: true, reason: 'it answers' } : { ok: false, reason: `its CouchDB is ${s.state}${s.reason ? ` (${s.reason})` : ''}` };
  } catch (err) {
    return { ok: false, reason: `it does not answer: ${describeError(err)}` };
  }
}

const healthy = async (plane: ControlPlane, inst: Row<'instances'>): Promise<boolean> => (await probe(plane, inst)).ok;

// ---- requests (checked, then a task claims the instance) ----------------------------------------

/** `PATCH/PUT /instances/{id}` with `{"instance": {"replica_of": null}}` (trove detach-replica). */
export async function detachReplica(plane: ControlPlane, projectId: string, id: string): Promise<void> {
  const inst = await plane.instance(projectId, id);
  if (inst.replica_of === null) throw badRequest(`Instance ${id} is not a replica: there is no replication source to detach from.`);
  const task = await plane.claim(projectId, id, 'instance.detach_replica', 'DETACH', ['ACTIVE', 'RESTART_REQUIRED'], {}, plane.config.taskTimeout);
  plane.tasks.start(task);
}

/** `POST /instances/{id}/action {"promote_to_replica_source": {}}`: the replica becomes the source. */
export async function promoteReplica(plane: ControlPlane, projectId: string, id: string): Promise<void> {
  const inst = await plane.instance(projectId, id);
  if (inst.replica_of === null) throw badRequest(`Instance ${id} is not a replica: only a replica can be promoted to replica source.`);
  const primary = await plane.store.get('instances', inst.replica_of);
  if (primary && !(await healthy(plane, primary))) {
    throw unprocessable(`The replica source ${primary.id} of instance ${id} is ${primary.status} or does not answer: promote needs a working source. Use eject-replica-source ${primary.id} to replace a source that is gone.`);
  }
  const others = primary ? (await plane.store.find('instances', { replica_of: primary.id })).map((r) => r.id).filter((r) => r !== id) : [];
  const params: PromoteParams = { oldPrimary: primary?.id ?? null, others };
  const task = await plane.claim(projectId, id, 'instance.promote', 'PROMOTE', ['ACTIVE', 'RESTART_REQUIRED'], params, plane.config.taskTimeout);
  plane.tasks.start(task);
}

/**
 * `POST /instances/{id}/action {"eject_replica_source": {}}` on a source that is gone (dead, down, or not
 * answering): a replica takes over. Answers why the source counts as gone and when it was last seen.
 */
export async function ejectReplicaSource(plane: ControlPlane, projectId: string, id: string): Promise<{ instance_id: string; source_state: string; last_seen: string | null; replicas: string[] }> {
  const src = await plane.instance(projectId, id);
  if (src.replica_of !== null) throw badRequest(`Instance ${id} is a replica of ${src.replica_of}, not a replica source: eject-replica-source takes the source.`);
  const replicas = (await plane.store.find('instances', { replica_of: src.id })).map((r) => r.id);
  if (replicas.length === 0) throw badRequest(`Instance ${id} is not a replica source: it has no replicas.`);
  const p = await probe(plane, src);
  if (p.ok) {
    throw badRequest(`Replica source ${id} cannot be ejected: it is ${src.status} and its CouchDB answers. Eject is for a source that is gone; use promote-to-replica-source on a replica to switch while the source works.`);
  }
  const seenAt = lastSeen(plane).get(src.id);
  const lastSeenAt = seenAt === undefined ? null : new Date(seenAt).toISOString();
  const params: EjectParams = { replicas, why: `${p.reason}; last seen ${lastSeenAt ?? 'never by this server since it started'}` };
  const task = await plane.claim(projectId, id, 'instance.eject', 'EJECT', ['ACTIVE', 'RESTART_REQUIRED', 'ERROR', 'SHUTDOWN', 'FAILED'], params, plane.config.taskTimeout);
  plane.tasks.start(task);
  plane.log(`instance ${id}: ejecting it from its replication set: ${params.why}`);
  return { instance_id: src.id, source_state: p.reason, last_seen: lastSeenAt, replicas };
}

/**
 * Waits until a replica follows for real: guarded (read-only), no errors, every database's job running
 * and caught up once. A replica that does not get there is not ACTIVE: this throws with what was seen.
 */
export async function awaitFollowing(plane: ControlPlane, inst: Row<'instances'>, timeoutMs = 120_000): Promise<void> {
  const agent = await replicationAgent(plane, inst);
  const end = Date.now() + timeoutMs;
  let last = 'no status yet';
  while (Date.now() < end) {
    await withTimeout(agent.syncReplication(), 30_000).catch(() => undefined);
    const s = await withTimeout(agent.replicationStatus(), 10_000).catch((err: unknown) => {
      last = `the agent does not answer: ${describeError(err)}`;
      return null;
    });
    if (s) {
      const behind = s.databases.filter((d) => d.state !== 'running' || d.lag !== 0 || d.lagAtLeast);
      if (s.readOnly && s.errors.length === 0 && behind.length === 0) return;
      last = [
        ...(s.readOnly ? [] : ['not read-only']),
        ...s.errors,
        ...behind.map((d) => `${d.database}: ${d.state}${d.lag !== 0 ? `, lag ${d.lag ?? 'unknown'}` : ''}${d.error ? ` (${d.error})` : ''}`),
      ].join('; ');
    }
    await sleep(500);
  }
  throw new Error(`the replica does not follow its source after ${Math.round(timeoutMs / 1000)} s: ${last}`);
}

// ---- show ----------------------------------------------------------------------------------------

/** The `replication` field of a replica's `show` (an extra field Trove clients ignore). */
export async function replicationView(plane: ControlPlane, inst: Row<'instances'>): Promise<Record<string, unknown> | undefined> {
  if (inst.replica_of === null || !inst.agent_port || inst.status === 'BUILD') return undefined;
  let s: ReplicationStatus;
  try {
    s = await withTimeout((await replicationAgent(plane, inst)).replicationStatus(), 5000);
  } catch (err) {
    return { role: 'replica', state: 'unknown', errors: [`the agent does not answer: ${describeError(err)}`], databases: [] };
  }
  const lags = s.databases.map((d) => d.lag);
  const bad = s.databases.filter((d) => ['crashing', 'error', 'failed'].includes(d.state));
  return {
    role: s.role,
    state: s.errors.length > 0 || bad.length > 0 ? 'error' : s.databases.every((d) => d.state === 'running') ? 'running' : 'starting',
    primary_url: s.primaryUrl ?? null,
    read_only: s.readOnly,
    lag: lags.some((l) => l === null) ? null : lags.reduce<number>((a, b) => a + (b ?? 0), 0),
    errors: s.errors,
    last_sync: s.lastSync ?? null,
    databases: s.databases.map((d) => ({
      name: d.database, state: d.state, lag: d.lag, lag_method: d.lagMethod, ...(d.lagAtLeast ? { lag_at_least: true } : {}),
      ...(d.error ? { error: d.error } : {}), ...(d.docCount !== undefined ? { doc_count: d.docCount } : {}),
    })),
  };
}

// ---- tasks ---------------------------------------------------------------------------------------

/** Makes each instance follow `source`; returns the problems (one per instance that could not follow). */
async function followAll(plane: ControlPlane, source: Row<'instances'>, ids: string[]): Promise<string[]> {
  const creds = await agentCall((await replicationAgent(plane, source)).replicationSource());
  const problems: string[] = [];
  for (const id of ids) {
    const o = await plane.store.get('instances', id);
    if (!o) continue;
    try {
      const primaryUrl = await sourceUrl(plane, source, o);
      const a = await replicationAgent(plane, o);
      await agentCall(a.followPrimary({ primaryUrl, username: creds.username, password: creds.password, primaryName: source.id }));
      await plane.store.update('instances', id, { replica_of: source.id, updated: now() });
      if (o.replica_of !== source.id) await unlinkSource(plane, o.replica_of, o);
    } catch (err) {
      problems.push(`instance ${id} could not follow ${source.id}: ${describeError(err)}`);
    }
  }
  return problems;
}

export function registerReplicationTasks(plane: ControlPlane): void {
  const fail = async (task: Row<'tasks'>, reason: string): Promise<void> => {
    if (task.instance_id) await plane.release(task.instance_id, task.id, reason);
  };

  plane.tasks.register('instance.detach_replica', {
    resumable: true,
    run: async (ctx) => {
      const inst = await plane.held(ctx);
      await agentCall((await replicationAgent(plane, inst)).detach());
      await unlinkSource(plane, inst.replica_of, inst);
      await plane.release(inst.id, ctx.task.id, null, { replica_of: null });
    },
    failed: fail,
  });

  plane.tasks.register<PromoteParams>('instance.promote', {
    resumable: true,
    run: async (ctx) => {
      const inst = await plane.held(ctx);
      const agent = await replicationAgent(plane, inst);
      if (!(ctx.resumed && ctx.task.step === 'detached') && ctx.params.oldPrimary !== null) {
        // Catch up first (bounded): what the source has and this replica lacks would stay behind.
        const end = Date.now() + CATCH_UP_MS;
        while (Date.now() < end && !ctx.signal.aborted) {
          await withTimeout(agent.syncReplication(), 10_000).catch(() => undefined);
          const s = await withTimeout(agent.replicationStatus(), 10_000).catch(() => null);
          if (s && s.databases.length > 0 && s.databases.every((d) => d.lag === 0 && !d.lagAtLeast)) break;
          await sleep(500);
        }
      }
      await agentCall(agent.detach());
      await plane.store.update('instances', inst.id, { replica_of: null, updated: now() });
      await unlinkSource(plane, ctx.params.oldPrimary, inst);
      await ctx.step('detached');
      const followers = [...(ctx.params.oldPrimary ? [ctx.params.oldPrimary] : []), ...ctx.params.others];
      const problems = await followAll(plane, inst, followers);
      // The instance is given back with the problems as its fault: the task's failure comes after the release.
      const fault = problems.length > 0 ? `promoted, but: ${problems.join('; ')}` : null;
      await plane.release(inst.id, ctx.task.id, fault, { replica_of: null });
      if (fault) throw new Error(fault);
    },
    failed: fail,
  });

  plane.tasks.register<EjectParams>('instance.eject', {
    resumable: true,
    run: async (ctx) => {
      const src = await plane.held(ctx);
      // The candidate: the replica holding the most documents (update sequences of different
      // instances cannot be compared); ties go to the replica created first.
      let chosen: { inst: Row<'instances'>; docs: number } | null = null;
      const rows = (await Promise.all(ctx.params.replicas.map((id) => plane.store.get('instances', id))))
        .filter((r): r is Row<'instances'> => r !== undefined && (r.replica_of === src.id || r.replica_of === null))
        .sort((a, b) => a.created.localeCompare(b.created));
      const seen: string[] = [];
      for (const r of rows) {
        try {
          const s = await withTimeout((await replicationAgent(plane, r)).replicationStatus(), 10_000);
          const docs = s.databases.reduce((n, d) => n + (d.docCount ?? 0), 0);
          seen.push(`${r.id}: ${docs} documents`);
          if (r.status === 'ACTIVE' && (chosen === null || docs > chosen.docs)) chosen = { inst: r, docs };
        } catch (err) {
          seen.push(`${r.id}: ${describeError(err)}`);
        }
      }
      // After an interrupted run, the replica promoted before is the one detached already.
      const done = rows.find((r) => r.replica_of === null);
      if (done) chosen = { inst: done, docs: 0 };
      if (!chosen) throw new Error(`no replica of ${src.id} can take over (${seen.join('; ') || 'none left'})`);
      const next = chosen.inst;
      await agentCall((await replicationAgent(plane, next)).detach());
      await plane.store.update('instances', next.id, { replica_of: null, updated: now() });
      await unlinkSource(plane, src.id, next);
      await ctx.step('detached');
      const problems = await followAll(plane, next, rows.map((r) => r.id).filter((r) => r !== next.id));
      await plane.release(src.id, ctx.task.id, `ejected from its replication set${ctx.params.why ? ` (${ctx.params.why})` : ''}: instance ${next.id} is the new replica source${problems.length ? `; ${problems.join('; ')}` : ''}`);
    },
    failed: fail,
  });
}
