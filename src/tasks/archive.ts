// Continuous archiving in the control plane (docs/control-plane.md, "Continuous archiving"): the agent
// runs the loop beside its CouchDB (src/agent/archiver.ts); the control plane only switches it on or off
// (the `archive` action, a couchtrove extension of Trove's API) and reads its status, for `show`, the
// listing's restorable window and /metrics. The agent keeps the switch across its own restarts.
import type { AgentArchiveApi, AgentApi, ArchiveStatus, DatabaseRestoreResult } from '../agent/protocol.js';
import type { Row } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { agentCall } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { badRequest, unprocessable } from './errors.js';
import { expireRetired, retireStream } from '../backup/archive.js';
import { archiveRestoredFrom, backupRestoredFrom, chooseCut, forgetDeleted, repositoryArchive, restoreTime } from './recovery.js';
import { DEFAULT_KEEP_DAYS } from '../agent/archiver.js';
import { stableId } from './control.js';

/** Last status read from each instance's agent (health checks, actions, show). */
const statuses = new WeakMap<ControlPlane, Map<string, ArchiveStatus>>();

export function archiveStatuses(plane: ControlPlane): Map<string, ArchiveStatus> {
  let m = statuses.get(plane);
  if (!m) statuses.set(plane, (m = new Map()));
  return m;
}

/** When each instance's agent last told its archiving status (Date.now()): metrics drop what is older. */
const readAt = new WeakMap<ControlPlane, Map<string, number>>();

/** Records a status just read from the instance's agent. */
export function rememberArchive(plane: ControlPlane, instanceId: string, s: ArchiveStatus): void {
  archiveStatuses(plane).set(instanceId, s);
  let m = readAt.get(plane);
  if (!m) readAt.set(plane, (m = new Map()));
  m.set(instanceId, Date.now());
}

/**
 * The statuses an agent told within maxAgeMs, for /metrics: an instance whose agent is gone (dead, or the
 * instance deleted) has no fresh one, so its gauges are dropped instead of staying at their last value.
 */
export function freshArchiveStatuses(plane: ControlPlane, maxAgeMs: number): Map<string, ArchiveStatus> {
  const t = Date.now();
  const at = readAt.get(plane) ?? new Map<string, number>();
  const out = new Map<string, ArchiveStatus>();
  for (const [id, s] of archiveStatuses(plane)) if (t - (at.get(id) ?? 0) <= maxAgeMs) out.set(id, s);
  for (const id of at.keys()) if (!archiveStatuses(plane).has(id)) at.delete(id);
  return out;
}

async function archiveAgent(plane: ControlPlane, inst: Row<'instances'>): Promise<AgentArchiveApi> {
  const a = (await plane.compute.agent(inst)) as AgentApi & Partial<AgentArchiveApi>;
  if (!a.configureArchive || !a.archiveStatus) throw unprocessable(`the agent of instance ${inst.id} does not support continuous archiving`);
  return a as AgentArchiveApi;
}

export interface ArchiveRequest {
  enabled: boolean;
  interval?: number;
  keepDays?: number;
}

/** The `archive` action: switches the agent's loop; answers with the status it then reports. */
export async function setArchive(plane: ControlPlane, projectId: string, id: string, req: ArchiveRequest): Promise<ArchiveStatus> {
  const inst = await plane.instance(projectId, id);
  if (inst.replica_of !== null && req.enabled) throw badRequest(`Instance ${inst.id} is a replica: archive its source ${inst.replica_of}.`);
  if (!inst.agent_port || inst.status === 'BUILD') throw unprocessable(`Instance ${inst.id} is ${inst.status}: archiving can be switched once it is ACTIVE.`);
  const agent = await archiveAgent(plane, inst);
  const status = await agentCall(
    agent.configureArchive({
      enabled: req.enabled,
      storage: plane.repositoryOf(inst.id),
      // Its own key: cuts record its id. A stream whose newest cuts were written with the master key
      // (before per-instance keys) simply gets a new base.
      ...(await plane.ownKey(inst)),
      stream: inst.id,
      ...(req.interval !== undefined ? { interval: req.interval } : {}),
      ...(req.keepDays !== undefined ? { keepDays: req.keepDays } : {}),
    }),
  );
  rememberArchive(plane, inst.id, status);
  plane.log(`instance ${inst.id}: archiving ${req.enabled ? `on (every ${status.interval} s, ${status.keepDays} days kept)` : 'off'}`);
  return status;
}

/** Read by the health monitor each round: archiving status of an instance whose agent answered. */
export async function refreshArchive(plane: ControlPlane, inst: Row<'instances'>): Promise<void> {
  try {
    const a = (await plane.compute.agent(inst)) as AgentApi & Partial<AgentArchiveApi>;
    if (!a.archiveStatus) return;
    const s = await withTimeout(a.archiveStatus(), 3000);
    const cache = archiveStatuses(plane);
    const before = cache.get(inst.id);
    rememberArchive(plane, inst.id, s);
    if (s.behind && !before?.behind) plane.log(`instance ${inst.id}: archiving is behind (restore point ${s.restorePoint ?? 'none'}${s.error ? `: ${s.error}` : ''})`);
    if (!s.behind && before?.behind) plane.log(`instance ${inst.id}: archiving caught up (restore point ${s.restorePoint ?? 'none'})`);
  } catch {
    // The health check reports an agent that does not answer.
  }
}

/**
 * The `archive` field of `show` (an extra field Trove clients ignore); undefined when never switched on.
 * An instance whose agent cannot say (ERROR, SHUTDOWN, an agent that does not answer) shows the archive
 * the repository holds: its window stays known when it matters most.
 */
export async function archiveView(plane: ControlPlane, inst: Row<'instances'>, live: boolean): Promise<Record<string, unknown> | undefined> {
  let s = archiveStatuses(plane).get(inst.id);
  let agentError: string | undefined;
  // Live only from an agent that answers health checks: a dead one would hold every show for the timeout.
  if (live && inst.agent_port && ['ACTIVE', 'RESTART_REQUIRED', 'BACKUP'].includes(inst.status)) {
    try {
      s = await withTimeout((await archiveAgent(plane, inst)).archiveStatus(), 3000);
      rememberArchive(plane, inst.id, s);
      if (!s.enabled && s.restorePoint === null) return undefined;
      return view(s);
    } catch (err) {
      agentError = `the agent does not answer: ${describeError(err)}`;
    }
  }
  if (live && (agentError !== undefined || !['ACTIVE', 'RESTART_REQUIRED', 'BACKUP', 'BUILD'].includes(inst.status))) {
    const stored = await repositoryArchive(plane, inst.id);
    if (!stored) return s?.enabled ? { ...view(s), error: agentError ?? `the instance is ${inst.status}` } : undefined;
    return { ...(s ? { enabled: s.enabled, interval: s.interval, keep_days: s.keepDays } : {}), ...stored, ...(agentError ? { agent_error: agentError } : { agent_error: `the instance is ${inst.status}: its agent is not asked` }) };
  }
  if (!s || (!s.enabled && s.restorePoint === null)) return undefined;
  return view(s);
}

function view(s: ArchiveStatus): Record<string, unknown> {
  return {
    enabled: s.enabled,
    interval: s.interval,
    keep_days: s.keepDays,
    restore_point: s.restorePoint,
    lag_seconds: s.lagSeconds,
    behind: s.behind,
    // The restorable window: from the oldest cut kept to the newest restore point.
    window: { from: s.oldestRestorePoint, to: s.restorePoint },
    ...(s.error ? { error: s.error, failing_since: s.failingSince } : {}),
    cuts: s.cuts,
  };
}

/** The archive's status as the API shows it: show's `archive`, and the answer of the archive action. */
export { view as archiveStatusView };

/**
 * One database back into a running instance (synchronous: the agent answers once the copy is checked).
 * From a backup of the instance (its location), or from the instance's own archive as of a time.
 */
export async function restoreDatabase(plane: ControlPlane, projectId: string, id: string, req: { database: string; backup: string | null; time: string | null; as: string | null; replace: boolean }): Promise<DatabaseRestoreResult & { restored_from: Record<string, unknown> }> {
  const inst = await plane.instance(projectId, id);
  if (inst.status !== 'ACTIVE') throw unprocessable(`Instance ${inst.id} is ${inst.status}: a database is restored into an ACTIVE instance.`);
  if ((req.backup === null) === (req.time === null)) throw badRequest('Give exactly one of "backup" and "restore_time".');
  let storage = plane.repositoryOf(inst.id);
  let key: { keyFile?: string };
  let source: { backupId: string } | { stream: string; time: string };
  let restoredFrom: Record<string, unknown>;
  if (req.backup !== null) {
    const b = await plane.backup(projectId, req.backup);
    if (b.status !== 'COMPLETED') throw unprocessable(`Backup ${b.id} is not COMPLETED (status ${b.status}).`);
    if (b.cluster_id) throw unprocessable(`Backup ${b.id} is a cluster backup: restore it into a new cluster or instance (cluster create --backup, instance create --backup); one database back from it is not done yet.`);
    const own = storage;
    storage = b.location ?? plane.config.repository;
    // A container reaches its own part of the repository only (docs/compute.md).
    if (plane.compute.repositoryFor && storage !== own) throw unprocessable(`Backup ${b.id} is in ${storage}, which instance ${inst.id} cannot reach under the ${plane.compute.name} driver: restore a database from the instance's own backups or archive, or create an instance from backup ${b.id}.`);
    source = { backupId: b.id };
    key = await plane.restoreKey(inst, b.instance_id, storage, b.id);
    restoredFrom = await backupRestoredFrom(plane, b, null);
  } else {
    // The cut is chosen here first, under the key: a window or cut that does not authenticate (a storage
    // operator's edit) is refused with 422 naming it, before the agent starts anything. The agent chooses
    // the cut again by the time ("latest" is the newest restore point by then), the same one.
    const { t } = restoreTime(req.time, '"restore"."restore_time"');
    const c = await chooseCut(plane, inst.id, t);
    if (!c) throw unprocessable(`Instance ${inst.id} has no archive: switch archiving on (instance archive --on), or restore from a backup.`);
    key = await plane.restoreKey(inst, inst.id, storage, c.cut, inst.id);
    source = { stream: inst.id, time: c.time };
    restoredFrom = archiveRestoredFrom(c, t);
  }
  const agent = await archiveAgent(plane, inst);
  let result: DatabaseRestoreResult;
  try {
    result = await agentCall(agent.restoreDatabase({ database: req.database, storage, ...key, ...source, ...(req.as ? { as: req.as } : {}), replace: req.replace }));
  } finally {
    await plane.compute.removeRestoreKey?.(inst).catch((err: unknown) => plane.log(`instance ${inst.id}: removing the restore key: ${describeError(err)}`));
  }
  plane.log(`instance ${inst.id}: database ${req.database} restored as ${result.as} from ${result.from} (${result.docCount} documents)`);
  return { ...result, restored_from: restoredFrom };
}

// ---- after the instance: retention of a deleted instance's archive ----------------------------

/**
 * Called by instance.delete once the agent is gone: the stream is marked retired with the instance's
 * keep_days, so its restore points stay usable that long and are then removed (archive.expire). A
 * repository that does not answer does not hold the delete up: the reason is logged.
 */
export async function retireArchive(plane: ControlPlane, inst: Row<'instances'>): Promise<number | null> {
  const keepDays = archiveStatuses(plane).get(inst.id)?.keepDays ?? DEFAULT_KEEP_DAYS;
  let kept: number | null = null;
  try {
    if (await plane.withStorage(plane.repositoryOf(inst.id), (repo) => retireStream(repo, inst.id, keepDays))) {
      plane.log(`instance ${inst.id}: its archive is kept ${keepDays} days, then removed`);
      kept = keepDays;
    }
  } catch (err) {
    plane.log(`instance ${inst.id}: its archive could not be marked for removal (${describeError(err)}); it stays in the repository until removed by hand`);
  }
  archiveStatuses(plane).delete(inst.id);
  return kept;
}

/** One archive.expire task an hour, whichever process ticks first (the id is the hour's). */
export const archiveExpireTaskId = (hour: string): string => stableId('archive-expire', hour);

export function registerArchiveTasks(plane: ControlPlane): void {
  plane.tasks.register('archive.expire', {
    resumable: true,
    run: async () => {
      // The repository, and the instances' own parts of it where the compute driver gives them one.
      for (const url of [plane.config.repository, ...(plane.compute.repositoryParts?.(plane.config.repository) ?? [])]) {
        const r = await plane.withStorage(url, (repo) => expireRetired(repo));
        for (const [stream, n] of Object.entries(r.trimmed)) plane.log(`archive ${stream} (instance deleted): retention removed ${n} cuts`);
        for (const stream of r.removed) plane.log(`archive ${stream} (instance deleted): its keep_days have passed; removed`);
      }
      await forgetDeleted(plane);
    },
    // Nothing to put right: the next hour's run takes up what this one left.
    failed: async (task, reason) => plane.log(`archive.expire ${task.id} failed: ${reason}`),
  });
}
