// Verify as a service (issue 23): a `backup.verify` task reads a COMPLETED backup back whole in the control
// plane, through the backup engine's verify (every object, every record's authentication, every file's
// SHA-256, and the parts of its ancestors it uses), with the keys a restore would use: the manifest must
// authenticate under the key its keyId names, derived from the master key, and that key must be the
// backup's instance's (docs/backup-format.md, "Key hierarchy"). The answer is recorded on the backup
// (verified_at, verify_result: ok, or what was found, naming the object) so that an operator knows a backup
// restores before needing it. Nothing is written to the repository and the instance is not held: an
// instance may back up, restore or be deleted while its backups are verified.
import { clusterRecord } from './cluster-backup.js';
import { InstanceKeys } from '../crypto/instance-keys.js';
import { now, type Row } from '../state/index.js';
import type { ControlPlane } from './control.js';
import { unprocessable } from './errors.js';

export const VERIFY_KIND = 'backup.verify';
export const VERIFY_RUNNING = 'running';

/** Starts verifying a COMPLETED backup (or answers the one already being verified); returns the backup as it is now. */
export async function requestVerify(plane: ControlPlane, projectId: string, id: string): Promise<Row<'backups'>> {
  const b = await plane.backup(projectId, id);
  if (b.status !== 'COMPLETED') throw unprocessable(`Backup ${b.name} (${b.id}) is ${b.status}: only a COMPLETED backup can be verified.`);
  if (await verifying(plane, b.id)) return b;
  const task = await plane.tasks.create({ kind: VERIFY_KIND, projectId, backupId: b.id, instanceId: b.instance_id, timeout: plane.config.backupTimeout });
  const t = now();
  if (!(await plane.store.update('backups', b.id, { verified_at: t, verify_result: VERIFY_RUNNING }, { status: 'COMPLETED' }))) {
    await plane.tasks.discard(task.id);
    throw unprocessable(`Backup ${b.name} (${b.id}) changed (deleted?) while its verify was requested: try again.`);
  }
  plane.tasks.start(task);
  return { ...b, verified_at: t, verify_result: VERIFY_RUNNING };
}

async function verifying(plane: ControlPlane, backupId: string): Promise<boolean> {
  const open = await plane.store.find('tasks', { backup_id: backupId, kind: VERIFY_KIND, status: ['NEW', 'RUNNING'] });
  return open.length > 0;
}

/** What is wrong with a backup that reads back whole: a key that is not its instance's, or another checksum than recorded. */
function mismatch(plane: ControlPlane, b: Row<'backups'>, r: { keyId: string | null | undefined; checksum: string }): string | null {
  if (plane.instanceKeys && r.keyId === null) return `backup ${b.id} is not encrypted, but this server encrypts: its manifest cannot be authenticated`;
  if (plane.instanceKeys && r.keyId !== undefined && r.keyId !== null && b.instance_id && r.keyId !== InstanceKeys.keyId(b.instance_id)) {
    return `the manifest of backup ${b.id} names key ${r.keyId}, not the key of its instance ${b.instance_id}`;
  }
  if (b.checksum !== null && r.checksum !== b.checksum) return `backup ${b.id} holds checksum ${r.checksum}, the control plane recorded ${b.checksum}`;
  return null;
}

export function registerVerifyTasks(plane: ControlPlane): void {
  plane.tasks.register(VERIFY_KIND, {
    // It only reads: a run interrupted by a stop is simply run again.
    resumable: true,
    run: async (ctx) => {
      const b = await plane.store.get('backups', ctx.task.backup_id!);
      if (!b || b.status !== 'COMPLETED') return; // deleted since
      if (!plane.backups.verify) throw new Error('this backup engine cannot verify backups');
      // A cluster backup is read back part by part, each against its member's key and recorded checksum.
      const parts = clusterRecord(b)?.parts.map((p) => ({ ...b, id: p.id, location: p.location, instance_id: p.instanceId, checksum: p.checksum })) ?? [b];
      for (const x of parts) {
        const r = await plane.backups.verify(x.location ?? plane.config.repository, x.id, plane.backupKeyFile);
        const wrong = mismatch(plane, x, r);
        if (wrong) throw new Error(wrong);
      }
      await plane.store.update('backups', b.id, { verified_at: now(), verify_result: 'ok' }, { status: 'COMPLETED' });
    },
    failed: async (task, reason) => {
      if (task.backup_id) await plane.store.update('backups', task.backup_id, { verified_at: now(), verify_result: `failed: ${reason}` }, { status: 'COMPLETED' });
    },
  });
}
