// Incremental backups through the API on a real server (real agents, development engine or
// COUCHDB_HOME): parent_id / incremental: 1, much smaller than the full, restore through the chain,
// deleting a parent that a kept incremental depends on is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { sandbox, basicAuth, startServer, api, waitStatus, type J, type RealServer } from '../support/server.js';
import { runCli } from '../support/cli.js';

const { root, stateDir, track } = sandbox('couchtrove-incremental-');
let server: RealServer | undefined;

const auth = basicAuth('alice', 's3cret-pw');

async function bulk(url: string, from: number, n: number, pad: number): Promise<void> {
  const docs = Array.from({ length: n }, (_, i) => ({ _id: `doc-${from + i}`, n: from + i, pad: 'x'.repeat(pad) }));
  const r = await fetch(`${url}/orders/_bulk_docs`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ docs }) });
  assert.equal(r.status, 201, await r.text());
}

/** An ACTIVE instance with database orders and user alice, created through the API. */
async function activeInstance(base: string, name: string): Promise<J> {
  const c = await api(base, 'POST', '/instances', {
    instance: { name, flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 's3cret-pw', databases: [{ name: 'orders' }] }] },
  });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const inst = await waitStatus(base, 'instances', (c.json.instance as J).id as string, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  return inst;
}

async function backup(base: string, body: J): Promise<J> {
  const b = await api(base, 'POST', '/backups', { backup: body });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  const done = await waitStatus(base, 'backups', (b.json.backup as J).id as string, ['COMPLETED', 'FAILED']);
  assert.equal(done.status, 'COMPLETED', JSON.stringify(done));
  return done;
}

test('incremental backups through the API: parent_id, size, restore through the chain, parent deletion refused', { timeout: 240_000 }, async (t) => {
  server = track(await startServer(stateDir));
  const base = server.api;
  const inst = await activeInstance(base, 'inc');
  const id = inst.id as string;
  const url = inst.couchdb_url as string;

  // incremental: 1 with no COMPLETED backup yet is a full backup (as Trove does).
  for (let i = 0; i < 8; i++) await bulk(url, i * 250, 250, 2000);
  const full = await backup(base, { name: 'full', instance: id, incremental: 1 });
  assert.equal(full.parent_id, null);

  await bulk(url, 100_000, 10, 100);
  const inc1 = await backup(base, { name: 'inc1', instance: id, incremental: 1 });
  assert.equal(inc1.parent_id, full.id, 'incremental: 1 takes the latest COMPLETED backup');
  t.diagnostic(`full ${String(full.size_bytes)} bytes stored, incremental ${String(inc1.size_bytes)} bytes`);
  assert.ok((inc1.size_bytes as number) * 10 < (full.size_bytes as number), `incremental ${String(inc1.size_bytes)} bytes vs full ${String(full.size_bytes)}`);

  await bulk(url, 200_000, 10, 100);
  const inc2 = await backup(base, { name: 'inc2', instance: id, parent_id: inc1.id });
  assert.equal(inc2.parent_id, inc1.id);
  assert.ok((inc2.size_bytes as number) * 10 < (full.size_bytes as number));

  // Trove's parent rules: unknown → 404, not COMPLETED / other instance → 4xx with a message.
  const unknown = await api(base, 'POST', '/backups', { backup: { name: 'x', instance: id, parent_id: 'no-such-backup' } });
  assert.equal(unknown.status, 404, JSON.stringify(unknown.json));

  // Deleting a backup a kept incremental depends on: 422 naming the dependant.
  const del = await api(base, 'DELETE', `/backups/${full.id as string}`);
  assert.equal(del.status, 422, JSON.stringify(del.json));
  assert.match((del.json.unprocessableEntity as J).message as string, new RegExp(`${inc1.id as string}.*depends on it`));

  // Restore from the newest incremental: every document of the three backups is there.
  const r = await api(base, 'POST', '/instances', { instance: { name: 'inc-restored', flavorRef: '1', volume: { size: 1 }, restorePoint: { backupRef: inc2.id } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const rinst = await waitStatus(base, 'instances', (r.json.instance as J).id as string, ['ACTIVE', 'ERROR']);
  assert.equal(rinst.status, 'ACTIVE', JSON.stringify(rinst));
  const info = (await (await fetch(`${rinst.couchdb_url as string}/orders`, { headers: { authorization: auth } })).json()) as { doc_count: number };
  assert.equal(info.doc_count, 2000 + 20);
  const last = await fetch(`${rinst.couchdb_url as string}/orders/doc-200009`, { headers: { authorization: auth } });
  assert.equal(last.status, 200);

  // The CLI: backup create --incremental, schedule create|list|delete (bad pattern: a usage error).
  const env = { COUCHTROVE_API_URL: server.url };
  const cb = await runCli(['backup', 'create', '--instance', 'inc', '--name', 'cli-inc', '--incremental', '--wait', '--json'], env);
  assert.equal(cb.code, 0, cb.stderr);
  const cliInc = (JSON.parse(cb.stdout) as { backup: J }).backup;
  assert.equal(cliInc.parent_id, inc2.id);
  assert.equal(cliInc.status, 'COMPLETED');
  const badPattern = await runCli(['schedule', 'create', '--instance', 'inc', '--name', 's', '--pattern', '* * *'], env);
  assert.equal(badPattern.code, 2);
  assert.match(badPattern.stderr, /--pattern: expected 5 cron fields/);
  const serverBad = await runCli(['schedule', 'create', '--instance', 'inc', '--name', 's', '--pattern', '99 * * * *'], env);
  assert.equal(serverBad.code, 1);
  assert.match(serverBad.stderr, /Invalid schedule pattern.*HTTP 400/);
  const sc = await runCli(['schedule', 'create', '--instance', 'inc', '--name', 'hourly', '--pattern', '0 * * * *', '--incremental', '--keep-last', '3', '--json'], env);
  assert.equal(sc.code, 0, sc.stderr);
  const sched = (JSON.parse(sc.stdout) as { schedule: J }).schedule;
  assert.equal(sched.incremental, true);
  assert.equal(sched.keep_last, 3);
  const sl = await runCli(['schedule', 'list', '--instance', 'inc'], env);
  assert.equal(sl.code, 0, sl.stderr);
  assert.match(sl.stdout, new RegExp(`${sched.id as string}\\s+hourly\\s+0 \\* \\* \\* \\*`));
  const sd = await runCli(['schedule', 'delete', '--instance', 'inc', '--schedule', sched.id as string], env);
  assert.equal(sd.code, 0, sd.stderr);
  assert.doesNotMatch((await runCli(['schedule', 'list', '--instance', 'inc'], env)).stdout, /hourly/);

  // Newest first, the chain can be deleted.
  for (const b of [cliInc, inc2, inc1, full]) {
    const d = await api(base, 'DELETE', `/backups/${b.id as string}`);
    assert.equal(d.status, 202, JSON.stringify(d.json));
    const end = Date.now() + 30_000;
    while ((await api(base, 'GET', `/backups/${b.id as string}`)).status !== 404) {
      assert.ok(Date.now() < end, `backup ${b.id as string} was not deleted`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }
});

test('a schedule on a real instance: incremental runs chain on the latest backup, retention deletes what it may', { timeout: 240_000 }, async () => {
  // In process (the scheduler's clock is driven by the test), with real agents and engine.
  const { loadServerConfig } = await import('../../src/config/server.js');
  const main = await import('../../src/api/main.js');
  const dir = path.join(root, 'inproc');
  const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => !e[0].startsWith('COUCHTROVE_') && e[1] !== undefined));
  const running = await main.startServer(loadServerConfig({ env, overrides: { stateDir: dir, port: 0 } }), { log: () => undefined, scheduleTickMs: 3_600_000 });
  try {
    const base = `${running.url}/v1.0/local`;
    const inst = await activeInstance(base, 'sched');
    const id = inst.id as string;
    const full = await api(base, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'full', pattern: '* * * * *', keep_last: 1 } });
    assert.equal(full.status, 201, JSON.stringify(full.json));
    const t0 = Date.now();
    for (let k = 1; k <= 2; k++) {
      await bulk(inst.couchdb_url as string, k * 1000, 20, 500);
      await running.scheduler.tick(new Date(t0 + k * 60_000 + 1000));
      await running.scheduler.idle();
    }
    const rows = (await api(base, 'GET', `/backups?instance_id=${id}`)).json.backups as J[];
    assert.equal(rows.length, 1, `keep_last 1 left one backup: ${JSON.stringify(rows.map((b) => [b.name, b.status]))}`);
    assert.equal(rows[0]!.status, 'COMPLETED');
    // An incremental schedule builds on it (the full schedule goes: both due at once, one would be skipped as busy).
    assert.equal((await api(base, 'DELETE', `/instances/${id}/schedules/${(full.json.schedule as J).id as string}`)).status, 202);
    const inc = await api(base, 'POST', `/instances/${id}/schedules`, { schedule: { name: 'inc', pattern: '30 * * * *', incremental: 1 } });
    assert.equal(inc.status, 201);
    await running.scheduler.tick(new Date(t0 + 3_600_000 * 2));
    await running.scheduler.idle();
    const after2 = (await api(base, 'GET', `/backups?instance_id=${id}`)).json.backups as J[];
    const incRow = after2.find((b) => (b.name as string).startsWith('inc '));
    assert.ok(incRow, JSON.stringify(after2));
    assert.equal(incRow.status, 'COMPLETED');
    assert.ok(after2.some((b) => b.id === incRow.parent_id), 'its parent is kept');
  } finally {
    await running.close();
  }
});
