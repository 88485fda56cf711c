// Backup schedules of an instance (Trove's schedule-create/list/delete) or of a cluster (cluster backups,
// docs/cluster.md): a 5-field cron pattern (UTC), full or incremental, and an optional retention policy
// applied to the schedule's own backups after each successful run. Schedules live in the state store (backup_schedules); the scheduler wakes every
// tickMs and runs each schedule whose next_run has passed. A run missed while the server was down runs
// ONCE at the next start (not once per missed slot); next_run then moves to the first slot after now.
// Every control-plane process ticks (issue 18). A slot fires once across them: its run is a durable
// `schedule.run` task whose id is derived from (schedule, slot), so only the first insert succeeds, and
// the task's lease makes another process resume a run whose process died. The run's backup id is derived
// from the slot too, so a resumed run finds the backup it started instead of taking a second, and its
// backup.create task's id from the backup's: a slot whose backup completed and was deleted before its run was
// taken over (SIGKILL) finds that task and takes no second backup under the same id.
import { randomUUID } from 'node:crypto';
import { CronExpressionParser } from 'cron-parser';
import { plan } from '../backup/expire.js';
import type { ManifestBody } from '../backup/format.js';
import { now, type Row, type StateStore } from '../state/index.js';
import { describeError } from '../util/errors.js';
import type { ControlPlane } from './control.js';
import { backupTaskId, createBackup, deleteBackup } from './backups.js';
import { badRequest, notFound, ServiceError } from './errors.js';
import { RUNNING_BACKUP, stableId } from './control.js';
import { findCluster } from './clusters.js';
import { createClusterBackup } from './cluster-backup.js';
import type { TaskContext } from './manager.js';
import { ancestors } from './incremental.js';
import { archiveExpireTaskId } from './archive.js';
import { requestVerify } from './verify.js';

export interface ScheduleRequest {
  name: string;
  description: string | null;
  pattern: string;
  incremental: boolean;
  keepLast: number | null;
  keepDaily: number | null;
  keepWeekly: number | null;
  /** Verify each run's backup and a rolling sample of the schedule's older ones (./verify.ts). */
  verify?: boolean;
}

/** The next time a 5-field cron pattern (UTC) fires strictly after `after`; 400 with the reason when it is not valid. */
export function nextRun(pattern: string, after: Date): string {
  const fields = pattern.trim().split(/\s+/);
  if (fields.length !== 5 || pattern.trim() === '') {
    throw badRequest(`Invalid schedule pattern ${JSON.stringify(pattern.slice(0, 100))}: expected 5 cron fields "minute hour day-of-month month day-of-week" (e.g. "0 3 * * *"), got ${pattern.trim() === '' ? 0 : fields.length}.`);
  }
  try {
    const e = CronExpressionParser.parse(fields.join(' '), { currentDate: after, tz: 'UTC' });
    const d = e.next().toDate();
    return d.toISOString();
  } catch (err) {
    throw badRequest(`Invalid schedule pattern ${JSON.stringify(pattern.slice(0, 100))}: ${describeError(err)}`);
  }
}

/** What a schedule backs up: an instance, or a whole cluster (one cluster backup a run), by id or name. */
export interface ScheduleOwner {
  kind: 'instance' | 'cluster';
  ref: string;
}

const ownerId = async (plane: ControlPlane, projectId: string, owner: ScheduleOwner): Promise<string> =>
  (owner.kind === 'cluster' ? await findCluster(plane, projectId, owner.ref) : await plane.instance(projectId, owner.ref)).id;

/** The backups of a schedule's instance or cluster. */
const ownerBackups = (s: Row<'backup_schedules'>): { project_id: string; cluster_id: string } | { project_id: string; instance_id: string } =>
  (s.cluster_id ? { project_id: s.project_id, cluster_id: s.cluster_id } : { project_id: s.project_id, instance_id: s.instance_id });

export async function createSchedule(plane: ControlPlane, projectId: string, owner: ScheduleOwner, req: ScheduleRequest, at: Date = new Date()): Promise<Row<'backup_schedules'>> {
  const id = await ownerId(plane, projectId, owner);
  const next = nextRun(req.pattern, at);
  const t = now();
  const row: Row<'backup_schedules'> = {
    id: randomUUID(), project_id: projectId, instance_id: id, cluster_id: owner.kind === 'cluster' ? id : null, name: req.name, description: req.description,
    pattern: req.pattern.trim().split(/\s+/).join(' '), incremental: req.incremental ? 1 : 0,
    keep_last: req.keepLast, keep_daily: req.keepDaily, keep_weekly: req.keepWeekly,
    next_run: next, last_run: null, last_result: null, verify: req.verify ? 1 : 0, created: t, updated: t,
  };
  await plane.store.insert('backup_schedules', row);
  return row;
}

export async function listSchedules(plane: ControlPlane, projectId: string, owner: ScheduleOwner): Promise<Row<'backup_schedules'>[]> {
  const rows = await plane.store.find('backup_schedules', { project_id: projectId, instance_id: await ownerId(plane, projectId, owner) });
  return rows.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : a.id.localeCompare(b.id)));
}

export async function getSchedule(plane: ControlPlane, projectId: string, owner: ScheduleOwner, id: string): Promise<Row<'backup_schedules'>> {
  const of = await ownerId(plane, projectId, owner);
  const s = await plane.store.get('backup_schedules', id);
  if (!s || s.project_id !== projectId || s.instance_id !== of) throw notFound(`Schedule ${id} could not be found on ${owner.kind} ${owner.ref}.`);
  return s;
}

/** Deletes the schedule (its backups stay). */
export async function deleteSchedule(plane: ControlPlane, projectId: string, owner: ScheduleOwner, id: string): Promise<void> {
  const s = await getSchedule(plane, projectId, owner, id);
  await plane.store.remove('backup_schedules', s.id);
  for (const r of await plane.store.find('backup_schedule_runs', { schedule_id: s.id })) await plane.store.remove('backup_schedule_runs', r.id);
}

export function scheduleView(s: Row<'backup_schedules'>): Record<string, unknown> {
  const paused = s.next_run === PAUSED;
  return {
    id: s.id, name: s.name, description: s.description, instance_id: s.cluster_id ? null : s.instance_id, cluster_id: s.cluster_id, pattern: s.pattern,
    incremental: s.incremental === 1, keep_last: s.keep_last, keep_daily: s.keep_daily, keep_weekly: s.keep_weekly,
      verify: s.verify === 1, paused, next_run: paused ? null : s.next_run, last_run: s.last_run, last_result: s.last_result, created: s.created, updated: s.updated,
  };
}

/**
 * The next_run of a paused schedule: a time that never falls due, so the scheduler needs no other test and
 * the table no other column. A run already under way when it is paused finds next_run changed and leaves it.
 */
export const PAUSED = '9999-12-31T23:59:59.999Z';

/** Pause (no run falls due) or resume (the next slot after now; a slot missed while paused does not run). */
export async function pauseSchedule(plane: ControlPlane, projectId: string, owner: ScheduleOwner, id: string, paused: boolean, at: Date = new Date()): Promise<Row<'backup_schedules'>> {
  for (;;) {
    const s = await getSchedule(plane, projectId, owner, id);
    if ((s.next_run === PAUSED) === paused) return s;
    const patch = { next_run: paused ? PAUSED : nextRun(s.pattern, at), updated: now() };
    // Guarded by next_run: a run that moved it meanwhile makes this read the schedule again.
    if (await plane.store.update('backup_schedules', s.id, patch, { next_run: s.next_run })) return { ...s, ...patch };
  }
}

export interface SchedulerOptions {
  log?: (m: string) => void;
  /** How often due schedules are looked for, ms (default 15 s). */
  tickMs?: number;
  /** How often a started backup (and a retention delete) is polled, ms (default 2 s: a thousand runs at the top of the hour poll at once). */
  pollMs?: number;
  /** The time the scheduler goes by (tests inject one). */
  clock?: () => Date;
}

const FINAL = ['COMPLETED', 'FAILED', 'DELETE_FAILED'];

/** The task that runs one slot of a schedule, and the backup it takes: the same ids in every process. */
export const slotTaskId = (scheduleId: string, slot: string): string => stableId('schedule-run', `${scheduleId}@${slot}`);
export const slotBackupId = (scheduleId: string, slot: string): string => stableId('schedule-backup', `${scheduleId}@${slot}`);

interface RunParams {
  scheduleId: string;
  /** The slot (the next_run that fell due). */
  slot: string;
  /** When the scheduler saw it due (names the backup). */
  at: string;
}

export class BackupScheduler {
  private readonly store: StateStore;
  private readonly log: (m: string) => void;
  private readonly tickMs: number;
  private readonly pollMs: number;
  private readonly clock: () => Date;
  private timer: NodeJS.Timeout | null = null;
  private stopping = false;
  private ticking: Promise<void> | null = null;
  /** Runs in progress, by schedule id. */
  private readonly running = new Map<string, Promise<void>>();
  /** The hour whose archive.expire task this process has made or seen made. */
  private expireHour = '';

  constructor(private readonly plane: ControlPlane, options: SchedulerOptions = {}) {
    this.store = plane.store;
    this.log = options.log ?? (() => undefined);
    this.tickMs = options.tickMs ?? 15_000;
    this.pollMs = options.pollMs ?? 2000;
    this.clock = options.clock ?? (() => new Date());
    plane.tasks.register<RunParams>('schedule.run', {
      // The backup id comes from the slot: a resumed run finds the backup instead of taking a second.
      resumable: true,
      run: (ctx) => this.runTask(ctx),
      failed: async (task, reason) => {
        const p = JSON.parse(task.params) as Partial<RunParams>;
        if (p.scheduleId) await this.store.update('backup_schedules', p.scheduleId, { last_result: `run failed: ${reason}`, updated: now() }).catch(() => undefined);
      },
    });
  }

  private started = false;

  /** True between start() and stop(): due schedules are being looked for (readiness, src/api/operations.ts). */
  get alive(): boolean {
    return this.started && !this.stopping;
  }

  /** Starts ticking; the first tick (now) runs what was missed while the server was down, once. */
  start(): void {
    this.started = true;
    const loop = (): void => {
      if (this.stopping) return;
      this.ticking = this.tick().catch((err: unknown) => this.log(`schedules: ${describeError(err)}`)).then(() => undefined);
      void this.ticking.then(() => {
        if (!this.stopping) this.timer = setTimeout(loop, this.tickMs);
      });
    };
    loop();
  }

  /**
   * Stops ticking. Runs in progress are schedule.run tasks: the task manager's stop leaves them to another
   * process (or the next start), which resumes them; a backup already started finishes on its own.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    await this.ticking;
  }

  /** Resolves when no run is in progress. */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running.values()]);
  }

  /** Starts every schedule due at `at` whose slot no process fired yet; returns their ids. */
  async tick(at: Date = this.clock()): Promise<string[]> {
    const started: string[] = [];
    const fired: Array<[string, Row<'tasks'>]> = [];
    const due = (await this.store.find('backup_schedules')).filter((s) => new Date(s.next_run).getTime() <= at.getTime());
    // Each process walks the due slots in its own random order: processes ticking together then split the
    // work instead of all racing for the same slot first (measured: bench/fleet.ts).
    for (let i = due.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [due[i], due[j]] = [due[j]!, due[i]!];
    }
    for (const s of due) {
      if (this.stopping) break;
      if (this.running.has(s.id)) continue;
      let next: string;
      try {
        next = nextRun(s.pattern, at);
      } catch (err) {
        this.log(`schedule ${s.id}: ${describeError(err)}`);
        continue;
      }
      // The slot's task first: its id is the slot's, so of all processes (and ticks) one insert wins.
      const params: RunParams = { scheduleId: s.id, slot: s.next_run, at: at.toISOString() };
      const id = slotTaskId(s.id, s.next_run);
      let task: Row<'tasks'> | undefined;
      try {
        task = await this.plane.tasks.create({ kind: 'schedule.run', id, projectId: s.project_id, params, timeout: this.plane.config.backupTimeout + this.plane.config.taskTimeout });
      } catch (err) {
        if (!(await this.store.get('tasks', id))) throw err; // not a lost race: the store failed
      }
      // Then the next slot, compare-and-set: a process that died between the two leaves it to the next tick.
      await this.store.update('backup_schedules', s.id, { next_run: next, last_run: at.toISOString(), updated: now() }, { next_run: s.next_run });
      if (task) fired.push([s.id, task]);
    }
    await this.expireArchives(at);
    // Started only once every due slot is claimed: runs already going would slow the claiming of the rest
    // (their polling shares the connection pool), and with it the lag at the top of the hour.
    for (const [sid, task] of fired) {
      started.push(sid);
      this.plane.tasks.start(task);
      const p = this.plane.tasks.settled(task.id).then(() => undefined).finally(() => this.running.delete(sid));
      this.running.set(sid, p);
    }
    return started;
  }

  /** Once an hour, retention of deleted instances' archives (./archive.ts): one task of all processes. */
  private async expireArchives(at: Date): Promise<void> {
    const hour = at.toISOString().slice(0, 13);
    if (hour === this.expireHour || this.stopping) return;
    this.expireHour = hour;
    const id = archiveExpireTaskId(hour);
    try {
      // No tenant's: it spans every project's deleted instances.
      this.plane.tasks.start(await this.plane.tasks.create({ kind: 'archive.expire', id, projectId: '', timeout: this.plane.config.taskTimeout }));
    } catch (err) {
      if (!(await this.store.get('tasks', id))) this.log(`archive retention: ${describeError(err)}`);
    }
  }

  private async runTask(ctx: TaskContext<RunParams>): Promise<void> {
    const s = await this.store.get('backup_schedules', ctx.params.scheduleId);
    if (!s) return; // deleted since
    await this.run(s, new Date(ctx.params.at), slotBackupId(s.id, ctx.params.slot), ctx.signal);
  }

  private async result(s: Row<'backup_schedules'>, text: string): Promise<void> {
    await this.store.update('backup_schedules', s.id, { last_result: text, updated: now() });
  }

  private async skip(s: Row<'backup_schedules'>, why: string): Promise<void> {
    this.log(`schedule ${s.id} (${s.name}) on ${s.cluster_id ? 'cluster' : 'instance'} ${s.instance_id}: run skipped: ${why}`);
    await this.result(s, `skipped: ${why}`);
  }

  private async run(s: Row<'backup_schedules'>, at: Date, backupId: string, signal: AbortSignal): Promise<void> {
    const mine = await this.store.get('backups', backupId);
    if (mine) return this.finish(s, mine, signal); // resumed: the backup was started before the interruption
    // Resumed, and the slot's backup was requested before (its backup.create task exists) but its row is gone:
    // it COMPLETED and was deleted while this run was being taken over (or its create was interrupted before
    // the row was written). Taking it again would request a second backup under the same id: a slot fires once.
    const requested = await this.store.get('tasks', backupTaskId(backupId));
    if (requested) return this.result(s, `backup ${backupId} was requested already (task ${requested.status}) and is gone: not taken again`);
    let b: Row<'backups'> | string | null;
    try {
      b = await this.startBackup(s, at, backupId);
    } catch (err) {
      if (err instanceof ServiceError) return this.skip(s, err.message);
      throw err;
    }
    if (b === null) {
      this.log(`schedule ${s.id}: ${s.cluster_id ? 'cluster' : 'instance'} ${s.instance_id} is gone: the schedule is deleted`);
      await this.store.remove('backup_schedules', s.id);
      return;
    }
    if (typeof b === 'string') return this.skip(s, b);
    this.log(`schedule ${s.id} (${s.name}): ${b.parent_id ? `incremental backup on ${b.parent_id}` : 'full backup'} ${b.id} started`);
    await this.result(s, `backup ${b.id} started`);
    return this.finish(s, b, signal);
  }

  /**
   * Starts the slot's backup of the schedule's instance (an instance backup) or cluster (a cluster backup:
   * one copy of every shard range); a string says why not now; null: the instance or cluster is gone.
   */
  private async startBackup(s: Row<'backup_schedules'>, at: Date, id: string): Promise<Row<'backups'> | string | null> {
    const req = { name: `${s.name} ${at.toISOString().slice(0, 16)}Z`, description: s.description ?? `schedule ${s.id}`, parentId: null, incremental: s.incremental === 1, id };
    const what = s.cluster_id ? 'cluster' : 'instance';
    const running = await this.store.find('backups', { ...ownerBackups(s), status: [...RUNNING_BACKUP] });
    if (s.cluster_id) {
      const c = await this.store.get('clusters', s.cluster_id);
      if (!c) return null;
      if (running.length > 0) return `backup ${running[0]!.id} of the ${what} is running`;
      if (c.task_name !== 'NONE' || c.task_id !== null) return `the cluster is busy (task ${c.task_name})`;
      return createClusterBackup(this.plane, s.project_id, { ...req, clusterRef: c.id });
    }
    const inst = await this.store.get('instances', s.instance_id);
    if (!inst) return null;
    if (running.length > 0) return `backup ${running[0]!.id} of the ${what} is running`;
    if (inst.status !== 'ACTIVE' || inst.task_id !== null) {
      const t = inst.task_id ? await this.store.get('tasks', inst.task_id) : undefined;
      return `the instance is ${inst.status}${t ? ` (its ${t.kind} task ${t.id} runs)` : ''}`;
    }
    return createBackup(this.plane, s.project_id, { ...req, instanceId: inst.id });
  }

  /** Waits for the run's backup, then applies retention. */
  private async finish(s: Row<'backup_schedules'>, b: Row<'backups'>, signal: AbortSignal): Promise<void> {
    if (!(await this.store.get('backup_schedule_runs', b.id))) await this.store.insert('backup_schedule_runs', { id: b.id, schedule_id: s.id, created: b.created });
    const done = await this.waitBackup(b.id, signal);
    if (signal.aborted) return;
    if (done?.status !== 'COMPLETED') {
      await this.result(s, `backup ${b.id} ${done ? `${done.status}${done.fail_reason ? `: ${done.fail_reason}` : ''}` : 'disappeared'}`);
      return;
    }
    let summary = `backup ${b.id} COMPLETED`;
    if (s.keep_last !== null || s.keep_daily !== null || s.keep_weekly !== null) {
      const removed = await this.applyRetention(s);
      summary += `; retention removed ${removed.length}${removed.length ? `: ${removed.join(', ')}` : ''}`;
    }
    if (s.verify === 1) summary += `; verifying ${(await this.verifySample(s, b.id)).join(', ')}`;
    await this.result(s, summary);
  }

  /**
   * A verifying schedule reads back, after each run, the backup it just took and the one of its other
   * COMPLETED backups verified longest ago (never verified first): every kept backup is read again within
   * as many runs as the schedule keeps backups, at the cost of one extra backup's reading per run.
   */
  private async verifySample(s: Row<'backup_schedules'>, newest: string): Promise<string[]> {
    const runs = new Set((await this.store.find('backup_schedule_runs', { schedule_id: s.id })).map((r) => r.id));
    const older = (await this.store.find('backups', { ...ownerBackups(s), status: 'COMPLETED' }))
      .filter((b) => runs.has(b.id) && b.id !== newest)
      .sort((a, b) => (a.verified_at ?? '').localeCompare(b.verified_at ?? '') || a.created.localeCompare(b.created))[0];
    const started: string[] = [];
    for (const id of older ? [newest, older.id] : [newest]) {
      try {
        await requestVerify(this.plane, s.project_id, id);
        started.push(id);
      } catch (err) {
        this.log(`schedule ${s.id} (${s.name}): verifying backup ${id}: ${describeError(err)}`);
      }
    }
    return started;
  }

  private async waitBackup(id: string, signal: AbortSignal): Promise<Row<'backups'> | undefined> {
    for (;;) {
      const b = await this.store.get('backups', id);
      if (!b || FINAL.includes(b.status) || signal.aborted) return b;
      await new Promise((r) => setTimeout(r, this.pollMs).unref());
    }
  }

  /**
   * The engine's retention decision (keep the N newest, the newest of D days and W weeks, and every
   * ancestor of what is kept) over this schedule's COMPLETED backups; the rest are deleted through the
   * control plane (backup.delete tasks: repository objects and rows), newest first. A backup that any
   * remaining backup of the instance builds on is never deleted. Returns the deleted ids.
   */
  async applyRetention(s: Row<'backup_schedules'>): Promise<string[]> {
    const runs = new Set((await this.store.find('backup_schedule_runs', { schedule_id: s.id })).map((r) => r.id));
    const all = await this.store.find('backups', ownerBackups(s));
    const byId = new Map(all.map((b) => [b.id, b]));
    const mine = all.filter((b) => runs.has(b.id) && b.status === 'COMPLETED');
    const bodies = mine.map((b) => ({ id: b.id, created: b.created, depends: ancestors(b.id, byId) }) as Pick<ManifestBody, 'id' | 'created' | 'depends'>);
    const { remove } = plan(bodies as ManifestBody[], {
      ...(s.keep_last !== null ? { keepLast: s.keep_last } : {}),
      ...(s.keep_daily !== null ? { keepDaily: s.keep_daily } : {}),
      ...(s.keep_weekly !== null ? { keepWeekly: s.keep_weekly } : {}),
    });
    const going = new Set(remove.map((r) => r.id));
    const needed = new Set<string>();
    for (const b of all) if (!going.has(b.id) && b.status !== 'FAILED') for (const a of ancestors(b.id, byId)) needed.add(a);
    const removed: string[] = [];
    for (const r of remove) {
      if (needed.has(r.id) || this.stopping) continue;
      try {
        await deleteBackup(this.plane, s.project_id, r.id);
        const end = Date.now() + this.plane.config.taskTimeout * 1000;
        while (Date.now() < end && !this.stopping && (await this.store.get('backups', r.id))?.status === 'COMPLETED') {
          await new Promise((res) => setTimeout(res, this.pollMs).unref());
        }
        if (!(await this.store.get('backups', r.id))) {
          await this.store.remove('backup_schedule_runs', r.id);
          removed.push(r.id);
        }
      } catch (err) {
        this.log(`schedule ${s.id}: retention could not delete backup ${r.id}: ${describeError(err)}`);
      }
    }
    if (removed.length) this.log(`schedule ${s.id} (${s.name}): retention deleted ${removed.join(', ')}`);
    return removed;
  }
}
