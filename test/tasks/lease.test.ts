// Task leases and schedule slots with several control-plane processes on one PostgreSQL (issue 18), each
// "process" here being its own TaskManager (or control plane) with its own connection pool.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openState, type StateStore } from '../../src/state/index.js';
import { TaskManager, LeaseLostError, type TaskContext } from '../../src/tasks/manager.js';
import { LeaderLease } from '../../src/tasks/leader.js';
import { BackupScheduler, slotTaskId } from '../../src/tasks/schedules.js';
import { skipPostgres, startPostgres, type PostgresServer } from '../support/postgres.js';
import { startPlane, until, H, type TestPlane } from '../support/plane.js';

const skip = skipPostgres();
if (skip) console.log(`lease tests skipped: ${skip}`);

interface Counts {
  runs: Map<string, string[]>;
  failedCalls: Map<string, number>;
  lost: string[];
}

/** A resumable kind ('res') and one that is not ('once'); both hold until `release` resolves. */
function register(m: TaskManager, counts: Counts, release: Promise<void>): void {
  const run = async (ctx: TaskContext<unknown>): Promise<void> => {
    counts.runs.set(ctx.task.id, [...(counts.runs.get(ctx.task.id) ?? []), m.owner]);
    await release;
    try {
      await ctx.step('after-wait');
    } catch (err) {
      if (err instanceof LeaseLostError) counts.lost.push(ctx.task.id);
      throw err;
    }
  };
  const failed = async (task: { id: string }): Promise<void> => {
    counts.failedCalls.set(task.id, (counts.failedCalls.get(task.id) ?? 0) + 1);
  };
  m.register('res', { resumable: true, run, failed });
  m.register('once', { resumable: false, run, failed });
}

describe('task leases [postgres]', { skip }, () => {
  let server: PostgresServer | undefined;
  let n = 0;
  const stores: StateStore[] = [];
  const managers: TaskManager[] = [];
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    for (const m of managers) await m.stop();
    for (const s of stores) await s.close();
    await server?.stop();
  });

  async function freshDb(): Promise<string> {
    const pg = (await import('pg')).default;
    const name = `lease${process.pid}_${n++}`;
    const admin = new pg.Client({ connectionString: server!.url });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const u = new URL(server!.url);
    u.pathname = `/${name}`;
    return u.toString();
  }

  async function manager(url: string, counts: Counts, release: Promise<void>, leaseMs = 600): Promise<TaskManager> {
    const store = await openState({ databaseUrl: url });
    stores.push(store);
    const m = new TaskManager(store, { leaseMs, renewMs: 100, watchdogMs: 100 });
    register(m, counts, release);
    managers.push(m);
    return m;
  }

  test('a live owner keeps its tasks; once its lease runs out another takes them over, exactly once; the old owner stops writing', async () => {
    const url = await freshDb();
    const counts: Counts = { runs: new Map(), failedCalls: new Map(), lost: [] };
    let releaseA!: () => void;
    const aGate = new Promise<void>((r) => (releaseA = r));
    const a = await manager(url, counts, aGate);
    await a.recover(); // starts A's renewals
    const res = await a.submit({ kind: 'res', projectId: 'p', timeout: 600 });
    const once = await a.submit({ kind: 'once', projectId: 'p', timeout: 600 });
    await until('A runs both', async () => counts.runs.size, (x) => x === 2);

    // B starts beside a live A: it takes nothing, now or in its sweeps over three lease periods.
    let releaseB!: () => void;
    const b = await manager(url, counts, new Promise<void>((r) => (releaseB = r)));
    assert.deepEqual(await b.recover(), { resumed: [], failed: [] });
    await new Promise((r) => setTimeout(r, 1800));
    assert.deepEqual([...counts.runs.values()].flat(), [a.owner, a.owner], 'B took nothing while A renewed');
    const storeB = stores[1]!;
    assert.equal((await storeB.get('tasks', res.id))?.owner, a.owner);

    // A stops renewing (as a paused or dead process): B takes over within lease + sweep.
    (a as unknown as { renewTimer: NodeJS.Timeout }).renewTimer.close();
    (a as unknown as { timer: NodeJS.Timeout }).timer.close();
    const t0 = Date.now();
    await until('B resumes the resumable task', async () => counts.runs.get(res.id) ?? [], (r) => r.length === 2, 5000);
    const took = Date.now() - t0;
    assert.ok(took < 600 + 100 + 1500, `takeover after ${took} ms`);
    assert.deepEqual(counts.runs.get(res.id), [a.owner, b.owner]);
    const f = await until('the other is FAILED', async () => storeB.get('tasks', once.id), (t) => t?.status === 'FAILED');
    assert.match(f!.error ?? '', /^interrupted: .*a once task cannot be resumed/);
    // Its cleanup runs right after the status is written: waited for, then seen to have run only once.
    await until('its cleanup ran', async () => counts.failedCalls.get(once.id) ?? 0, (n) => n >= 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(counts.failedCalls.get(once.id), 1, 'its cleanup ran once');
    assert.deepEqual(counts.runs.get(once.id), [a.owner], 'a non-resumable task never runs again');

    // A wakes up: its next write finds another owner (or a final row) and it stops without writing.
    releaseA();
    await until('A notices', async () => counts.lost.length, (x) => x === 2);
    releaseB();
    const done = await until('B completes the resumed task', async () => storeB.get('tasks', res.id), (t) => t?.status === 'COMPLETED');
    assert.equal(done!.owner, b.owner);
    assert.equal((await storeB.get('tasks', once.id))?.status, 'FAILED', 'A did not overwrite the failure');
    assert.equal(counts.failedCalls.get(once.id), 1);
  });

  test('two processes sweeping the same expired tasks at once take each exactly once (SKIP LOCKED)', async () => {
    const url = await freshDb();
    const counts: Counts = { runs: new Map(), failedCalls: new Map(), lost: [] };
    const open = Promise.resolve();
    // 60 tasks left by a dead process: lease in the past.
    const seed = await openState({ databaseUrl: url });
    stores.push(seed);
    const past = new Date(Date.now() - 60_000).toISOString();
    const deadline = new Date(Date.now() + 600_000).toISOString();
    for (let i = 0; i < 60; i++) {
      await seed.insert('tasks', {
        id: `t${String(i).padStart(3, '0')}`, project_id: 'p', kind: i % 2 ? 'res' : 'once', instance_id: null, backup_id: null, status: 'RUNNING',
        params: '{}', step: 'x', error: null, attempts: 1, deadline, heartbeat: past, owner: 'dead:1:x', lease_until: past, created: past, updated: past,
      });
    }
    const ms = await Promise.all([0, 1, 2].map(() => manager(url, counts, open, 5000)));
    const rs = await Promise.all(ms.map((m) => m.recover()));
    const resumed = rs.flatMap((r) => r.resumed);
    const failed = rs.flatMap((r) => r.failed);
    assert.equal(new Set(resumed).size, resumed.length, 'no task resumed twice');
    assert.equal(new Set(failed).size, failed.length, 'no task failed twice');
    assert.equal(resumed.length, 30);
    assert.equal(failed.length, 30);
    await until('all final', async () => (await seed.find('tasks', { status: ['NEW', 'RUNNING'] })).length, (x) => x === 0);
    for (const [id, owners] of counts.runs) assert.equal(owners.length, 1, `task ${id} ran in ${owners.join(', ')}`);
    for (const [id, k] of counts.failedCalls) assert.equal(k, 1, `task ${id} cleaned up ${k} times`);
    assert.equal(counts.failedCalls.size, 30);
    console.log(`sweeps took ${rs.map((r) => r.resumed.length + r.failed.length).join(' + ')} tasks`);
  });

  test('a leader lease has one holder; it passes on when the holder stops renewing', async () => {
    const url = await freshDb();
    const [s1, s2] = [await openState({ databaseUrl: url }), await openState({ databaseUrl: url })];
    stores.push(s1, s2);
    const l1 = new LeaderLease(s1, 'health', 'one', 300);
    const l2 = new LeaderLease(s2, 'health', 'two', 300);
    const first = await Promise.all([l1.hold(), l2.hold()]);
    assert.deepEqual(first.sort(), [false, true]);
    const [holder, other] = l1.held ? [l1, l2] : [l2, l1];
    assert.equal(await holder.hold(), true, 'renewal');
    assert.equal(await other.hold(), false);
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(await other.hold(), true, 'taken once expired');
    assert.equal(await holder.hold(), false);
    await other.release();
    assert.equal(await holder.hold(), true, 'released: taken at once');
  });
});

interface J {
  [k: string]: unknown;
}

describe('schedule slots across processes [postgres]', { skip }, () => {
  let server: PostgresServer | undefined;
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await server?.stop();
  });

  test('two processes ticking the same due slot fire it once; a slot whose process died is fired by the other', async () => {
    const state = { databaseUrl: server!.url };
    const p1 = await startPlane({ state });
    let p2: TestPlane | undefined;
    const schedulers: BackupScheduler[] = [];
    try {
      p2 = await startPlane({ state, compute: p1.compute, repo: p1.repo, stateDir: p1.stateDir });
      const s1 = new BackupScheduler(p1.plane, { pollMs: 10 });
      const s2 = new BackupScheduler(p2.plane, { pollMs: 10 });
      schedulers.push(s1, s2);
      const r = await p1.app.inject({ method: 'POST', url: '/v1.0/local/instances', headers: H, payload: JSON.stringify({ instance: { name: 'i', flavorRef: '1', volume: { size: 1 } } }) });
      const id = ((JSON.parse(r.body) as J).instance as J).id as string;
      await until('ACTIVE', async () => (await p1.store.get('instances', id))?.status, (x) => x === 'ACTIVE');
      const c = await p2.app.inject({ method: 'POST', url: `/v1.0/local/instances/${id}/schedules`, headers: H, payload: JSON.stringify({ schedule: { name: 'm', pattern: '* * * * *' } }) });
      assert.equal(c.statusCode, 201, c.body);
      const sid = ((JSON.parse(c.body) as J).schedule as J).id as string;
      const backups = async (): Promise<number> => (await p1.store.find('backups', { instance_id: id })).length;

      // Both due at the same moment, five times over: one run per slot.
      const t0 = Date.now();
      for (let k = 1; k <= 5; k++) {
        const at = new Date(t0 + k * 60_000 + 1000);
        const started = await Promise.all([s1.tick(at), s2.tick(at)]);
        assert.equal(started.flat().length, 1, `slot ${k}: ${JSON.stringify(started)}`);
        await s1.idle();
        await s2.idle();
        await until('backup done', async () => (await p1.store.find('backups', { instance_id: id, status: 'COMPLETED' })).length, (x) => x === k);
        await until('ACTIVE', async () => (await p1.store.get('instances', id))?.status, (x) => x === 'ACTIVE');
      }
      assert.equal(await backups(), 5);

      // A process fired the next slot (its task is written) and died before running it or moving next_run.
      const sched = (await p1.store.get('backup_schedules', sid))!;
      const slot = sched.next_run;
      const past = new Date(Date.now() - 60_000).toISOString();
      await p1.store.insert('tasks', {
        id: slotTaskId(sid, slot), project_id: 'local', kind: 'schedule.run', instance_id: null, backup_id: null, status: 'NEW',
        params: JSON.stringify({ scheduleId: sid, slot, at: new Date(Date.parse(slot) + 1000).toISOString() }), step: null, error: null, attempts: 0,
        deadline: new Date(Date.now() + 600_000).toISOString(), heartbeat: past, owner: 'dead:1:x', lease_until: past, created: past, updated: past,
      });
      // The survivor's tick sees the slot due, finds it fired (no second run), moves next_run on...
      assert.deepEqual(await s2.tick(new Date(Date.parse(slot) + 2000)), []);
      assert.notEqual((await p1.store.get('backup_schedules', sid))!.next_run, slot);
      // ...and its sweep takes the dead process's run over: one backup for the slot.
      await until('the dead slot is run', async () => (await p1.store.find('backups', { instance_id: id, status: 'COMPLETED' })).length, (x) => x === 6, 10_000);
      const t = await until('its task ends', async () => p1.store.get('tasks', slotTaskId(sid, slot)), (x) => x?.status === 'COMPLETED');
      assert.notEqual(t!.owner, 'dead:1:x');
      assert.equal(await backups(), 6);
    } finally {
      for (const s of schedulers) await s.stop();
      await p2?.close();
      await p1.close();
    }
  });
});
