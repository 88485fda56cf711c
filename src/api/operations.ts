// What operators watch (docs/operations.md): GET /health (liveness), GET /health/ready (readiness) and
// GET /metrics (Prometheus text format, prom-client). Kept apart from the Trove routes in ./server.ts.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { freshArchiveStatuses } from '../tasks/archive.js';
import { replicationUp, usageReadings, READING_MAX_AGE } from '../tasks/usage.js';
import { GiB } from '../compute/driver.js';
import type { ServerConfig } from '../config/server.js';
import type { BackupStatus, InstanceStatus, Row, StateStore } from '../state/index.js';
import type { ControlPlane } from '../tasks/control.js';
import { describeError } from '../util/errors.js';

/** Something with a running/stopped state: the backup scheduler (src/tasks/schedules.ts). */
export interface Liveness {
  readonly alive: boolean;
}

export interface OperationsOptions {
  /** The backup scheduler; absent (embedded APIs, most tests) its readiness check is left out. */
  scheduler?: Liveness;
  log?: (m: string) => void;
  /** How long readiness waits for the state store, ms. */
  storeTimeoutMs?: number;
}

// Records keyed by the status types, so a status added to the schema fails to compile here until it is
// listed: every status has a series (0 included), which alert rules need to see.
const INSTANCE_STATUSES = Object.keys({
  BUILD: 1, ACTIVE: 1, REBOOT: 1, RESIZE: 1, BACKUP: 1, SHUTDOWN: 1, RESTART_REQUIRED: 1, ERROR: 1, FAILED: 1, PROMOTE: 1, EJECT: 1, DETACH: 1, UPGRADE: 1,
} satisfies Record<InstanceStatus, 1>);
const BACKUP_STATUSES = Object.keys({ NEW: 1, BUILDING: 1, SAVING: 1, COMPLETED: 1, FAILED: 1, DELETE_FAILED: 1 } satisfies Record<BackupStatus, 1>);

/** True when the state store answers a query within ms. */
async function storeAnswers(store: StateStore, ms: number): Promise<{ ok: boolean; error?: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    timer.unref();
  });
  try {
    await Promise.race([store.get('flavors', ''), timeout]);
    return { ok: true };
  } catch (err) {
    return { ok: false, error: describeError(err) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Who may read /metrics (docs/operations.md): with metrics_token set, only a request bearing it;
 * without it, anyone in local auth mode (the API then listens on loopback only) and nobody in token mode.
 * Project tokens never do: the metrics cover every project.
 */
export function metricsAccess(config: ServerConfig): (authorization: string | undefined) => string | null {
  const digest = (t: string): Buffer => createHash('sha256').update(t, 'utf8').digest();
  const wanted = config.metricsToken === undefined ? undefined : digest(config.metricsToken);
  return (authorization) => {
    if (wanted === undefined) {
      return config.authMode === 'local' ? null : 'metrics_token is not configured: /metrics is closed in token auth mode.';
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) return 'Authentication required: send Authorization: Bearer METRICS_TOKEN.';
    // Digests of equal length through timingSafeEqual: the time taken says nothing about the guess.
    return timingSafeEqual(digest(m[1]!), wanted) ? null : 'The metrics token is not valid.';
  };
}

/**
 * Below this much free space in the state directory, the server is not ready: SQLite needs room for its WAL
 * and checkpoints, the file repository and instance volumes live there too, and a full disk fails every task.
 */
export const STATE_DISK_MIN_FREE = 16 * 1024 * 1024;

/** 'ok', or why the state directory's file system cannot take writes (sizes only: the body is unauthenticated). */
export async function stateDiskCheck(dir: string): Promise<string> {
  try {
    const st = await fs.statfs(dir);
    const free = st.bavail * st.bsize;
    if (free < STATE_DISK_MIN_FREE) return `full: ${free} bytes free of ${st.blocks * st.bsize} (at least ${STATE_DISK_MIN_FREE} needed)`;
    if (st.files > 0 && st.ffree === 0) return 'full: no free inodes';
    return 'ok';
  } catch (err) {
    return `cannot be checked: ${(err as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}

/** Registers /health, /health/ready and /metrics, and the hooks that count requests and tasks. */
export async function registerOperationsRoutes(app: FastifyInstance, plane: ControlPlane, options: OperationsOptions = {}): Promise<void> {
  const log = options.log ?? plane.log;
  const store = plane.store;
  // One registry per API: two APIs in one process (tests) must not share or double-register metrics.
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const requests = new Counter({
    name: 'couchtrove_api_requests_total', help: 'API requests answered, by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status'] as const, registers: [registry],
  });
  const latency = new Histogram({
    name: 'couchtrove_api_request_duration_seconds', help: 'Time to answer an API request, by method and route pattern.',
    labelNames: ['method', 'route'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [registry],
  });
  const tasks = new Counter({
    name: 'couchtrove_tasks_total', help: 'Tasks this process finished, by kind and result (completed, failed).',
    labelNames: ['kind', 'result'] as const, registers: [registry],
  });
  const taskSeconds = new Histogram({
    name: 'couchtrove_task_duration_seconds', help: 'Time from a task\'s creation to its end, by kind and result.',
    labelNames: ['kind', 'result'] as const, buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600], registers: [registry],
  });
  const storeUp = new Gauge({ name: 'couchtrove_state_store_up', help: '1 when the state store answered this scrape\'s queries, else 0 (and the state gauges are absent).', registers: [registry] });
  const instances = new Gauge({ name: 'couchtrove_instances', help: 'Instances by status, from the state store at scrape time.', labelNames: ['status'] as const, registers: [registry] });
  // One series per instance, so that an alert names the instance (its id and name), not only a count.
  const instanceStatus = new Gauge({
    name: 'couchtrove_instance_status', help: 'Always 1: one series per instance, labelled with its id, name and status, from the state store at scrape time.',
    labelNames: ['instance_id', 'name', 'status'] as const, registers: [registry],
  });
  const backups = new Gauge({ name: 'couchtrove_backups', help: 'Backups by status, from the state store at scrape time.', labelNames: ['status'] as const, registers: [registry] });
  const inProgress = new Gauge({ name: 'couchtrove_tasks_in_progress', help: 'Tasks NEW or RUNNING, by kind, from the state store at scrape time.', labelNames: ['kind'] as const, registers: [registry] });
  const lastAge = new Gauge({
    name: 'couchtrove_last_backup_age_seconds', help: 'Seconds since the newest COMPLETED backup of each instance completed (absent: no completed backup).',
    labelNames: ['instance_id'] as const, registers: [registry],
  });
  const lastSize = new Gauge({
    name: 'couchtrove_last_backup_size_bytes', help: 'Bytes stored by the newest COMPLETED backup of each instance.',
    labelNames: ['instance_id'] as const, registers: [registry],
  });

  // Continuous archiving, from the agents' status as the health monitor last read it (src/tasks/archive.ts).
  const archiveLag = new Gauge({
    name: 'couchtrove_archive_lag_seconds', help: 'Seconds between now and the newest restore point of each instance with archiving on (absent: off, or no restore point yet).',
    labelNames: ['instance_id'] as const, registers: [registry],
  });
  const archivePoint = new Gauge({
    name: 'couchtrove_archive_restore_point_timestamp_seconds', help: 'Unix time of the newest restore point of each instance with archiving on.',
    labelNames: ['instance_id'] as const, registers: [registry],
  });
  const archiveBehind = new Gauge({
    name: 'couchtrove_archive_behind', help: '1 when an instance\'s archiving is failing or more than 3 intervals behind, else 0.',
    labelNames: ['instance_id'] as const, registers: [registry],
  });

  // Volume use and replication, from the agents' answers as the health monitor last read them (src/tasks/usage.ts).
  const volumeUsed = new Gauge({
    name: 'couchtrove_volume_used_bytes', help: 'Bytes used on each instance\'s volume, as its agent last told the health monitor (absent: CouchDB down, the agent did not answer, or no reading within max(3 health intervals, 15 s)).',
    labelNames: ['instance_id'] as const, registers: [registry],
  });
  const volumeSize = new Gauge({
    name: 'couchtrove_volume_size_bytes', help: 'Size of each instance\'s volume in bytes: its volume size (GB) in the state store x 1024^3 (absent: no volume size).',
    labelNames: ['instance_id'] as const, registers: [registry],
  });
  const replicationLag = new Gauge({
    name: 'couchtrove_replication_lag_documents', help: 'Changes on the source not yet on the replica, per replica and database, as the replica\'s agent last told the health monitor (changes_pending, or a bounded revs_diff scan: then a lower bound). Absent when unknown: no fresh reading, or the agent could not measure it (source unreachable).',
    labelNames: ['instance_id', 'database'] as const, registers: [registry],
  });
  const replicationUpGauge = new Gauge({
    name: 'couchtrove_replication_up', help: 'Per replica: 1 when its agent last told the health monitor that every followed database\'s replication job is running, with no errors; else 0 (also when the agent or its CouchDB is down). Absent without a reading within max(3 health intervals, 15 s) (this process is not the health leader, or a task holds the instance).',
    labelNames: ['instance_id'] as const, registers: [registry],
  });
  const stateGauges = [instances, instanceStatus, backups, inProgress, lastAge, lastSize, archiveLag, archivePoint, archiveBehind, volumeUsed, volumeSize, replicationLag, replicationUpGauge];

  // Route patterns, never raw URLs: ids in URLs would make a series per instance and request. Requests
  // that match no route share one label.
  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ method: req.method, route, status: String(reply.statusCode) });
    latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });
  const unsubscribe = plane.tasks.onFinished((e) => {
    tasks.inc({ kind: e.task.kind, result: e.result });
    taskSeconds.observe({ kind: e.task.kind, result: e.result }, e.seconds);
  });
  app.addHook('onClose', async () => {
    unsubscribe();
  });

  /** Sets the state gauges from one read of the store; false when it does not answer. */
  const readState = async (): Promise<boolean> => {
    let rows: { inst: Row<'instances'>[]; backups: Row<'backups'>[]; open: Row<'tasks'>[] };
    try {
      rows = {
        inst: await store.find('instances'),
        backups: await store.find('backups'),
        open: await store.find('tasks', { status: ['NEW', 'RUNNING'] }),
      };
    } catch (err) {
      log(`metrics: the state store did not answer: ${describeError(err)}`);
      for (const g of stateGauges) g.reset();
      storeUp.set(0);
      return false;
    }
    // Synchronous from here to the end: a concurrent scrape sees one read or the other, never a mix.
    for (const g of stateGauges) g.reset();
    storeUp.set(1);
    for (const s of INSTANCE_STATUSES) instances.set({ status: s }, 0);
    for (const i of rows.inst) {
      instances.inc({ status: i.status });
      instanceStatus.set({ instance_id: i.id, name: i.name, status: i.status }, 1);
    }
    for (const s of BACKUP_STATUSES) backups.set({ status: s }, 0);
    for (const b of rows.backups) backups.inc({ status: b.status });
    for (const t of rows.open) inProgress.inc({ kind: t.kind });
    const newest = new Map<string, Row<'backups'>>();
    for (const b of rows.backups) {
      if (b.status !== 'COMPLETED' || b.instance_id === null) continue;
      const seen = newest.get(b.instance_id);
      if (!seen || b.updated > seen.updated) newest.set(b.instance_id, b);
    }
    const t = Date.now();
    // Only instances that still exist: a deleted instance's backups would otherwise age into alerts forever.
    for (const i of rows.inst) {
      const b = newest.get(i.id);
      if (!b) continue;
      lastAge.set({ instance_id: i.id }, Math.max(0, (t - Date.parse(b.updated)) / 1000));
      if (b.size_bytes !== null) lastSize.set({ instance_id: i.id }, b.size_bytes);
    }
    const archives = freshArchiveStatuses(plane, READING_MAX_AGE(plane));
    for (const i of rows.inst) {
      const a = archives.get(i.id);
      if (!a?.enabled) continue;
      archiveBehind.set({ instance_id: i.id }, a.behind ? 1 : 0);
      if (a.restorePoint === null) continue;
      const rp = Date.parse(a.restorePoint);
      archivePoint.set({ instance_id: i.id }, rp / 1000);
      archiveLag.set({ instance_id: i.id }, Math.max(0, (t - rp) / 1000));
    }
    const usage = usageReadings(plane);
    for (const i of rows.inst) {
      if (i.volume_size > 0) volumeSize.set({ instance_id: i.id }, i.volume_size * GiB);
      const u = usage.get(i.id);
      if (!u) continue;
      if (u.volumeUsed !== null) volumeUsed.set({ instance_id: i.id }, u.volumeUsed);
      // A reading from before a detach still has a replication status: only replicas get these series.
      if (i.replica_of === null || u.replication === undefined) continue;
      replicationUpGauge.set({ instance_id: i.id }, replicationUp(u.replication) ? 1 : 0);
      for (const d of u.replication?.databases ?? []) {
        if (d.lag !== null) replicationLag.set({ instance_id: i.id, database: d.database }, d.lag);
      }
    }
    return true;
  };

  // ---- routes: no project token; they say nothing about instances or secrets ----------------
  app.get('/health', async () => ({ status: 'ok', ...(plane.compute.isolationWarning ? { isolation_warning: plane.compute.isolationWarning } : {}) }));

  let wasReady: boolean | undefined;
  app.get('/health/ready', async (_req, reply) => {
    const st = await storeAnswers(store, options.storeTimeoutMs ?? 2000);
    const checks: Record<string, 'ok' | string> = {
      state_store: st.ok ? 'ok' : 'not answering',
      task_manager: plane.tasks.alive ? 'ok' : 'not running',
    };
    if (options.scheduler) checks.backup_scheduler = options.scheduler.alive ? 'ok' : 'not running';
    checks.state_disk = await stateDiskCheck(plane.config.stateDir);
    const failing = Object.keys(checks).filter((k) => checks[k] !== 'ok');
    const ready = failing.length === 0;
    // The reasons go to the log, once per change, not to the unauthenticated body (a store error can
    // name hosts and users).
    if (ready !== wasReady) {
      if (!ready) log(`not ready: ${failing.map((k) => `${k} ${checks[k]}`).join(', ')}${st.error ? ` (state store: ${st.error})` : ''}`);
      else if (wasReady === false) log('ready again');
      wasReady = ready;
    }
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks, ...(ready ? {} : { failing }) });
  });

  const allowed = metricsAccess(plane.config);
  app.get('/metrics', async (req, reply) => {
    const problem = allowed(req.headers.authorization);
    if (problem) {
      return reply.code(401).header('WWW-Authenticate', 'Bearer realm="couchtrove metrics"').send({ unauthorized: { code: 401, message: problem } });
    }
    await readState();
    return reply.header('Content-Type', registry.contentType).send(await registry.metrics());
  });
}
