// Backups in the control plane (Trove's /backups): create claims the instance (BACKUP) while its agent
// writes a physical backup to the repository, delete removes the backup's objects through the backup
// engine; each is a durable task. Incremental parents and dependants are checked in ./incremental.ts.
import { randomUUID } from 'node:crypto';
import type { AgentApi } from '../agent/protocol.js';
import { now, type Row } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { agentCall, RUNNING_BACKUP } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { unprocessable } from './errors.js';
import { refuseIfDepended, resolveParent } from './incremental.js';
import { readManifest } from '../backup/repository.js';

export interface CreateBackupRequest {
  name: string;
  instanceId: string;
  description: string | null;
  parentId: string | null;
  incremental?: boolean;
  /** The backup's (and its task's) id; a schedule's run gives one derived from its slot, so a resumed run finds its backup. */
  id?: string;
}

export async function createBackup(plane: ControlPlane, projectId: string, req: CreateBackupRequest): Promise<Row<'backups'>> {
  const inst = await plane.instance(projectId, req.instanceId);
  // Trove's rules: the parent is COMPLETED and of the same instance; `incremental` takes the instance's
  // latest COMPLETED backup, or makes a full backup when it has none.
  const parent = await resolveParent(plane.store, projectId, inst.id, req.parentId, req.incremental ?? false);
  const id = req.id ?? randomUUID();
  // `incremental` without a parent id may fall back to a full backup when the latest was written with another key.
  const auto = req.parentId === null && (req.incremental ?? false);
  const task = await plane.claim(projectId, inst.id, 'backup.create', 'BACKUP', ['ACTIVE'], { parent, ...(auto ? { auto } : {}) }, plane.config.backupTimeout, id);
  const t = now();
  const row: Row<'backups'> = {
    id, project_id: projectId, instance_id: inst.id, name: req.name, description: req.description, status: 'NEW', parent_id: parent,
    location: plane.repositoryOf(inst.id), size_bytes: null, data_bytes: null, files: null, checksum: null, datastore: inst.datastore,
    datastore_version: inst.datastore_version, progress: null, fail_reason: null, task_id: task.id, created: t, updated: t,
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

async function removePartialBackup(plane: ControlPlane, task: Row<'tasks'>): Promise<void> {
  const backupId = task.backup_id!;
  try {
    const inst = task.instance_id ? await plane.store.get('instances', task.instance_id) : undefined;
    if (inst?.agent_port) {
      const agent = await plane.compute.agent(inst);
      const until = Date.now() + 10 * 60_000;
      while (Date.now() < until) {
        if (plane.stopping) return; // the next start's reconcile does not redo this: the engine lists it as incomplete
        const p = await withTimeout(agent.progress(), 5000).catch(() => null);
        if (!p || p.phase !== 'backup') break;
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
      if (plane.stopping) return;
    }
    await plane.backups.delete(task.instance_id ? plane.repositoryOf(task.instance_id) : plane.config.repository, backupId, plane.backupKeyFile);
  } catch (err) {
    plane.log(`backup ${backupId}: removing the partial backup: ${describeError(err)}`);
  }
}

export function registerBackupTasks(plane: ControlPlane): void {
  plane.tasks.register<{ parent?: string | null; auto?: boolean }>('backup.create', {
    resumable: false,
    run: async (ctx) => {
      const inst = await plane.held(ctx);
      const backupId = ctx.task.backup_id!;
      const agent = await plane.compute.agent(inst);
      await plane.store.update('backups', backupId, { status: 'BUILDING', updated: now() }, { task_id: ctx.task.id });
      let polling = true;
      const poll = (async (): Promise<void> => {
        while (polling && !ctx.signal.aborted) {
          await new Promise((r) => setTimeout(r, plane.progressMs));
          if (!polling) break;
          try {
            const p = await withTimeout(agent.progress(), 5000);
            if (p && polling) {
              await plane.store.update('backups', backupId, { progress: JSON.stringify(p), status: p.bytesDone > 0 ? 'SAVING' : 'BUILDING', updated: now() }, { task_id: ctx.task.id, status: ['BUILDING', 'SAVING'] });
              await ctx.heartbeat();
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
          location: summary.location || storage, progress: null, updated: now(),
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
        // The partial backup is removed from the repository once the agent no longer writes it (in the
        // background: recovery at start does not wait for it).
        void removePartialBackup(plane, task);
      }
      if (task.instance_id) await plane.release(task.instance_id, task.id, null);
    },
  });

  plane.tasks.register('backup.delete', {
    resumable: true,
    run: async (ctx) => {
      const b = await plane.store.get('backups', ctx.task.backup_id!);
      if (!b) return;
      await plane.backups.delete(b.location ?? plane.config.repository, b.id, plane.backupKeyFile);
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
