// Retention: which backups a policy keeps, and deleting the rest. Like restic's forget: keep the N
// newest, the newest of each of the last D days and W ISO weeks that have backups. A backup that a
// kept backup depends on (an incremental's ancestors) is always kept too. Only authenticated manifests
// count: an unverified one is kept, never counted, and what it may need is kept too.
import type { Backend } from '../storage/backend.js';
import type { KeyMaterial } from '../crypto/keys.js';
import { CouchtroveError } from '../util/errors.js';
import type { ManifestBody } from './format.js';
import { removeObjects, summaryOf } from './backup.js';
import { mayNeed, scan, type UnverifiedBackup } from './list.js';
import type { BackupSummary } from './types.js';

export interface RetentionPolicy {
  keepLast?: number;
  keepDaily?: number;
  keepWeekly?: number;
}

export interface ExpireResult {
  keep: { backup: BackupSummary; reasons: string[] }[];
  /** What the policy deletes (with `held`, what it would delete but did not). */
  remove: BackupSummary[];
  /** Manifests that do not authenticate: kept, not counted by the policy. */
  unverified: UnverifiedBackup[];
  /** Why nothing was deleted: an unverified backup whose needs are unknown. null when the policy applied. */
  held: string | null;
  dryRun: boolean;
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** Pure: the decision for a list of backups (oldest first or any order); `needed`: backups kept whatever the policy, with why. */
export function plan(backups: ManifestBody[], policy: RetentionPolicy, needed: Map<string, string[]> = new Map()): { keep: Map<string, string[]>; remove: ManifestBody[] } {
  const { keepLast = 0, keepDaily = 0, keepWeekly = 0 } = policy;
  if (keepLast + keepDaily + keepWeekly === 0) throw new CouchtroveError('a retention policy must keep something: give --keep-last, --keep-daily or --keep-weekly');
  const newest = [...backups].sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0));
  const keep = new Map<string, string[]>();
  const mark = (id: string, why: string) => keep.set(id, [...(keep.get(id) ?? []), why]);
  newest.slice(0, keepLast).forEach((b, i) => mark(b.id, `last ${i + 1}`));
  const buckets = (n: number, key: (d: Date) => string, label: string) => {
    const seen = new Set<string>();
    for (const b of newest) {
      const k = key(new Date(b.created));
      if (seen.has(k)) continue;
      if (seen.size >= n) break;
      seen.add(k);
      mark(b.id, `${label} ${k}`);
    }
  };
  buckets(keepDaily, (d) => d.toISOString().slice(0, 10), 'daily');
  buckets(keepWeekly, isoWeek, 'weekly');
  for (const [id, why] of needed) if (backups.some((b) => b.id === id)) for (const w of why) mark(id, w);
  // Ancestors of what is kept stay: an incremental cannot be restored without them.
  const byId = new Map(backups.map((b) => [b.id, b]));
  for (const id of [...keep.keys()]) {
    for (const dep of byId.get(id)?.depends ?? []) if (byId.has(dep)) mark(dep, `needed by ${id}`);
  }
  return { keep, remove: newest.filter((b) => !keep.has(b.id)) };
}

export async function expireBackups(storage: Backend, policy: RetentionPolicy, dryRun: boolean, key?: KeyMaterial): Promise<ExpireResult> {
  const { backups, unverified, writing } = await scan(storage, key);
  // An unverified backup's parents are kept on the evidence of its catalog, never dropped on its word.
  const needed = new Map<string, string[]>();
  let held: string | null = null;
  for (const u of unverified) {
    const needs = await mayNeed(storage, u.id, key);
    if (needs === null) {
      held ??= `backup ${u.id} does not authenticate (${u.reason}) and its catalog cannot be read, so any backup may be one it needs${key ? '' : ' (give --key-file)'}: nothing is deleted until it is repaired or deleted`;
      continue;
    }
    for (const id of needs) needed.set(id, [...(needed.get(id) ?? []), `needed by unverified ${u.id}`]);
  }
  // A backup being written builds on these (its lock says so).
  for (const w of writing) for (const id of Array.isArray(w.depends) ? w.depends : []) needed.set(id, [...(needed.get(id) ?? []), `needed by ${w.id} (being written)`]);
  const { keep, remove } = plan(backups, policy, needed);
  if (!dryRun && !held) {
    // Newest first: a removed incremental goes before the removed parent it depends on.
    for (const b of remove) await removeObjects(storage, b.id);
  }
  return {
    keep: backups.filter((b) => keep.has(b.id)).map((b) => ({ backup: summaryOf(b), reasons: keep.get(b.id)! })),
    remove: remove.map(summaryOf),
    unverified,
    held,
    dryRun,
  };
}
