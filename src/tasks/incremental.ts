// Incremental backups in the control plane: which backup an incremental builds on (Trove's rules) and
// which backups cannot be deleted because a kept incremental depends on them.
import type { Row, StateStore } from '../state/index.js';
import { badRequest, notFound, unprocessable } from './errors.js';

/**
 * The parent of a new backup: the given parent_id (COMPLETED, same project and instance), or with
 * `incremental` the instance's latest COMPLETED backup (null when it has none: a full backup, as Trove
 * does).
 */
/** Whose backups a parent is looked for among: an instance's, or a cluster's (./cluster-backup.ts). */
export type BackupOwner = { instance_id: string } | { cluster_id: string };

export async function resolveParent(store: StateStore, projectId: string, owner: BackupOwner | string, parentId: string | null, incremental: boolean): Promise<string | null> {
  const of: BackupOwner = typeof owner === 'string' ? { instance_id: owner } : owner;
  const [key, id] = 'instance_id' in of ? (['instance_id', of.instance_id] as const) : (['cluster_id', of.cluster_id] as const);
  const kind = key === 'instance_id' ? 'instance' : 'cluster';
  if (parentId !== null) {
    const p = await store.get('backups', parentId);
    if (!p || p.project_id !== projectId) throw notFound(`Backup ${parentId} could not be found.`);
    if ((p[key] ?? null) !== id) throw badRequest(`Parent backup ${p.id} is of ${p.cluster_id ? `cluster ${p.cluster_id}` : `instance ${p.instance_id ?? '(deleted)'}`}, not ${kind} ${id}: an incremental backup builds on a backup of the same ${kind}.`);
    if (p.status !== 'COMPLETED') throw unprocessable(`Parent backup ${p.id} is not COMPLETED (status ${p.status}): an incremental backup needs a COMPLETED parent.`);
    await refuseIfBeingDeleted(store, p);
    return p.id;
  }
  if (!incremental) return null;
  const done = await store.find('backups', { project_id: projectId, [key]: id, status: 'COMPLETED' });
  for (const b of [...done].reverse()) {
    if (await beingDeleted(store, b)) continue;
    return b.id;
  }
  return null;
}

async function beingDeleted(store: StateStore, b: Row<'backups'>): Promise<boolean> {
  if (!b.task_id) return false;
  const t = await store.get('tasks', b.task_id);
  return t !== undefined && t.kind === 'backup.delete' && (t.status === 'NEW' || t.status === 'RUNNING');
}

async function refuseIfBeingDeleted(store: StateStore, b: Row<'backups'>): Promise<void> {
  if (await beingDeleted(store, b)) throw unprocessable(`Parent backup ${b.id} is being deleted: it cannot be a parent.`);
}

/** Backups whose data an incremental uses: its parent, the parent's parent, ... (nearest first). */
export function ancestors(id: string, byId: Map<string, Row<'backups'>>): string[] {
  const out: string[] = [];
  const seen = new Set<string>([id]);
  let p = byId.get(id)?.parent_id ?? null;
  while (p !== null && !seen.has(p)) {
    out.push(p);
    seen.add(p);
    p = byId.get(p)?.parent_id ?? null;
  }
  return out;
}

/** 422 when an incremental backup that is kept (not FAILED) builds on b. */
export async function refuseIfDepended(store: StateStore, b: Row<'backups'>): Promise<void> {
  const children = (await store.find('backups', { parent_id: b.id })).filter((c) => c.status !== 'FAILED');
  if (children.length === 0) return;
  const ids = children.map((c) => c.id);
  throw unprocessable(`Backup ${b.id} cannot be deleted: incremental backup${ids.length > 1 ? 's' : ''} ${ids.join(', ')} depend${ids.length > 1 ? '' : 's'} on it. Delete ${ids.length > 1 ? 'them' : 'it'} first (newest first).`);
}
