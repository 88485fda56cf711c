// One control plane per SQLite state directory (issue 14): a second `couchtrove server` on the same
// directory refuses to start before touching any task; the listener is bound before tasks are recovered,
// and a taken port ends the process with status 1 and a message, with no task touched.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { api, tempDir, type J } from '../support/server.js';
import { repoRoot } from '../support/postgres.js';
import { FakeCompute, FakeRepository, gate } from '../support/fake-agent.js';
import { until } from '../support/plane.js';
import { loadServerConfig } from '../../src/config/server.js';
import { startServer } from '../../src/api/main.js';
import { openState } from '../../src/state/index.js';
import { StateDirLockedError } from '../../src/state/lock.js';

const root = tempDir('couchtrove-single-');
after(() => fs.rmSync(root, { recursive: true, force: true }));

const config = (stateDir: string) => loadServerConfig({ env: { COUCHTROVE_BACKUP_ENCRYPTION: 'false' }, overrides: { stateDir, port: 0 } });

/** `couchtrove server` as a child process; resolves with its exit status and output (or fails after 30 s). */
function serverProcess(stateDir: string, port: number): Promise<{ code: number | null; out: string; err: string; ms: number }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COUCHTROVE_')));
  const t0 = Date.now();
  const child = spawn(process.execPath, [path.join(repoRoot, 'bin', 'couchtrove.js'), 'server', '--port', String(port), '--state-dir', stateDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server did not exit within 30 s:\n${out}\n${err}`));
    }, 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err, ms: Date.now() - t0 });
    });
  });
}

test('a second server on the same state directory refuses to start, before touching any task', { timeout: 120_000 }, async () => {
  const stateDir = path.join(root, 'shared');
  const repo = new FakeRepository();
  const compute = new FakeCompute(repo);
  const first = await startServer(config(stateDir), { compute, log: () => undefined, scheduleTickMs: 3_600_000 });
  try {
    const base = `${first.url}/v1.0/local`;
    const c = await api(base, 'POST', '/instances', { instance: { name: 'busy', flavorRef: '1', volume: { size: 1 } } });
    const id = (c.json.instance as J).id as string;
    await until('ACTIVE', async () => (await first.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
    // A backup held in the middle: what the second server used to fail and delete.
    compute.agentOf(id).backupGate = gate();
    const b = await api(base, 'POST', '/backups', { backup: { name: 'running', instance: id } });
    assert.equal(b.status, 202);
    const bid = (b.json.backup as J).id as string;
    const running = await until('running', async () => first.store.get('backups', bid), (x) => x?.status === 'BUILDING' || x?.status === 'SAVING');
    const taskId = running!.task_id!;

    const second = await serverProcess(stateDir, 0);
    assert.equal(second.code, 1, second.err);
    assert.match(second.err, new RegExp(`another couchtrove server \\(pid ${process.pid}\\) is using the state directory ${stateDir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    assert.doesNotMatch(second.out, /listening/);
    // In the same process too.
    await assert.rejects(startServer(config(stateDir), { compute, log: () => undefined }), StateDirLockedError);

    // Nothing was touched: the backup still runs, its task too, and the first server still answers.
    assert.equal((await first.store.get('tasks', taskId))?.status, 'RUNNING');
    assert.ok(['BUILDING', 'SAVING'].includes((await first.store.get('backups', bid))!.status));
    assert.equal((await api(base, 'GET', `/backups/${bid}`)).status, 200);
    compute.agentOf(id).backupGate!.open();
    await until('COMPLETED', async () => (await first.store.get('backups', bid))?.status, (s) => s === 'COMPLETED');
  } finally {
    await first.close();
  }
  // Once the first one stops, the directory is free.
  const again = await startServer(config(stateDir), { compute, log: () => undefined, scheduleTickMs: 3_600_000 });
  await again.close();
  assert.ok(!fs.existsSync(path.join(stateDir, 'server.pid')), 'the pid file goes with the lock');
});

test('a taken port: exit status 1 with a clear message, and no task recovered', { timeout: 120_000 }, async () => {
  const stateDir = path.join(root, 'port');
  fs.mkdirSync(stateDir, { recursive: true });
  // A backup task left RUNNING by a crash: recovery would fail it.
  const store = await openState({ stateDir });
  const t = new Date().toISOString();
  const taskId = randomUUID();
  const backupId = randomUUID();
  await store.insert('tasks', { id: taskId, project_id: 'local', kind: 'backup.create', instance_id: null, backup_id: backupId, status: 'RUNNING', params: '{}', step: null, error: null, attempts: 1, deadline: null, heartbeat: t, owner: null, lease_until: null, created: t, updated: t });
  await store.insert('backups', {
    id: backupId, project_id: 'local', instance_id: null, name: 'interrupted', description: null, status: 'BUILDING', parent_id: null, location: null, size_bytes: null, data_bytes: null,
    files: null, checksum: null, datastore: 'couchdb', datastore_version: '3.5', progress: null, fail_reason: null, task_id: taskId, created: t, updated: t, verified_at: null, verify_result: null, cluster_id: null, cluster: null,
  });
  await store.close();

  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
  const port = (taken.address() as net.AddressInfo).port;
  try {
    const r = await serverProcess(stateDir, port);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, new RegExp(`couchtrove: cannot listen on 127\\.0\\.0\\.1:${port}: the port is already in use \\(EADDRINUSE\\)`));
    assert.ok(r.ms < 20_000, `exited after ${r.ms} ms`);
  } finally {
    await new Promise((r) => taken.close(r));
  }
  const after1 = await openState({ stateDir });
  try {
    assert.equal((await after1.get('tasks', taskId))?.status, 'RUNNING', 'the task was not recovered');
    assert.equal((await after1.get('backups', backupId))?.status, 'BUILDING');
  } finally {
    await after1.close();
  }
  // The lock went with the failed process: a start on a free port recovers the task as usual.
  const ok = await startServer(config(stateDir), { compute: new FakeCompute(new FakeRepository()), log: () => undefined, scheduleTickMs: 3_600_000 });
  try {
    assert.equal((await ok.store.get('tasks', taskId))?.status, 'FAILED');
    assert.equal((await ok.store.get('backups', backupId))?.status, 'FAILED');
  } finally {
    await ok.close();
  }
});
