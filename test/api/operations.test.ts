// Health, readiness and Prometheus metrics (src/api/operations.ts, docs/operations.md) over the fakes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/server.js';
import { metricsAccess } from '../../src/api/operations.js';
import { startServer } from '../../src/api/main.js';
import { loadServerConfig } from '../../src/config/server.js';
import { BackupScheduler } from '../../src/tasks/schedules.js';
import { FakeCompute, FakeRepository } from '../support/fake-agent.js';
import { H, startPlane, until, type TestPlane } from '../support/plane.js';

interface J {
  [k: string]: unknown;
}

const planes: TestPlane[] = [];
const apps: FastifyInstance[] = [];
const schedulers: BackupScheduler[] = [];
after(async () => {
  for (const s of schedulers) await s.stop();
  for (const a of apps) await a.close();
  for (const p of planes) await p.close();
});

async function plane(env: Record<string, string> = {}): Promise<TestPlane> {
  const p = await startPlane({ env });
  planes.push(p);
  return p;
}

/** An API over p's plane with a running backup scheduler, as `couchtrove server` builds it. */
async function withScheduler(p: TestPlane): Promise<{ app: FastifyInstance; scheduler: BackupScheduler; logs: string[] }> {
  const scheduler = new BackupScheduler(p.plane, { tickMs: 60_000 });
  scheduler.start();
  schedulers.push(scheduler);
  const logs: string[] = [];
  const app = await buildApi({ plane: p.plane, scheduler, log: (m) => logs.push(m) });
  await app.ready();
  apps.push(app);
  return { app, scheduler, logs };
}

async function get(app: FastifyInstance, url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; json: () => J; headers: Record<string, unknown> }> {
  const r = await app.inject({ method: 'GET', url, headers });
  return { status: r.statusCode, body: r.body, json: () => JSON.parse(r.body) as J, headers: r.headers };
}

/** The value of one series in a Prometheus text exposition, or undefined when it is absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

async function metrics(app: FastifyInstance, headers: Record<string, string> = {}): Promise<string> {
  const r = await get(app, '/metrics', headers);
  assert.equal(r.status, 200, r.body);
  assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return r.body;
}

test('GET /health answers 200 without a token; readiness names its checks', async () => {
  const p = await plane();
  const { app } = await withScheduler(p);
  const h = await get(app, '/health');
  assert.equal(h.status, 200);
  assert.deepEqual(h.json(), { status: 'ok' });
  const r = await get(app, '/health/ready');
  assert.equal(r.status, 200, r.body);
  assert.deepEqual(r.json(), { status: 'ready', checks: { state_store: 'ok', task_manager: 'ok', backup_scheduler: 'ok', state_disk: 'ok' } });
  // The Trove routes still want their token.
  assert.equal((await get(app, '/v1.0/local/instances')).status, 401);
});

test('readiness: 503 naming the scheduler once it stops, and the task manager once it stops', async () => {
  const p = await plane();
  const { app, scheduler, logs } = await withScheduler(p);
  assert.equal((await get(app, '/health/ready')).status, 200);
  await scheduler.stop();
  const r = await get(app, '/health/ready');
  assert.equal(r.status, 503);
  assert.deepEqual(r.json().failing, ['backup_scheduler']);
  assert.equal((r.json().checks as J).backup_scheduler, 'not running');
  assert.ok(logs.some((l) => /not ready: backup_scheduler not running/.test(l)), logs.join('\n'));
  await p.plane.tasks.stop();
  assert.deepEqual((await get(app, '/health/ready')).json().failing, ['task_manager', 'backup_scheduler']);
  // Liveness is about the process, not its parts.
  assert.equal((await get(app, '/health')).status, 200);
});

test('readiness: 503 when the state store is closed, with the reason in the log and not in the body', async () => {
  const p = await plane();
  const { app, logs } = await withScheduler(p);
  await p.store.close();
  const r = await get(app, '/health/ready');
  assert.equal(r.status, 503);
  assert.deepEqual(r.json(), {
    status: 'not ready', checks: { state_store: 'not answering', task_manager: 'ok', backup_scheduler: 'ok', state_disk: 'ok' }, failing: ['state_store'],
  });
  assert.ok(logs.some((l) => /not ready: state_store not answering \(state store: /.test(l)), logs.join('\n'));
  // Metrics still answer, saying the store is down, without the state gauges.
  const m = await metrics(app);
  assert.equal(sample(m, 'couchtrove_state_store_up'), 0);
  assert.equal(sample(m, 'couchtrove_instances{status="ACTIVE"}'), undefined);
});

test('metrics: requests by route pattern, tasks by kind and result, instances and backups by status, the last backup', async () => {
  const p = await plane();
  const app = p.app;
  const before = await metrics(app);
  assert.equal(sample(before, 'couchtrove_state_store_up'), 1);
  assert.equal(sample(before, 'couchtrove_instances{status="ACTIVE"}'), 0);
  assert.equal(sample(before, 'couchtrove_instances{status="ERROR"}'), 0);
  assert.equal(sample(before, 'couchtrove_backups{status="COMPLETED"}'), 0);
  assert.match(before, /^process_cpu_user_seconds_total /m);

  // An instance created through the API: a request counted under its pattern, a completed create task.
  const c = await app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: H, payload: JSON.stringify({ instance: { name: 'm1', flavorRef: '1', volume: { size: 1 } } }) });
  assert.equal(c.statusCode, 200, c.body);
  const id = ((JSON.parse(c.body) as { instance: J }).instance.id) as string;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  const m1 = await until('the create task counted', () => metrics(app), (m) => sample(m, 'couchtrove_tasks_total{kind="instance.create",result="completed"}') === 1);
  assert.equal(sample(m1, 'couchtrove_api_requests_total{method="POST",route="/v1.0/:project/instances",status="200"}'), 1);
  assert.equal(sample(m1, 'couchtrove_api_request_duration_seconds_count{method="POST",route="/v1.0/:project/instances"}'), 1);
  assert.equal(sample(m1, 'couchtrove_task_duration_seconds_count{kind="instance.create",result="completed"}'), 1);
  assert.equal(sample(m1, 'couchtrove_instances{status="ACTIVE"}'), 1);
  assert.equal(sample(m1, 'couchtrove_instances{status="BUILD"}'), 0);
  assert.equal(sample(m1, `couchtrove_last_backup_age_seconds{instance_id="${id}"}`), undefined, 'no backup yet: no series');

  // Raw URLs never become labels: an id in the path (found or not) and an unknown path.
  assert.equal((await app.inject({ method: 'GET', url: `/v1.0/local/instances/${id}`, headers: H })).statusCode, 200);
  assert.equal((await app.inject({ method: 'GET', url: '/v1.0/local/instances/no-such-instance-xyz', headers: H })).statusCode, 404);
  assert.equal((await app.inject({ method: 'GET', url: '/no/such/path-qwerty' })).statusCode, 404);
  const m2 = await metrics(app);
  assert.equal(sample(m2, 'couchtrove_api_requests_total{method="GET",route="/v1.0/:project/instances/:id",status="200"}'), 1);
  assert.equal(sample(m2, 'couchtrove_api_requests_total{method="GET",route="/v1.0/:project/instances/:id",status="404"}'), 1);
  assert.equal(sample(m2, 'couchtrove_api_requests_total{method="GET",route="unmatched",status="404"}'), 1);
  assert.ok(!m2.includes('no-such-instance-xyz') && !m2.includes('path-qwerty'));
  // The earlier scrapes are requests too.
  assert.ok((sample(m2, 'couchtrove_api_requests_total{method="GET",route="/metrics",status="200"}') ?? 0) >= 2);

  // A backup: the last-backup gauges for the instance, the backup gauge by status.
  const b = await app.inject({ method: 'POST', url: '/v1.0/local/backups', headers: H, payload: JSON.stringify({ backup: { name: 'b1', instance: id } }) });
  assert.equal(b.statusCode, 202, b.body);
  const bid = ((JSON.parse(b.body) as { backup: J }).backup.id) as string;
  const done = await until('COMPLETED', async () => p.store.get('backups', bid), (x) => x?.status === 'COMPLETED');
  const m3 = await metrics(app);
  const age = sample(m3, `couchtrove_last_backup_age_seconds{instance_id="${id}"}`);
  assert.ok(age !== undefined && age >= 0 && age < 60, `age ${age}`);
  assert.equal(sample(m3, `couchtrove_last_backup_size_bytes{instance_id="${id}"}`), done!.size_bytes);
  assert.equal(sample(m3, 'couchtrove_backups{status="COMPLETED"}'), 1);
  const m4 = await until('the backup task counted', () => metrics(app), (m) => sample(m, 'couchtrove_tasks_total{kind="backup.create",result="completed"}') === 1);
  assert.equal(sample(m4, 'couchtrove_tasks_total{kind="instance.create",result="completed"}'), 1);
  // No tenant data beyond what alerts need: an instance's name only on its status series (issue 23: an alert
  // names the instance), never a backup's name, never a project token.
  assert.equal(sample(m3, `couchtrove_instance_status{instance_id="${id}",name="m1",status="ACTIVE"}`), 1);
  assert.deepEqual(m3.split('\n').filter((l) => l.includes('"m1"') && !l.startsWith('couchtrove_instance_status{')), []);
  assert.ok(!m3.includes('"b1"') && !m3.includes('notused'));
});

test('metrics: volume use from the health round, absent once CouchDB is down; only existing instances', async () => {
  const p = await plane();
  const app = p.app;
  const c = await app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: H, payload: JSON.stringify({ instance: { name: 'v1', flavorRef: '1', volume: { size: 2 } } }) });
  assert.equal(c.statusCode, 200, c.body);
  const id = ((JSON.parse(c.body) as { instance: J }).instance.id) as string;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  const used = `couchtrove_volume_used_bytes{instance_id="${id}"}`;
  const m0 = await metrics(app);
  assert.equal(sample(m0, `couchtrove_volume_size_bytes{instance_id="${id}"}`), 2 * 1024 ** 3, 'the size is the state store\'s');
  // Rounds run here, not on the monitor's timer (5 s by default).
  const agent = p.compute.agentOf(id);
  agent.usedBytes = 5 * 1024 * 1024;
  const round = async (): Promise<string> => {
    await p.plane.health.checkAll();
    return metrics(app);
  };
  const m1 = await until('volume use read', round, (m) => sample(m, used) === 5 * 1024 * 1024);
  assert.equal(sample(m1, `couchtrove_replication_up{instance_id="${id}"}`), undefined, 'no replica: no replication series');
  // CouchDB stopped: the use is unknown, the size still known.
  agent.state = 'SHUTDOWN';
  const m2 = await until('volume use absent', round, (m) => sample(m, used) === undefined);
  assert.equal(sample(m2, `couchtrove_volume_size_bytes{instance_id="${id}"}`), 2 * 1024 ** 3);
  agent.state = 'RUNNING';
  await until('volume use back', round, (m) => sample(m, used) === 5 * 1024 * 1024);
  // Deleted: no series left behind.
  assert.equal((await app.inject({ method: 'DELETE', url: `/v1.0/local/instances/${id}`, headers: H })).statusCode, 202);
  await until('deleted', async () => p.store.get('instances', id), (i) => i === undefined || i === null);
  const m3 = await metrics(app);
  assert.ok(!m3.includes(id), 'no series of a deleted instance');
});

test('metrics: a failed task is counted as failed', async () => {
  const p = await plane();
  p.plane.tasks.register('test.explode', { resumable: false, run: async () => { throw new Error('boom'); }, failed: async () => undefined });
  const t = await p.plane.tasks.submit({ kind: 'test.explode', projectId: 'local', timeout: 60 });
  assert.equal((await p.plane.tasks.settled(t.id))?.status, 'FAILED');
  const m = await metrics(p.app);
  assert.equal(sample(m, 'couchtrove_tasks_total{kind="test.explode",result="failed"}'), 1);
  assert.equal(sample(m, 'couchtrove_task_duration_seconds_count{kind="test.explode",result="failed"}'), 1);
});

test('metrics token rule: open in local mode, required when set, refused in token mode without one', async () => {
  // local mode, no metrics_token: open (the API listens on loopback only).
  const local = await plane();
  assert.equal((await get(local.app, '/metrics')).status, 200);

  // token mode without metrics_token: 401 whatever is sent, project tokens included.
  const closed = await plane({ COUCHTROVE_AUTH_MODE: 'token', COUCHTROVE_TOKENS: 'alpha:alpha-token-1234' });
  for (const headers of [{}, { authorization: 'Bearer alpha-token-1234' }, { 'x-auth-token': 'alpha-token-1234' }] as Array<Record<string, string>>) {
    const r = await get(closed.app, '/metrics', headers);
    assert.equal(r.status, 401);
    assert.match(String((r.json().unauthorized as J).message), /metrics_token is not configured/);
  }
  // ... while health and readiness stay open.
  assert.equal((await get(closed.app, '/health')).status, 200);
  assert.equal((await get(closed.app, '/health/ready')).status, 200);

  // token mode with metrics_token: exactly that bearer token.
  const secured = await plane({ COUCHTROVE_AUTH_MODE: 'token', COUCHTROVE_TOKENS: 'alpha:alpha-token-1234', COUCHTROVE_METRICS_TOKEN: 'metrics-secret-5678' });
  for (const headers of [{}, { authorization: 'Bearer alpha-token-1234' }, { authorization: 'Bearer metrics-secret-567' }, { authorization: 'Basic metrics-secret-5678' }, { 'x-auth-token': 'metrics-secret-5678' }] as Array<Record<string, string>>) {
    const r = await get(secured.app, '/metrics', headers);
    assert.equal(r.status, 401, JSON.stringify(headers));
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="couchtrove metrics"');
  }
  assert.equal((await get(secured.app, '/metrics', { authorization: 'Bearer metrics-secret-5678' })).status, 200);
  // The metrics token is no project token.
  assert.equal((await get(secured.app, '/v1.0/alpha/instances', { 'x-auth-token': 'metrics-secret-5678' })).status, 401);

  // local mode with metrics_token: required there too.
  const cfg = loadServerConfig({ env: { COUCHTROVE_METRICS_TOKEN: 'metrics-secret-5678' }, overrides: { stateDir: '/tmp/x' } });
  assert.equal(metricsAccess(cfg)(undefined), 'Authentication required: send Authorization: Bearer METRICS_TOKEN.');
  assert.equal(metricsAccess(cfg)('bearer metrics-secret-5678'), null);
});

test('metrics_token is validated: length, not "notused", not a project token', () => {
  const load = (env: Record<string, string>): unknown => loadServerConfig({ env, overrides: { stateDir: '/tmp/x' } });
  assert.throws(() => load({ COUCHTROVE_METRICS_TOKEN: 'short' }), /COUCHTROVE_METRICS_TOKEN: metrics_token: tokens are 8 to 256 printable/);
  assert.throws(() => load({ COUCHTROVE_METRICS_TOKEN: 'has space inside' }), /metrics_token: tokens are 8 to 256/);
  assert.throws(() => load({ COUCHTROVE_METRICS_TOKEN: 'notused' }), /tokens are 8 to 256|must not be "notused"/);
  assert.throws(() => load({ COUCHTROVE_TOKENS: 'alpha:shared-token-1', COUCHTROVE_METRICS_TOKEN: 'shared-token-1' }), /metrics_token is also a token of project alpha/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-ops-'));
  try {
    const file = path.join(dir, 'server.ini');
    fs.writeFileSync(file, 'auth_mode = token\nmetrics_token = from-the-file-1\n[project:alpha]\ntokens = alpha-token-1234\n');
    assert.equal(loadServerConfig({ configFile: file, env: {}, overrides: { stateDir: dir } }).metricsToken, 'from-the-file-1');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('couchtrove server: probes answer, with the backup scheduler in readiness', async () => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'couchtrove-ops-server-'));
  const config = loadServerConfig({ env: { COUCHTROVE_BACKUP_ENCRYPTION: 'false' }, overrides: { stateDir, port: 0 } });
  const s = await startServer(config, { compute: new FakeCompute(new FakeRepository()), log: () => undefined });
  try {
    const h = await fetch(`${s.url}/health`);
    assert.equal(h.status, 200);
    assert.deepEqual(await h.json(), { status: 'ok' });
    const r = await fetch(`${s.url}/health/ready`);
    assert.equal(r.status, 200);
    assert.deepEqual(((await r.json()) as J).checks, { state_store: 'ok', task_manager: 'ok', backup_scheduler: 'ok', state_disk: 'ok' });
    await s.scheduler.stop();
    assert.equal((await fetch(`${s.url}/health/ready`)).status, 503);
  } finally {
    await s.close();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
});
