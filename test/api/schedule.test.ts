// Backup schedules on both state stores (control plane over the fakes; the scheduler's clock is
// injected: each tick is given the time, so "every minute" runs without waiting a minute).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forEachBackend } from '../support/backends.js';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';
import { gate } from '../support/fake-agent.js';
import { BackupScheduler, slotTaskId } from '../../src/tasks/schedules.js';
import type { AgentBackupRequest } from '../../src/agent/protocol.js';

interface J {
  [k: string]: unknown;
}

async function call(p: TestPlane, method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown): Promise<{ status: number; json: J }> {
  const r = await p.app.inject({ method, url: `/v1.0/local${url}`, headers: H, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as J) : {} };
}

async function activeInstance(p: TestPlane): Promise<string> {
  const r = await call(p, 'POST', '/instances', { instance: { name: 'i', flavorRef: '1', volume: { size: 1 } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const id = (r.json.instance as J).id as string;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  return id;
}

async function backupsOf(p: TestPlane, id: string): Promise<J[]> {
  return (await call(p, 'GET', `/backups?instance_id=${id}`)).json.backups as J[];
}

const minute = (k: number, from: number): Date => new Date(from + k * 60_000 + 1000);

forEachBackend('schedules', (backend) => {
  test('bad cron patterns are 400 with a message; create, list, delete', async () => {
    const p = await startPlane({ state: await backend.options() });
    try {
      const id = await activeInstance(p);
      for (const pattern of ['not a cron', '61 * * * *', '* * * *', '0 0 * * * *', '* * 32 * *']) {
        const r = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 's', pattern } });
        assert.equal(r.status, 400, `${pattern}: ${JSON.stringify(r.json)}`);
        assert.match((r.json.badRequest as J).message as string, /Invalid schedule pattern/);
      }
      const bad = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 's', pattern: '* * * * *', keep_last: 0 } });
      assert.equal(bad.status, 400);
      const missing = await call(p, 'POST', '/instances/no-such-instance/schedules', { schedule: { name: 's', pattern: '* * * * *' } });
      assert.equal(missing.status, 404);
      const noCluster = await call(p, 'POST', '/clusters/no-such-cluster/schedules', { schedule: { name: 's', pattern: '* * * * *' } });
      assert.equal(noCluster.status, 404);
      assert.match(JSON.stringify(noCluster.json), /Cluster no-such-cluster could not be found/);
      // An instance's schedule is not found through a cluster's endpoint of the same id, nor the other way.
      assert.equal((await call(p, 'GET', `/clusters/${id}/schedules`)).status, 404);
      const c = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'nightly', pattern: '0 3 * * *', description: 'd', incremental: 1, keep_daily: 7 } });
      assert.equal(c.status, 201, JSON.stringify(c.json));
      const s = c.json.schedule as J;
      assert.equal(s.pattern, '0 3 * * *');
      assert.equal(s.incremental, true);
      assert.match(s.next_run as string, /T03:00:00\.000Z$/);
      const l = await call(p, 'GET', `/instances/${id}/schedules`);
      assert.deepEqual((l.json.schedules as J[]).map((x) => x.id), [s.id]);
      assert.equal((await call(p, 'DELETE', `/instances/${id}/schedules/${s.id as string}`)).status, 202);
      assert.deepEqual((await call(p, 'GET', `/instances/${id}/schedules`)).json.schedules, []);
      assert.equal((await call(p, 'DELETE', `/instances/${id}/schedules/${s.id as string}`)).status, 404);
    } finally {
      await p.close();
    }
  });

  test('an every-minute full schedule runs backups and applies keep_last; a busy instance is skipped', async () => {
    const p = await startPlane({ state: await backend.options() });
    const logs: string[] = [];
    const scheduler = new BackupScheduler(p.plane, { pollMs: 10, log: (m) => logs.push(m) });
    try {
      const id = await activeInstance(p);
      const c = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'minutely', pattern: '* * * * *', keep_last: 2 } });
      assert.equal(c.status, 201, JSON.stringify(c.json));
      const sid = (c.json.schedule as J).id as string;
      const t0 = Date.now();
      assert.deepEqual(await scheduler.tick(new Date(t0 - 120_000)), [], 'not due yet');
      const made: string[] = [];
      for (let k = 1; k <= 4; k++) {
        assert.deepEqual(await scheduler.tick(minute(k, t0)), [sid]);
        await scheduler.idle();
        const rows = await backupsOf(p, id);
        made.push(...rows.map((b) => b.id as string).filter((x) => !made.includes(x)));
        assert.ok(rows.every((b) => b.status === 'COMPLETED' && b.parent_id === null), JSON.stringify(rows));
        assert.equal(rows.length, Math.min(k, 2), `after run ${k}`);
      }
      assert.equal(made.length, 4);
      assert.deepEqual((await backupsOf(p, id)).map((b) => b.id), made.slice(2), 'the two newest are kept; the others are gone from the list');
      assert.ok(!p.repo.backups.has(made[0]!) && !p.repo.backups.has(made[1]!), 'and from the repository');
      const s = (await call(p, 'GET', `/instances/${id}/schedules/${sid}`)).json.schedule as J;
      assert.match(s.last_result as string, /COMPLETED; retention removed 1/);

      // Busy: a backup is running → the run is skipped with a logged reason, and not retried for that slot.
      p.compute.agentOf(id).backupGate = gate();
      const manual = await call(p, 'POST', '/backups', { backup: { name: 'manual', instance: id } });
      assert.equal(manual.status, 202);
      assert.deepEqual(await scheduler.tick(minute(5, t0)), [sid]);
      await scheduler.idle();
      assert.match(logs.join('\n'), /run skipped: .*(backup .* is running|BACKUP)/);
      const skipped = (await call(p, 'GET', `/instances/${id}/schedules/${sid}`)).json.schedule as J;
      assert.match(skipped.last_result as string, /^skipped: /);
      p.compute.agentOf(id).backupGate!.open();
      await until('manual backup done', async () => (await p.store.get('instances', id))?.status, (x) => x === 'ACTIVE');
      const rows = await backupsOf(p, id);
      assert.equal(rows.length, 3, 'the manual backup is not the schedule\'s: retention leaves it');
    } finally {
      await scheduler.stop();
      await p.close();
    }
  });

  test('an incremental schedule chains on the latest backup; retention never breaks a kept chain', async () => {
    const p = await startPlane({ state: await backend.options() });
    const scheduler = new BackupScheduler(p.plane, { pollMs: 10 });
    try {
      const id = await activeInstance(p);
      const requests: AgentBackupRequest[] = [];
      const agent = p.compute.agentOf(id);
      const original = agent.backup.bind(agent);
      agent.backup = async (r: AgentBackupRequest) => {
        requests.push(r);
        return original(r);
      };
      const c = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'hourly', pattern: '*/1 * * * *', incremental: 1, keep_last: 1 } });
      assert.equal(c.status, 201, JSON.stringify(c.json));
      const t0 = Date.now();
      for (let k = 1; k <= 3; k++) {
        await scheduler.tick(minute(k, t0));
        await scheduler.idle();
      }
      const rows = await backupsOf(p, id);
      assert.equal(rows.length, 3, 'keep_last 1 keeps the newest and its whole chain');
      assert.equal(rows[0]!.parent_id, null);
      assert.equal(rows[1]!.parent_id, rows[0]!.id);
      assert.equal(rows[2]!.parent_id, rows[1]!.id);
      assert.deepEqual(requests.map((r) => r.parent ?? null), [null, rows[0]!.id, rows[1]!.id], 'the agent is asked for incrementals');
      const del = await call(p, 'DELETE', `/backups/${rows[0]!.id as string}`);
      assert.equal(del.status, 422);
      assert.match((del.json.unprocessableEntity as J).message as string, /depends on it/);
    } finally {
      await scheduler.stop();
      await p.close();
    }
  });

  test("Trove's parent rules: COMPLETED, same instance; incremental: 1 without a backup is a full", async () => {
    const p = await startPlane({ state: await backend.options() });
    try {
      const a = await activeInstance(p);
      const b = await activeInstance(p);
      const first = await call(p, 'POST', '/backups', { backup: { name: 'f', instance: a, incremental: 1 } });
      assert.equal(first.status, 202, JSON.stringify(first.json));
      assert.equal((first.json.backup as J).parent_id, null);
      const fid = (first.json.backup as J).id as string;
      await until('COMPLETED', async () => (await p.store.get('backups', fid))?.status, (s) => s === 'COMPLETED');
      await until('ACTIVE', async () => (await p.store.get('instances', a))?.status, (s) => s === 'ACTIVE');
      const other = await call(p, 'POST', '/backups', { backup: { name: 'x', instance: b, parent_id: fid } });
      assert.equal(other.status, 400, JSON.stringify(other.json));
      assert.match((other.json.badRequest as J).message as string, /same instance/);
      p.compute.agentOf(a).backupGate = gate();
      const running = await call(p, 'POST', '/backups', { backup: { name: 'r', instance: a, parent_id: fid } });
      assert.equal(running.status, 202);
      const rid = (running.json.backup as J).id as string;
      assert.equal((running.json.backup as J).parent_id, fid);
      p.compute.agentOf(a).backupGate!.open();
      await until('ACTIVE', async () => (await p.store.get('instances', a))?.status, (s) => s === 'ACTIVE');
      await p.store.update('backups', rid, { status: 'FAILED' });
      const onFailed = await call(p, 'POST', '/backups', { backup: { name: 'y', instance: a, parent_id: rid } });
      assert.equal(onFailed.status, 422, JSON.stringify(onFailed.json));
      assert.match((onFailed.json.unprocessableEntity as J).message as string, /not COMPLETED/);
      // A FAILED child does not hold its parent.
      assert.equal((await call(p, 'DELETE', `/backups/${fid}`)).status, 202);
    } finally {
      await p.close();
    }
  });

  test('a run taken over after its backup completed and was deleted requests no second backup under the slot\'s id', async () => {
    // The race of test/tasks/fleet-fault (1 run in 18): the process running a slot dies while the run waits on
    // its COMPLETED backup, a user deletes that backup, another process resumes the run: it found no backup row
    // and requested the same backup id again.
    const state = await backend.options();
    const p = await startPlane({ state });
    let p2: TestPlane | undefined;
    // Polls its backup once an hour: the run is still waiting when the process "dies".
    const first = new BackupScheduler(p.plane, { pollMs: 3_600_000 });
    let second: BackupScheduler | undefined;
    try {
      const id = await activeInstance(p);
      const requested: string[] = [];
      const agent = p.compute.agentOf(id);
      const real = agent.backup.bind(agent);
      agent.backup = (r: AgentBackupRequest) => {
        requested.push(r.id);
        return real(r);
      };
      const c = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'minutely', pattern: '* * * * *' } });
      const sid = (c.json.schedule as J).id as string;
      const slot = (await p.store.get('backup_schedules', sid))!.next_run;
      assert.deepEqual(await first.tick(new Date(Date.parse(slot) + 1000)), [sid]);
      const done = await until('the slot\'s backup', async () => backupsOf(p, id), (b) => b.length === 1 && b[0]!.status === 'COMPLETED');
      const bid = done[0]!.id as string;
      assert.equal((await call(p, 'DELETE', `/backups/${bid}`)).status, 202);
      await until('the backup deleted', async () => (await backupsOf(p, id)).length, (n) => n === 0);
      const run = slotTaskId(sid, slot);
      assert.equal((await p.store.get('tasks', run))?.status, 'RUNNING', 'the run still waits on its backup');
      await p.crash();
      p2 = await startPlane({ state, compute: p.compute, repo: p.repo, stateDir: p.stateDir });
      second = new BackupScheduler(p2.plane, { pollMs: 10 });
      const t = await until('the run taken over and ended', async () => p2!.store.get('tasks', run), (x) => x?.status === 'COMPLETED' || x?.status === 'FAILED');
      assert.equal(t?.status, 'COMPLETED', t?.error ?? '');
      assert.ok((t?.attempts ?? 0) > 1, 'the run was resumed');
      assert.deepEqual(requested, [bid], 'one backup request for the slot');
      assert.deepEqual(await backupsOf(p2, id), []);
      const s = (await call(p2, 'GET', `/instances/${id}/schedules/${sid}`)).json.schedule as J;
      assert.match(s.last_result as string, new RegExp(`backup ${bid} was requested already .*not taken again`));
    } finally {
      await first.stop();
      await second?.stop();
      await p2?.close();
      await p.close();
    }
  });

  test('schedules persist across a restart; a run missed while down runs once at start', async () => {
    const state = await backend.options();
    const p = await startPlane({ state });
    let p2: TestPlane | undefined;
    let scheduler: BackupScheduler | undefined;
    try {
      const id = await activeInstance(p);
      const c = await call(p, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'minutely', pattern: '* * * * *' } });
      assert.equal(c.status, 201);
      const sid = (c.json.schedule as J).id as string;
      await p.crash();
      p2 = await startPlane({ state, compute: p.compute, repo: p.repo, stateDir: p.stateDir });
      const l = await call(p2, 'GET', `/instances/${id}/schedules`);
      assert.deepEqual((l.json.schedules as J[]).map((x) => x.id), [sid]);
      // The server was "down" for a day: 1440 slots were missed; one backup is taken.
      const day = new Date(Date.now() + 86_400_000);
      scheduler = new BackupScheduler(p2.plane, { pollMs: 10, clock: () => day });
      scheduler.start();
      await until('a run', async () => (await backupsOf(p2!, id)).filter((b) => b.status === 'COMPLETED').length, (n) => n >= 1);
      await scheduler.idle();
      assert.equal((await backupsOf(p2, id)).length, 1);
      const s = (await call(p2, 'GET', `/instances/${id}/schedules/${sid}`)).json.schedule as J;
      assert.ok(new Date(s.next_run as string).getTime() > day.getTime(), 'next_run moved past now');
    } finally {
      await scheduler?.stop();
      await p2?.close();
      await p.close();
    }
  });
});
