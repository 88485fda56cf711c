// Recovery by instance and time (issue 23; docs/operations.md, "Recover an instance to a time"): a live or
// deleted instance's archive (or, without one, its newest backup) as of a time people type, deleted
// instances that can still be restored (`GET /instances?deleted=true`), what a delete keeps, and the
// `restored_from` every restore reports. The archive's window is always read from the repository, so an
// instance whose agent is gone (ERROR, SHUTDOWN, deleted) still shows it.
import type { Row } from '../state/index.js';
import { now } from '../state/index.js';
import { describeError } from '../util/errors.js';
import { mapLimit, withTimeout } from '../util/concurrency.js';
import { parseRestoreTime, RESTORE_TIME_FORMS, type RestoreTime } from '../util/restore-time.js';
import { archiveWindow, findCut, listCuts, archiveStorage, type CutRef } from '../backup/archive.js';
import { openManifest, readManifest } from '../backup/repository.js';
import { KeyRing, readKeyFile } from '../crypto/keys.js';
import { DEFAULT_KEEP_DAYS } from '../agent/archiver.js';
import type { ControlPlane } from './control.js';
import { badRequest, notFound, unprocessable } from './errors.js';
import { archiveStatuses } from './archive.js';

const DAY_MS = 86_400_000;

/** A restore time from the API; 400 naming the accepted forms. */
export function restoreTime(raw: unknown, where: string): { t: RestoreTime; given: string } {
  const t = typeof raw === 'string' && raw.length <= 80 ? parseRestoreTime(raw) : null;
  if (!t) throw badRequest(`${where} must be one of ${RESTORE_TIME_FORMS}; got ${JSON.stringify(typeof raw === 'string' ? raw.slice(0, 80) : raw)}.`);
  return { t, given: (raw as string).trim() };
}

/** The server's key ring (every instance key derives from it), or undefined without encryption. */
async function keyRing(plane: ControlPlane): Promise<KeyRing | undefined> {
  return plane.backupKeyFile ? new KeyRing(await readKeyFile(plane.backupKeyFile)) : undefined;
}

/** What a restore used, shown as `restored_from` (snake_case: an API answer). */
export interface RestoredFrom {
  instance_id: string;
  instance_name?: string;
  /** When the source instance was deleted; absent while it lives. */
  instance_deleted?: string;
  /** archive: a cut of its continuous archive; backup: one of its backups. */
  from: 'archive' | 'backup';
  /** What was asked: "latest", or the time in UTC. */
  requested_time: string;
  /** Set when the time was typed without a zone: it was read as UTC. */
  time_zone_note?: string;
  /** The restore point used: the cut's end, or the backup's completion. No write after it is in the copy. */
  cut_time: string;
  /** The archive cut; absent for a backup. */
  cut?: string;
  /** The full backup the copy is built on: the archive chain's base cut, or the backup itself (or its full parent). */
  base_backup: string;
  backup_name?: string;
}

const requested = (t: RestoreTime): Pick<RestoredFrom, 'requested_time' | 'time_zone_note'> =>
  t.latest ? { requested_time: 'latest' } : { requested_time: new Date(t.ms).toISOString(), ...(t.utcAssumed ? { time_zone_note: 'no zone was given: read as UTC' } : {}) };

export interface ArchiveChoice {
  stream: string;
  /** The time handed to the agent (ISO): the one asked, or the newest restore point for "latest". */
  time: string;
  cut: string;
  cutEnd: number;
  base: string;
}

/**
 * The archive cut a restore of instance `streamOf` as of `t` uses, or null when the instance has no archive.
 * A time outside the window is refused with 422 naming it. With the server's key nothing unauthenticated
 * decides (findCut).
 */
export async function chooseCut(plane: ControlPlane, streamOf: string, t: RestoreTime): Promise<ArchiveChoice | null> {
  const key = await keyRing(plane);
  return plane.withStorage(plane.repositoryOf(streamOf), async (storage) => {
    try {
      const { cuts } = await listCuts(archiveStorage(storage, streamOf));
      if (cuts.length === 0) return null;
      const newest = t.latest ? (await archiveWindow(storage, streamOf, key)).newest : null;
      const ms = t.latest ? newest! : t.ms;
      const cut = await findCut(storage, streamOf, ms, key);
      const base = [...cuts].reverse().find((c) => c.base && c.at <= cut.at);
      return { stream: streamOf, time: new Date(ms).toISOString(), cut: cut.id, cutEnd: cut.end, base: base?.id ?? cut.id };
    } catch (err) {
      const when = t.latest ? 'its newest restore point' : new Date(t.ms).toISOString();
      throw unprocessable(`Instance ${streamOf} has no restore point for ${when}: ${describeError(err)}`);
    }
  });
}

export function archiveRestoredFrom(c: ArchiveChoice, t: RestoreTime): Omit<RestoredFrom, 'instance_id'> {
  return { from: 'archive', ...requested(t), cut_time: new Date(c.cutEnd).toISOString(), cut: c.cut, base_backup: c.base };
}

/** The full backup an incremental one is built on (its parents followed back; the backup itself when full). */
async function fullBase(plane: ControlPlane, b: Row<'backups'>): Promise<string> {
  let cur = b;
  for (let i = 0; i < 10_000 && cur.parent_id; i++) {
    const p = await plane.store.get('backups', cur.parent_id);
    if (!p) return cur.parent_id;
    cur = p;
  }
  return cur.id;
}

export async function backupRestoredFrom(plane: ControlPlane, b: Row<'backups'>, t: RestoreTime | null): Promise<Omit<RestoredFrom, 'instance_id'>> {
  return {
    from: 'backup', ...(t ? requested(t) : { requested_time: `backup ${b.id}` }), cut_time: new Date(Date.parse(b.updated)).toISOString(),
    base_backup: await fullBase(plane, b), backup_name: b.name,
  };
}

/** The source of `restorePoint.instanceRef`: a live or deleted instance of the project, by id or name. */
export async function findSource(plane: ControlPlane, projectId: string, ref: string): Promise<{ id: string; name: string; deleted: string | null }> {
  // Another project's instance is as missing as one that never was: the same 404.
  const missing = notFound(`Instance ${ref.slice(0, 80)} could not be found, live or deleted (instance list --deleted shows those still restorable).`);
  const live = await plane.store.get('instances', ref);
  if (live) return live.project_id === projectId ? { id: live.id, name: live.name, deleted: null } : Promise.reject(missing);
  const gone = await plane.store.get('deleted_instances', ref);
  if (gone) return gone.project_id === projectId ? { id: gone.id, name: gone.name, deleted: gone.deleted } : Promise.reject(missing);
  const named = [
    ...(await plane.store.find('instances', { project_id: projectId, name: ref })).map((i) => ({ id: i.id, name: i.name, deleted: null as string | null })),
    ...(await plane.store.find('deleted_instances', { project_id: projectId, name: ref })).map((i) => ({ id: i.id, name: i.name, deleted: i.deleted as string | null })),
  ];
  if (named.length === 1) return named[0]!;
  if (named.length === 0) throw missing;
  throw badRequest(`More than one instance is named ${ref}: give the id, one of ${named.map((n) => `${n.id} (${n.deleted ? `deleted ${n.deleted}` : 'live'})`).join(', ')}.`);
}

/**
 * A new instance from `source` as of `t`: its archive's cut when it has an archive, else its newest
 * COMPLETED backup finished at or before the time (so no write after the time is in the copy).
 */
export async function planInstanceRestore(plane: ControlPlane, projectId: string, source: { id: string; name: string; deleted: string | null }, t: RestoreTime): Promise<{ pitr: ArchiveChoice | null; backup: Row<'backups'> | null; restoredFrom: RestoredFrom }> {
  const who = { instance_id: source.id, instance_name: source.name, ...(source.deleted ? { instance_deleted: source.deleted } : {}) };
  const pitr = await chooseCut(plane, source.id, t);
  if (pitr) return { pitr, backup: null, restoredFrom: { ...who, ...archiveRestoredFrom(pitr, t) } };
  const backups = (await plane.store.find('backups', { project_id: projectId, instance_id: source.id, status: 'COMPLETED' }))
    .filter((b) => t.latest || Date.parse(b.updated) <= t.ms)
    .sort((a, b) => a.updated.localeCompare(b.updated));
  const b = backups.at(-1);
  if (!b) throw unprocessable(`Instance ${source.id} (${source.name}) has no archive and no backup completed ${t.latest ? 'at all' : `at or before ${new Date(t.ms).toISOString()}`}: nothing to restore.`);
  return { pitr: null, backup: b, restoredFrom: { ...who, ...(await backupRestoredFrom(plane, b, t)) } };
}

/** The archive of an instance as the repository has it (no agent needed): window and cut count, or null without one. */
export async function repositoryArchive(plane: ControlPlane, instanceId: string, ms = 5000): Promise<Record<string, unknown> | null> {
  try {
    const key = await keyRing(plane);
    const w = await withTimeout(plane.withStorage(plane.repositoryOf(instanceId), (s) => archiveWindow(s, instanceId, key)), ms);
    if (w.cuts === 0) return null;
    const iso = (x: number | null): string | null => (x === null ? null : new Date(x).toISOString());
    return { window: { from: iso(w.oldest), to: iso(w.newest) }, restore_point: iso(w.newest), cuts: w.cuts, read_from: 'repository' };
  } catch (err) {
    return { error: `the archive cannot be read from the repository: ${describeError(err)}`, read_from: 'repository' };
  }
}

/** A cut of an archive as the cut listing shows it (snake_case: an API answer). */
export interface CutView {
  id: string;
  /** A base (a full copy, starting a chain) or an incremental on the previous cut. */
  base: boolean;
  /** The base its chain starts from (itself for a base). */
  base_cut: string;
  /** When its measuring pass began, and its restore point: when it ended (the data restored is as of then). */
  started: string;
  restore_point: string;
  /** Plain bytes it copied, and bytes it stored (compressed, encrypted). */
  bytes?: number;
  size_bytes?: number;
  /** Set when its manifest cannot be read or does not authenticate: a restore through it would be refused. */
  error?: string;
}

export interface CutsQuery {
  /** Restore points at or after / at or before (ms); null: unbounded. */
  from: number | null;
  to: number | null;
  limit: number;
  /** The last cut of the previous page. */
  marker: string | null;
  newestFirst: boolean;
}

/**
 * The cuts of an instance's archive (live or deleted) whose restore point falls in [from, to], a page at a
 * time: the listing's ids give each cut's start without a read, and a cut's restore point lies between its
 * start and the next cut's start, so only the page's manifests are read (authenticated under the server's
 * key, as a restore would), never the whole archive's.
 */
export async function listArchiveCuts(plane: ControlPlane, projectId: string, ref: string, q: CutsQuery): Promise<{ instanceId: string; cuts: CutView[]; more: boolean }> {
  const source = await findSource(plane, projectId, ref);
  const key = await keyRing(plane);
  return plane.withStorage(plane.repositoryOf(source.id), async (storage) => {
    const s = archiveStorage(storage, source.id);
    const { cuts } = await listCuts(s);
    const baseOf: string[] = [];
    cuts.forEach((c, i) => baseOf.push(c.base || i === 0 ? c.id : baseOf[i - 1]!));
    // Candidates by start: a cut that started after `to` ends after it; one that started before `from` may
    // end after it only when it is the last such.
    let lo = 0;
    let hi = cuts.length;
    if (q.to !== null) {
      const after = cuts.findIndex((c) => c.at > q.to!);
      hi = after < 0 ? cuts.length : after;
    }
    if (q.from !== null) {
      const first = cuts.findIndex((c) => c.at >= q.from!);
      lo = Math.max(0, (first < 0 ? cuts.length : first) - 1);
    }
    let cand = cuts.slice(lo, Math.max(lo, hi)).map((c, k) => ({ c, i: lo + k }));
    if (q.newestFirst) cand.reverse();
    if (q.marker !== null) {
      const k = cand.findIndex((x) => x.c.id === q.marker);
      if (k < 0) throw badRequest(`Invalid marker: ${q.marker.slice(0, 80)} is not a cut of this listing (removed by retention since?).`);
      cand = cand.slice(k + 1);
    }
    const view = async ({ c, i }: { c: CutRef; i: number }): Promise<CutView> => {
      const v: CutView = { id: c.id, base: c.base, base_cut: baseOf[i]!, started: new Date(c.at).toISOString(), restore_point: new Date(c.at).toISOString() };
      try {
        const m = await readManifest(s, c.id);
        if (key) await openManifest(m, key);
        v.restore_point = new Date(Number(m.body.labels.cutEnd ?? c.at)).toISOString();
        v.bytes = m.body.summary.bytes;
        v.size_bytes = m.body.summary.size;
      } catch (err) {
        v.error = describeError(err);
      }
      return v;
    };
    const inRange = (v: CutView): boolean => {
      const t = Date.parse(v.restore_point);
      return (q.from === null || t >= q.from) && (q.to === null || t <= q.to);
    };
    // One more than the page, to know whether another follows; read in batches (at most two cuts of the
    // candidates fall outside the range: the one running at `to` and the one before `from`).
    const out: CutView[] = [];
    for (let k = 0; k < cand.length && out.length <= q.limit; ) {
      const batch = cand.slice(k, k + q.limit + 2 - out.length);
      k += batch.length;
      out.push(...(await mapLimit(batch, 16, view)).filter(inRange));
    }
    return { instanceId: source.id, cuts: out.slice(0, q.limit), more: out.length > q.limit };
  });
}

// ---- deleted instances -------------------------------------------------------------------------

/** What a delete keeps: the archive (for keep_days) and the backups; said in the delete's answer. */
export async function keptAfterDelete(plane: ControlPlane, inst: Row<'instances'>): Promise<Record<string, unknown>> {
  const archive = await repositoryArchive(plane, inst.id);
  const keepDays = archiveStatuses(plane).get(inst.id)?.keepDays ?? DEFAULT_KEEP_DAYS;
  const backups = (await plane.store.find('backups', { instance_id: inst.id, status: 'COMPLETED' })).length;
  const kept: Record<string, unknown> = { backups };
  if (archive && !archive.error) kept.archive = { ...archive, keep_days: keepDays, until: new Date(Date.now() + keepDays * DAY_MS).toISOString() };
  const parts = [
    ...(kept.archive ? [`its archive (restorable ${String((archive!.window as Record<string, unknown>).from)} .. ${String((archive!.window as Record<string, unknown>).to)}) is kept ${keepDays} days, until ${String((kept.archive as Record<string, unknown>).until)}`] : []),
    ...(backups > 0 ? [`its ${backups} backup${backups === 1 ? ' is' : 's are'} kept until deleted`] : []),
  ];
  kept.message = parts.length
    ? `${parts.join('; ')}: restore with instance create NEW --from-instance ${inst.id} --restore-time TIME (instance list --deleted)`
    : 'nothing is kept: it has no archive and no backups';
  return kept;
}

/** Called by instance.delete once the instance is destroyed: remembered while its archive or backups are kept. */
export async function rememberDeleted(plane: ControlPlane, inst: Row<'instances'>, archiveKeepDays: number | null): Promise<void> {
  const backups = await plane.store.find('backups', { instance_id: inst.id, status: 'COMPLETED' });
  if (archiveKeepDays === null && backups.length === 0) return;
  await plane.store.upsert('deleted_instances', {
    id: inst.id, project_id: inst.project_id, name: inst.name, flavor_id: inst.flavor_id, volume_size: inst.volume_size,
    datastore_version: inst.datastore_version, created: inst.created, deleted: now(), archive_keep_days: archiveKeepDays,
  });
}

const archiveExpires = (d: Row<'deleted_instances'>): number | null => (d.archive_keep_days === null ? null : Date.parse(d.deleted) + d.archive_keep_days * DAY_MS);

/** One row of `GET /instances?deleted=true`, or null when nothing of it can be restored any more. */
export async function deletedView(plane: ControlPlane, d: Row<'deleted_instances'>): Promise<Record<string, unknown> | null> {
  const expires = archiveExpires(d);
  const archive = expires !== null && expires > Date.now() ? await repositoryArchive(plane, d.id) : null;
  const backups = (await plane.store.find('backups', { instance_id: d.id, status: 'COMPLETED' })).sort((a, b) => a.updated.localeCompare(b.updated));
  if (!archive && backups.length === 0) return null;
  const w = (archive?.window ?? null) as { from: string | null; to: string | null } | null;
  const firstBackup = backups[0] ? new Date(Date.parse(backups[0].updated)).toISOString() : null;
  const lastBackup = backups.at(-1) ? new Date(Date.parse(backups.at(-1)!.updated)).toISOString() : null;
  const from = [w?.from, firstBackup].filter((x): x is string => !!x).sort()[0] ?? null;
  const to = [w?.to, lastBackup].filter((x): x is string => !!x).sort().at(-1) ?? null;
  return {
    id: d.id, name: d.name, status: 'DELETED', created: d.created, deleted: d.deleted,
    flavor: { id: d.flavor_id }, volume: { size: d.volume_size }, datastore: { type: 'couchdb', version: d.datastore_version },
    // From the oldest restore point kept to the newest; the archive's part goes at `expires`, backups stay until deleted.
    restorable: { from, to, expires: archive && expires !== null ? new Date(expires).toISOString() : null },
    ...(archive ? { archive: { ...archive, keep_days: d.archive_keep_days, expires: new Date(expires!).toISOString() } } : {}),
    backups: { count: backups.length, ...(lastBackup ? { newest: { id: backups.at(-1)!.id, name: backups.at(-1)!.name, completed: lastBackup } } : {}) },
  };
}

/** Rows of deleted instances of which nothing is kept any more (archive expired, no backups) go. */
export async function forgetDeleted(plane: ControlPlane): Promise<void> {
  for (const d of await plane.store.find('deleted_instances')) {
    const expires = archiveExpires(d);
    if (expires !== null && expires > Date.now()) continue;
    if ((await plane.store.find('backups', { instance_id: d.id, status: 'COMPLETED' })).length > 0) continue;
    await plane.store.remove('deleted_instances', d.id);
    plane.log(`instance ${d.id} (${d.name}, deleted ${d.deleted}): nothing of it is kept any more; no longer listed as restorable`);
  }
}
