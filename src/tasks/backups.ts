// Backups in the control plane (Trove's /backups): create claims the instance (BACKUP) while its agent
// writes a physical backup to the repository, delete removes the backup's objects through the backup
// engine; each is a durable task. Incremental parents and dependants are checked in ./incremental.ts.
import { randomUUID } from 'node:crypto';
import type { AgentApi } from '../agent/protocol.js';
import { now, type Row } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { agentCall, RUNNING_BACKUP, stableId } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { STALE_MS } from '../backup/lock.js';
import { ServiceError, unprocessable } from './errors.js';
import { refuseIfDepended, resolveParent } from './incremental.js';
import { readManifest } from '../backup/repository.js';
import { storedBackups } from './cluster-backup.js';

export interface CreateBackupRequest {
  name: string;
  instanceId: string;
  description: string | null;
  parentId: string | null;
  incremental?: boolean;
  /**
   * The backup's id; a schedule's run gives one derived from its slot, so a resumed run finds its backup.
   * Its backup.create task then gets an id derived from it (backupTaskId): one request per id, ever.
   */
  id?: string;
}

/** The backup.create task of a backup whose id was given: its insert is the one decision that the backup is requested. */
export const backupTaskId = (backupId: string): string => stableId('backup-create', backupId);

/**
 * What to throw when requesting backup `id` (a schedule slot's, when given) failed: 422 when its task exists,
 * as another run of the same slot (taken over while this one still ran) requested it first; else `err`.
 */
export async function requestFailure(plane: ControlPlane, id: string | undefined, err: unknown): Promise<unknown> {
  if (id !== undefined && !(err instanceof ServiceError) && (await plane.store.get('tasks', backupTaskId(id)))) return unprocessable(`Backup ${id} was already requested.`);
  return err;
}

export async function createBackup(plane: ControlPlane, projectId: string, req: CreateBackupRequest): Promise<Row<'backups'>> {
  const inst = await plane.instance(projectId, req.instanceId);
  // Trove's rules: the parent is COMPLETED and of the same instance; `incremental` takes the instance's
  // latest COMPLETED backup, or makes a full backup when it has none.
  const parent = await resolveParent(plane.store, projectId, inst.id, req.parentId, req.incremental ?? false);
  const id = req.id ?? randomUUID();
  // `incremental` without a parent id may fall back to a full backup when the latest was written with another key.
  const auto = req.parentId === null && (req.incremental ?? false);
  let task: Row<'tasks'>;
  try {
    task = await plane.claim(projectId, inst.id, 'backup.create', 'BACKUP', ['ACTIVE'], { parent, ...(auto ? { auto } : {}) }, plane.config.backupTimeout, id, req.id ? backupTaskId(id) : undefined);
  } catch (err) {
    throw await requestFailure(plane, req.id, err);
  }
  const t = now();
  const row: Row<'backups'> = {
    id, project_id: projectId, instance_id: inst.id, name: req.name, description: req.description, status: 'NEW', parent_id: parent,
    location: plane.repositoryOf(inst.id), size_bytes: null, data_bytes: null, files: null, checksum: null, datastore: inst.datastore,
    datastore_version: inst.datastore_version, progress: null, fail_reason: null, task_id: task.id, created: t, updated: t, verified_at: null, verify_result: null, cluster_id: null, cluster: null,
  };
  await plane.store.insert('backups', row);
  plane.tasks.start(task);
  return row;
}

export async function deleteBackup(plane: ControlPlane, projectId: string, id: string): Promise<void> {
  let b = await plane.backup(projectId, id);
  if ((RUNNING_BACKUP as readonly string[]).includes(b.status)) {
    const expired = b.task_id ? await plane.tasks.expireIfOverdue(b.task_id) : true;
    if (expired) await plane.reconcile();
    b = await plane.backup(projectId, id);
    if ((RUNNING_BACKUP as readonly string[]).includes(b.status)) {
      const task = b.task_id ? await plane.store.get('tasks', b.task_id) : undefined;
      throw unprocessable(`Backup ${id} is still running (status ${b.status}${progressText(b.progress)}): it can be deleted once it completes, fails or expires${task?.deadline ? ` at ${task.deadline}` : ''}.`);
    }
  }
  if (b.task_id) {
    const t = await plane.store.get('tasks', b.task_id);
    if (t && t.kind === 'backup.delete' && (t.status === 'NEW' || t.status === 'RUNNING')) return; // already being deleted
  }
  await refuseIfDepended(plane.store, b);
  const task = await plane.tasks.create({ kind: 'backup.delete', projectId, backupId: id, timeout: plane.config.taskTimeout });
  if (!(await plane.store.update('backups', id, { task_id: task.id, updated: now() }, { status: ['COMPLETED', 'FAILED', 'DELETE_FAILED'], task_id: b.task_id }))) {
    await plane.tasks.discard(task.id);
    throw unprocessable(`Backup ${id} changed while it was being deleted: try again.`);
  }
  plane.tasks.start(task);
}

/** The task that removes a failed backup's objects: one per backup. */
export const discardTaskId = (backupId: string): string => stableId('backup-discard', backupId);

/**
 * How long a backup.discard task may take: its agent's last writes (a killed agent's engine stops at once,
 * a live one finishes its current object), then the writer's lock going stale (STALE_MS after its last
 * heartbeat: a writer in a container is not in this host's process table), with room for retries.
 */
const DISCARD_TIMEOUT_S = (10 * 60_000 + STALE_MS + 5 * 60_000) / 1000;

/** Starts (once per backup, durably) the removal of a failed backup's partial objects. */
async function discardPartialBackup(plane: ControlPlane, task: Row<'tasks'>): Promise<void> {
  const id = discardTaskId(task.backup_id!);
  try {
    const t = await plane.tasks.create({ kind: 'backup.discard', id, projectId: task.project_id, backupId: task.backup_id, params: { instanceId: task.instance_id }, timeout: DISCARD_TIMEOUT_S });
    plane.tasks.start(t);
  } catch (err) {
    if (!(await plane.store.get('tasks', id).catch(() => undefined))) plane.log(`backup ${task.backup_id}: removing the partial backup: ${describeError(err)}`);
  }
}

/** Resolves after ms, or at once when the signal aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

export function registerBackupTasks(plane: ControlPlane): void {
  plane.tasks.register<{ parent?: string | null; auto?: boolean }>('backup.create', {
    resumable: false,
    run: async (ctx) => {
      const inst = await plane.held(ctx);
      const backupId = ctx.task.backup_id!;
      const agent = await plane.compute.agent(inst);
      await plane.store.update('backups', backupId, { status: 'BUILDING', updated: now() }, { task_id: ctx.task.id });
      // The task's step follows the backup's status, so that a reason given after a crash names it.
      await ctx.step('BUILDING');
      let polling = true;
      const poll = (async (): Promise<void> => {
        while (polling && !ctx.signal.aborted) {
          await new Promise((r) => setTimeout(r, plane.progressMs));
          if (!polling) break;
          try {
            const p = await withTimeout(agent.progress(), 5000);
            if (p && polling) {
              const status = p.bytesDone > 0 ? 'SAVING' : 'BUILDING';
              await plane.store.update('backups', backupId, { progress: JSON.stringify(p), status, updated: now() }, { task_id: ctx.task.id, status: ['BUILDING', 'SAVING'] });
              // The task's step says where the backup is, so a takeover's reason names it ("at step SAVING 55%").
              await ctx.step(p.bytesTotal > 0 ? `${status} ${Math.floor((100 * p.bytesDone) / p.bytesTotal)}%` : status);
            }
          } catch {
            // progress is best effort
          }
        }
      })();
      try {
        const own = await plane.ownKey(inst);
        const storage = plane.repositoryOf(inst.id);
        const req: Parameters<AgentApi['backup']>[0] = { storage, id: backupId, labels: { instance_id: inst.id, project_id: inst.project_id }, ...own };
        if (ctx.params.parent) req.parent = await sameKeyParent(plane, backupId, ctx.params.parent, storage, own.keyId, ctx.params.auto === true);
        const summary = await agentCall(agent.backup(req));
        polling = false;
        await poll;
        const done = await plane.store.update('backups', backupId, {
          status: 'COMPLETED', size_bytes: summary.size, data_bytes: summary.totalBytes ?? summary.bytes, files: summary.files, checksum: summary.checksum,
          // The URL the agent was given, as repositoryOf names it (the agent's own spelling may differ, e.g.
          // swift://c/p/): the parent, lending and database-restore checks compare the two.
          location: storage, progress: null, updated: now(),
        }, { task_id: ctx.task.id, status: [...RUNNING_BACKUP] });
        if (!done) throw new Error('the backup row changed while the backup ran');
      } finally {
        polling = false;
        await poll;
      }
      await plane.release(inst.id, ctx.task.id, null);
    },
    failed: async (task, reason) => {
      if (task.backup_id) {
        await plane.store.update('backups', task.backup_id, { status: 'FAILED', fail_reason: reason, progress: null, updated: now() }, { task_id: task.id });
        // The partial backup is removed from the repository once nobody writes it: a durable task, so a
        // server that stops meanwhile, or a writer whose lock still looks alive, only delays it.
        await discardPartialBackup(plane, task);
      }
      if (task.instance_id) await plane.release(task.instance_id, task.id, null);
    },
  });

  plane.tasks.register<{ instanceId?: string | null }>('backup.discard', {
    resumable: true,
    run: async (ctx) => {
      const backupId = ctx.task.backup_id!;
      // A backup whose task failed may still be written by a live agent (the control plane gave up on it,
      // or lost it): its own progress says when it stops.
      const inst = ctx.params.instanceId ? await plane.store.get('instances', ctx.params.instanceId) : undefined;
      if (inst?.agent_port) {
        const agent = await plane.compute.agent(inst).catch(() => null);
        while (agent && !ctx.signal.aborted) {
          const p = await withTimeout(agent.progress(), 5000).catch(() => null);
          if (!p || p.phase !== 'backup') break;
          await ctx.heartbeat();
          await pause(plane.progressMs, ctx.signal);
        }
      }
      // The agent may have completed it after the control plane gave up (the server was killed, the task
      // taken over): a backup whose manifest authenticates and names this instance is kept and recorded.
      // Where its agent wrote it: the backup row's location (a container's own part of the repository).
      const where = (await plane.store.get('backups', backupId))?.location ?? (ctx.params.instanceId ? plane.repositoryOf(ctx.params.instanceId) : plane.config.repository);
      const summary = plane.backups.stored ? await plane.backups.stored(where, backupId, plane.backupKeyFile).catch(() => null) : null;
      if (summary && summary.labels.instance_id === ctx.params.instanceId) {
        const kept = await plane.store.update('backups', backupId, {
          status: 'COMPLETED', fail_reason: null, size_bytes: summary.size, data_bytes: summary.totalBytes, files: summary.files, checksum: summary.checksum, progress: null, updated: now(),
        }, { status: 'FAILED' });
        if (kept) plane.log(`backup ${backupId}: its agent completed it after its task failed: kept, COMPLETED`);
        return;
      }
      // The engine refuses while the writer's lock looks alive (a killed writer in a container beats no more
      // but is not in this host's process table): tried again until the lock is stale.
      let delay = Math.min(plane.progressMs, 15_000);
      for (;;) {
        if (ctx.signal.aborted) throw ctx.signal.reason instanceof Error ? ctx.signal.reason : new Error('aborted');
        try {
          await plane.backups.delete(where, backupId, plane.backupKeyFile);
          return;
        } catch (err) {
          plane.log(`backup ${backupId}: removing the partial backup (tried again in ${Math.round(delay / 1000)} s): ${describeError(err)}`);
        }
        await ctx.heartbeat();
        await pause(delay, ctx.signal);
        delay = Math.min(delay * 2, 15_000);
      }
    },
    failed: async (task, reason) => {
      plane.log(`backup ${task.backup_id}: the partial backup could not be removed (${reason}): agent list reports it as incomplete, agent delete --backup ${task.backup_id} removes it`);
    },
  });

  plane.tasks.register('backup.delete', {
    resumable: true,
    run: async (ctx) => {
      const b = await plane.store.get('backups', ctx.task.backup_id!);
      if (!b) return;
      // A cluster backup's objects are its parts (./cluster-backup.ts).
      for (const o of storedBackups(plane, b)) await plane.backups.delete(o.location, o.id, plane.backupKeyFile);
      await plane.store.remove('backups', b.id, { task_id: ctx.task.id });
    },
    failed: async (task, reason) => {
      if (task.backup_id) await plane.store.update('backups', task.backup_id, { status: 'DELETE_FAILED', fail_reason: reason, updated: now() }, { task_id: task.id });
    },
  });
}

/**
 * An incremental chain has one key and one repository. The parent is kept when it was written with the
 * instance's key where the instance writes now; a parent written with the master key (before per-instance
 * keys) or elsewhere makes an automatic incremental a full backup (recorded: parent_id null) and an
 * explicit one fail with the reason.
 */
async function sameKeyParent(plane: ControlPlane, backupId: string, parentId: string, storage: string, keyId: string | undefined, auto: boolean): Promise<string | undefined> {
  const p = await plane.store.get('backups', parentId);
  const where = p?.location ?? plane.config.repository;
  let why: string | null = null;
  if (plane.compute.repositoryFor && where !== storage) why = `backup ${parentId} is in ${where}, not where this instance writes (${storage})`;
  else if (keyId !== undefined) {
    const parentKey = await plane.withStorage(where, async (repo) => (await readManifest(repo, parentId)).body.encryption?.keyId).catch(() => keyId);
    if (parentKey !== keyId) why = `backup ${parentId} was written with key ${parentKey ?? 'master'}, not this instance's ${keyId}`;
  }
  if (why === null) return parentId;
  if (!auto) throw unprocessable(`${why}: an incremental backup cannot build on it; take a full backup first.`);
  plane.log(`backup ${backupId}: ${why}; taking a full backup instead of an incremental`);
  await plane.store.update('backups', backupId, { parent_id: null, updated: now() });
  return undefined;
}

/** ", 42% done" from a backup row's progress JSON; empty when there is none to tell. */
function progressText(p: string | null): string {
  if (!p) return '';
  try {
    const v = JSON.parse(p) as { bytesDone: number; bytesTotal: number };
    return v.bytesTotal > 0 ? `, ${Math.floor((100 * v.bytesDone) / v.bytesTotal)}% done` : '';
  } catch {
    return '';
  }
}
