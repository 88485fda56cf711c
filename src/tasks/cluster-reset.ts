// Trove's cluster `reset-status` action ({"reset-status": {}}; `openstack database cluster force delete` sends
// it before the delete). Trove sets the task to NONE whatever runs; here a task that runs is never cut short
// (it ends by itself by its deadline, task_timeout), and NONE is never claimed for a cluster that was never
// ready: what is reset is a failed grow, shrink or rolling restart (task ERROR), so that it may be tried again.
import { now, type Row } from '../state/index.js';
import type { ControlPlane } from './control.js';
import { unprocessable } from './errors.js';
import { CREATE_FAILED, findCluster } from './clusters.js';

export async function resetClusterStatus(plane: ControlPlane, projectId: string, ref: string): Promise<Row<'clusters'>> {
  const c = await findCluster(plane, projectId, ref);
  if (c.task_id !== null && !(await plane.tasks.expireIfOverdue(c.task_id))) {
    const holder = await plane.store.get('tasks', c.task_id);
    if (holder && (holder.status === 'NEW' || holder.status === 'RUNNING')) {
      throw unprocessable(`Cluster ${c.id} is busy: its ${holder.kind} task ${holder.id} runs (task ${c.task_name}) and is not reset; it ends by itself by ${holder.deadline ?? 'its end'}.`);
    }
  }
  const current = (await plane.store.get('clusters', c.id))!;
  if (current.task_name !== 'ERROR' || (current.fault ?? '').startsWith(CREATE_FAILED)) return current;
  await plane.store.update('clusters', c.id, { task_name: 'NONE', fault: null, updated: now() }, { task_id: current.task_id, task_name: 'ERROR' });
  plane.log(`cluster ${c.id}: status reset from ERROR (${current.fault ?? 'no reason kept'}) to NONE`);
  return (await plane.store.get('clusters', c.id))!;
}
