// Instance upgrade to another registered datastore version (Trove's PATCH {"instance": {"datastore_version"}}):
// a durable task that takes a full backup first (kept, named pre-upgrade-...), points the agent at the
// version's CouchDB release directory, restarts CouchDB and checks it runs and reports a version. When the
// new release does not come up, the old release is put back and started, and the task fails with why:
// the instance keeps its version and data. The data files are the same files either way (CouchDB 3.x reads
// the files of every 3.x), so no conversion runs; a downgrade is refused for that reason.
import { randomUUID } from 'node:crypto';
import type { AgentApi } from '../agent/protocol.js';
import { now, type Row } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { agentCall, DATASTORE } from './control.js';
import { withTimeout } from '../util/concurrency.js';
import { badRequest, notImplemented, unprocessable } from './errors.js';

interface UpgradeParams {
  /** The datastore version's name. */
  version: string;
  /** The backup taken first (its row exists from the start, so a retry or recovery finds it). */
  backupId: string;
}

/** Versions compare as dotted numbers ("3.5" < "3.10"); names that are not numbers compare as text. */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
  const pb = b.split(/[.-]/).map((x) => (/^\d+$/.test(x) ? Number(x) : x));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (x === y) continue;
    if (typeof x === 'number' && typeof y === 'number') return x - y;
    return String(x) < String(y) ? -1 : 1;
  }
  return 0;
}

export async function upgradeInstance(plane: ControlPlane, projectId: string, id: string, target: Row<'datastore_versions'>): Promise<void> {
  const inst = await plane.instance(projectId, id);
  // A container runs the CouchDB of its image, whatever a version's release directory says on this host: an
  // upgrade there would record a version it does not run.
  if (plane.compute.imageReleases) {
    throw notImplemented(`Instance upgrade is not available with compute driver ${plane.compute.name}: its instances run the CouchDB of the guest image (docker_image), not a release directory of this host. Build an image with the new CouchDB and create an instance from a backup of this one (create --backup).`);
  }
  if (target.name === inst.datastore_version) throw badRequest(`Instance ${inst.id} already runs ${DATASTORE} ${target.name}: nothing to upgrade.`);
  if (target.active !== 1) throw badRequest(`Datastore version ${target.name} is not active.`);
  if (compareVersions(target.name, inst.datastore_version) < 0) throw badRequest(`Datastore version ${target.name} is older than ${inst.datastore_version}: CouchDB does not support downgrades; restore a backup into a new instance instead.`);
  if (inst.replica_of !== null || (await plane.store.find('instances', { replica_of: inst.id })).length > 0) {
    throw unprocessable(`Instance ${inst.id} is part of a replication set: detach its replicas (or it) before upgrading.`);
  }
  const backupId = randomUUID();
  const task = await plane.claim(projectId, inst.id, 'instance.upgrade', 'UPGRADE', ['ACTIVE'], { version: target.name, backupId } satisfies UpgradeParams, plane.config.backupTimeout + plane.config.taskTimeout, backupId);
  const t = now();
  await plane.store.insert('backups', {
    id: backupId, project_id: projectId, instance_id: inst.id, name: `pre-upgrade-${target.name}`, description: `taken before the upgrade from ${DATASTORE} ${inst.datastore_version} to ${target.name}`,
    status: 'NEW', parent_id: null, location: plane.repositoryOf(inst.id), size_bytes: null, data_bytes: null, files: null, checksum: null,
    datastore: inst.datastore, datastore_version: inst.datastore_version, progress: null, fail_reason: null, task_id: task.id, created: t, updated: t, verified_at: null, verify_result: null, cluster_id: null, cluster: null,
  });
  plane.tasks.start(task);
}

async function runningVersion(agent: AgentApi): Promise<{ ok: boolean; why: string; version?: string }> {
  const s = await withTimeout(agent.status(), 10_000);
  if (s.state !== 'RUNNING' && s.state !== 'RESTART_REQUIRED') return { ok: false, why: `${s.state}${s.reason ? `: ${s.reason}` : ''}` };
  if (!s.version) return { ok: false, why: 'CouchDB does not report its version' };
  return { ok: true, why: '', version: s.version };
}

export function registerUpgradeTasks(plane: ControlPlane): void {
  plane.tasks.register<UpgradeParams>('instance.upgrade', {
    resumable: false,
    run: async (ctx) => {
      const inst = await plane.held(ctx);
      const agent = await plane.compute.agent(inst);
      const { backupId, version } = ctx.params;
      const target = (await plane.store.find('datastore_versions', { datastore: DATASTORE, name: version }))[0];
      if (!target) throw new Error(`datastore version ${version} was removed from the configuration`);

      // 1. A full backup, kept: the way back whatever happens next.
      await plane.store.update('backups', backupId, { status: 'BUILDING', updated: now() }, { task_id: ctx.task.id });
      try {
        const req: Parameters<AgentApi['backup']>[0] = { storage: plane.repositoryOf(inst.id), id: backupId, labels: { instance_id: inst.id, project_id: inst.project_id, reason: 'pre-upgrade' }, ...(await plane.ownKey(inst)) };
        const summary = await agentCall(agent.backup(req));
        await plane.store.update('backups', backupId, {
          status: 'COMPLETED', size_bytes: summary.size, data_bytes: summary.totalBytes ?? summary.bytes, files: summary.files, checksum: summary.checksum,
          location: plane.repositoryOf(inst.id), progress: null, task_id: null, updated: now(),
        }, { task_id: ctx.task.id });
      } catch (err) {
        await plane.store.update('backups', backupId, { status: 'FAILED', fail_reason: describeError(err), task_id: null, updated: now() }, { task_id: ctx.task.id });
        throw new Error(`the backup before the upgrade failed, nothing was changed: ${describeError(err)}`);
      }
      plane.log(`instance ${inst.id}: backup ${backupId} taken before the upgrade to ${DATASTORE} ${version}`);
      await ctx.heartbeat();

      // 2. The new release: settings naming its directory, a restart, and a check that it runs.
      const before = await withTimeout(agent.status(), 10_000).catch(() => null);
      await agentCall(agent.prepare(await plane.settings(inst, { datastoreVersion: version })));
      await agentCall(agent.restart()).catch(() => undefined);
      const after = await runningVersion(agent).catch((err: unknown) => ({ ok: false, why: describeError(err), version: undefined }));
      if (!after.ok) {
        // 3. Back to the old release; the task fails with what the new one did.
        await agentCall(agent.prepare(await plane.settings(inst))).catch(() => undefined);
        await agentCall(agent.restart()).catch(() => undefined);
        throw new Error(`CouchDB did not run from ${DATASTORE} ${version}'s release (${after.why}); the instance is back on ${inst.datastore_version} (backup ${backupId} was taken first)`);
      }
      plane.log(`instance ${inst.id}: upgraded from ${DATASTORE} ${inst.datastore_version}${before?.version ? ` (CouchDB ${before.version})` : ''} to ${version} (CouchDB ${after.version ?? '?'})`);
      await plane.release(inst.id, ctx.task.id, null, { datastore_version: version, engine: target.couchdb_home ? 'couchdb' : plane.compute.engine.kind });
    },
    failed: async (task, reason) => {
      if (task.backup_id) await plane.store.update('backups', task.backup_id, { status: 'FAILED', fail_reason: reason, progress: null, task_id: null, updated: now() }, { task_id: task.id, status: ['NEW', 'BUILDING', 'SAVING'] });
      if (task.instance_id) await plane.release(task.instance_id, task.id, reason);
    },
  });
}
