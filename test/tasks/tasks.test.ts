// Durable tasks on both state stores: conflicts, expiry, crash recovery, usage_timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { forEachBackend } from '../support/backends.js';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';
import { gate } from '../support/fake-agent.js';

interface J {
  [k: string]: unknown;
}

async function call(p: TestPlane, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown): Promise<{ status: number; json: J }> {
  const r = await p.app.inject({ method, url: `/v1.0/local${url}`, headers: H, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as J) : {} };
}

async function activeInstance(p: TestPlane, body: J = {}): Promise<string> {
  const r = await call(p, 'POST', '/instances', { instance: { name: 'i', flavorRef: '1', volume: { size: 1 }, ...body } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const id = (r.json.instance as J).id as string;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  return id;
}

forEachBackend('tasks', (backend) => {
  test('create runs to ACTIVE with databases and users; the task is COMPLETED', async () => {
    const p = await startPlane({ state: await backend.options() });
    try {
      const id = await activeInstance(p, { databases: [{ name: 'db1' }], users: [{ name: 'u1', password: 'pw', databases: [{ name: 'db1' }] }] });
      const a = p.compute.agentOf(id);
      assert.ok(a.dbs.has('db1'));
      assert.deepEqual([...a.users.get('u1')!.databases], ['db1']);
      // The instance turns ACTIVE inside the task; the task itself is marked COMPLETED just after.
      await until('the create task to complete', async () => (await p.store.find('tasks', { instance_id: id }))[0]?.status, (s) => s === 'COMPLETED');
      const tasks = await p.store.find('tasks', { instance_id: id });
      assert.deepEqual(tasks.map((t) => [t.kind, t.status]), [['instance.create', 'COMPLETED']]);
      assert.equal((await p.store.get('instances', id))?.task_id, null);
    } finally {
      await p.close();
    }
  });

  test('conflicting tasks on one instance are refused with 422 and a message', async () => {
    const p = await startPlane({ state: await backend.options() });
    try {
      const id = await activeInstance(p);
      p.compute.agentOf(id).backupGate = gate();
      const b = await call(p, 'POST', '/backups', { backup: { name: 'b', instance: id } });
      assert.equal(b.status, 202);
      const r = await call(p, 'POST', `/instances/${id}/action`, { restart: {} });
      assert.equal(r.status, 422);
      assert.match((r.json.unprocessableEntity as J).message as string, /BACKUP.*backup\.create/);
      const r2 = await call(p, 'POST', '/backups', { backup: { name: 'b2', instance: id } });
      assert.equal(r2.status, 422);
      // Concurrent restarts: exactly one wins.
      p.compute.agentOf(id).backupGate!.open();
      await until('backup done', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
      p.compute.agentOf(id).restartGate = gate();
      const rs = await Promise.all([1, 2, 3].map(() => call(p, 'POST', `/instances/${id}/action`, { restart: {} })));
      assert.deepEqual(rs.map((x) => x.status).sort(), [202, 422, 422]);
      assert.equal((await p.store.get('instances', id))?.status, 'REBOOT');
      p.compute.agentOf(id).restartGate!.open();
      await until('restarted', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
    } finally {
      await p.close();
    }
  });

  test('a running backup cannot be deleted (422); once it expires it can', async () => {
    const p = await startPlane({ state: await backend.options(), env: { COUCHTROVE_BACKUP_TIMEOUT: '5' } });
    try {
      const id = await activeInstance(p);
      const stuck = gate(); // opened only at the end: a stuck backup
      p.compute.agentOf(id).backupGate = stuck;
      const b = await call(p, 'POST', '/backups', { backup: { name: 'b', instance: id } });
      const bid = (b.json.backup as J).id as string;
      assert.equal((b.json.backup as J).status, 'NEW');
      const shown = await until('progress', async () => (await call(p, 'GET', `/backups/${bid}`)).json.backup as J, (x) => x.progress !== undefined);
      assert.equal((shown.progress as J).percent, 40);
      const d = await call(p, 'DELETE', `/backups/${bid}`);
      assert.equal(d.status, 422);
      assert.match((d.json.unprocessableEntity as J).message as string, /still running.*40% done.*expires/);
      await until('expiry', async () => (await p.store.get('backups', bid))?.status, (s) => s === 'FAILED', 15_000);
      assert.match((await p.store.get('backups', bid))!.fail_reason!, /timed out/);
      await until('instance released', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
      assert.equal((await call(p, 'DELETE', `/backups/${bid}`)).status, 202);
      await until('deleted', async () => p.store.get('backups', bid), (x) => x === undefined);
      stuck.open();
    } finally {
      await p.close();
    }
  });

  test('crash mid-backup and mid-create: after restart every task ends in a true state', async () => {
    const state = await backend.options();
    const p1 = await startPlane({ state });
    const id = await activeInstance(p1);
    p1.compute.agentOf(id).backupGate = gate();
    const b = await call(p1, 'POST', '/backups', { backup: { name: 'b', instance: id } });
    const bid = (b.json.backup as J).id as string;
    await until('backup running', async () => (await p1.store.get('backups', bid))?.status, (s) => s === 'BUILDING' || s === 'SAVING');
    p1.compute.provisionGate = gate(); // the create hangs in provisioning
    const c = await call(p1, 'POST', '/instances', { instance: { name: 'j', flavorRef: '2', volume: { size: 2 }, databases: [{ name: 'x' }], users: [{ name: 'v', password: 'pw', databases: [{ name: 'x' }] }] } });
    const cid = (c.json.instance as J).id as string;
    await p1.crash();
    // Restart with the same state, the same "machines" (agents keep running), same state dir.
    p1.compute.provisionGate = undefined;
    p1.compute.agentOf(id).backupGate = undefined;
    // Its backup stopped with the crash (one its agent goes on to complete is kept: test/tasks/backup-faults).
    p1.compute.agentOf(id).running = null;
    const p2 = await startPlane({ state, compute: p1.compute, repo: p1.repo, stateDir: p1.stateDir });
    try {
      const backup = await until('backup failed', async () => p2.store.get('backups', bid), (x) => x?.status === 'FAILED');
      assert.match(backup!.fail_reason!, /interrupted/);
      assert.equal((await p2.store.get('instances', id))?.status, 'ACTIVE');
      const created = await until('create resumed', async () => p2.store.get('instances', cid), (x) => x?.status === 'ACTIVE');
      assert.equal(created?.task_id, null);
      assert.ok(p2.compute.agentOf(cid).users.has('v'), 'the user was created on resume (password kept in a 0600 secret file)');
      // The partial backup's removal (backup.discard) ends too.
      const open = await until('every task final', async () => p2.store.find('tasks', { status: ['NEW', 'RUNNING'] }), (x) => x.length === 0);
      assert.deepEqual(open, []);
      // The failed backup is deletable.
      assert.equal((await call(p2, 'DELETE', `/backups/${bid}`)).status, 202);
    } finally {
      await p2.close();
      fs.rmSync(p1.stateDir, { recursive: true, force: true });
    }
  });

  test('issue 22: a crash mid-backup: the reason names the step and progress; a backup the agent then completed is kept COMPLETED', async () => {
    const state = await backend.options();
    const p1 = await startPlane({ state });
    const id = await activeInstance(p1);
    const agent = p1.compute.agentOf(id);
    const held = gate();
    agent.backupGate = held;
    const b = await call(p1, 'POST', '/backups', { backup: { name: 'b', instance: id } });
    const bid = (b.json.backup as J).id as string;
    // The fake agent reports 400 of 1000 bytes: SAVING 40%, and the task's step follows.
    await until('saving', async () => (await p1.store.get('backups', bid))?.status, (s) => s === 'SAVING');
    const taskId = (await p1.store.get('backups', bid))!.task_id!;
    await until('step saving', async () => (await p1.store.get('tasks', taskId))?.step, (s) => s === 'SAVING 40%');
    await p1.crash();
    const p2 = await startPlane({ state, compute: p1.compute, repo: p1.repo, stateDir: p1.stateDir });
    try {
      const failed = await until('backup failed', async () => p2.store.get('backups', bid), (x) => x?.status === 'FAILED');
      assert.match(failed!.fail_reason!, /interrupted: .* at step SAVING 40%/);
      assert.doesNotMatch(failed!.fail_reason!, /step start/);
      // The agent finishes the backup the control plane no longer waits for: it is kept, and recorded.
      held.open();
      const kept = await until('kept', async () => p2.store.get('backups', bid), (x) => x?.status === 'COMPLETED', 15_000);
      assert.equal(kept!.fail_reason, null);
      assert.equal(kept!.checksum, 'c'.repeat(64));
      assert.equal(kept!.size_bytes, 12345);
      assert.ok(p2.repo.backups.has(bid), 'not removed from the repository');
      assert.equal((await p2.store.get('instances', id))?.status, 'ACTIVE');
      // A complete backup with no such record (another instance's label) is not adopted: removed as partial.
      const other = gate();
      agent.backupGate = other;
      const b2 = await call(p2, 'POST', '/backups', { backup: { name: 'b2', instance: id } });
      const bid2 = (b2.json.backup as J).id as string;
      await until('saving 2', async () => (await p2.store.get('backups', bid2))?.status, (s) => s === 'SAVING');
      await p2.crash();
      const p3 = await startPlane({ state, compute: p1.compute, repo: p1.repo, stateDir: p1.stateDir });
      try {
        await until('backup 2 failed', async () => p3.store.get('backups', bid2), (x) => x?.status === 'FAILED');
        // What the repository holds under that id names another instance.
        const realStored = p3.repo.stored.bind(p3.repo);
        p3.repo.stored = async (r: string, i: string) => {
          const found = await realStored(r, i);
          return found && i === bid2 ? { ...found, labels: { instance_id: 'someone-else' } } : found;
        };
        other.open();
        await until('the agent done', async () => agent.running, (x) => x === null);
        await until('removed', async () => p3.repo.backups.has(bid2), (x) => !x, 15_000);
        assert.equal((await p3.store.get('backups', bid2))?.status, 'FAILED');
      } finally {
        await p3.close();
      }
    } finally {
      await p2.close();
      fs.rmSync(p1.stateDir, { recursive: true, force: true });
    }
  });

  test('usage_timeout bounds provisioning: the instance goes to ERROR, never BUILD forever', async () => {
    const p = await startPlane({ state: await backend.options(), env: { COUCHTROVE_COUCHDB_USAGE_TIMEOUT: '5' } });
    try {
      p.compute.provisionGate = gate();
      const c = await call(p, 'POST', '/instances', { instance: { name: 'slow', flavorRef: '1', volume: { size: 1 } } });
      const id = (c.json.instance as J).id as string;
      assert.equal((c.json.instance as J).status, 'BUILD');
      const inst = await until('ERROR', async () => p.store.get('instances', id), (x) => x?.status === 'ERROR', 15_000);
      assert.match(inst!.fault!, /timed out/);
      const shown = await call(p, 'GET', `/instances/${id}`);
      assert.match(((shown.json.instance as J).fault as J).message as string, /timed out/);
      // An ERROR instance can be deleted.
      p.compute.provisionGate.open();
      assert.equal((await call(p, 'DELETE', `/instances/${id}`)).status, 202);
      await until('gone', async () => p.store.get('instances', id), (x) => x === undefined);
    } finally {
      await p.close();
    }
  });

  test('a task left RUNNING past its deadline while the server was down is failed at start', async () => {
    const state = await backend.options();
    const p1 = await startPlane({ state });
    const id = await activeInstance(p1);
    await p1.crash();
    const { openState } = await import('../../src/state/index.js');
    const s = await openState(state);
    const past = new Date(Date.now() - 1000).toISOString();
    await s.insert('tasks', { id: 't-old', project_id: 'local', kind: 'instance.restart', instance_id: id, backup_id: null, status: 'RUNNING', params: '{}', step: null, error: null, attempts: 1, deadline: past, heartbeat: past, owner: null, lease_until: null, created: past, updated: past });
    await s.update('instances', id, { status: 'REBOOT', task_id: 't-old' });
    await s.close();
    const p2 = await startPlane({ state, compute: p1.compute, repo: p1.repo, stateDir: p1.stateDir });
    try {
      const t = await p2.store.get('tasks', 't-old');
      assert.equal(t?.status, 'FAILED');
      assert.match(t!.error!, /deadline/);
      const inst = await p2.store.get('instances', id);
      assert.equal(inst?.status, 'ACTIVE'); // the agent says CouchDB runs
      assert.equal(inst?.task_id, null);
    } finally {
      await p2.close();
      fs.rmSync(p1.stateDir, { recursive: true, force: true });
    }
  });
});
