// Continuous archiving and point-in-time restore through the API and the couchtrove CLI, on a real server
// (real agents; development engine, or CouchDB with COUCHDB_HOME): `instance archive --on`, show's restore
// point and lag, /metrics, `instance create --backup B --restore-time T` holding the data of T and not
// what came after, a time outside the window refused with 422, the archive's cuts listed (`instance cuts`),
// `--off`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sandbox, basicAuth, startServer, api, waitStatus, type J, type RealServer } from '../support/server.js';
import { runCli } from '../support/cli.js';

const { stateDir, track } = sandbox('couchtrove-archive-');
let server: RealServer | undefined;
const auth = basicAuth('alice', 's3cret-pw');

async function bulk(url: string, ids: string[]): Promise<void> {
  const r = await fetch(`${url}/orders/_bulk_docs`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ docs: ids.map((_id) => ({ _id, pad: 'x'.repeat(100) })) }) });
  assert.equal(r.status, 201, await r.text());
}

async function ids(url: string): Promise<string[]> {
  const r = await fetch(`${url}/orders/_all_docs`, { headers: { authorization: auth } });
  assert.equal(r.status, 200);
  return ((await r.json()) as { rows: { id: string }[] }).rows.map((x) => x.id);
}

async function restorePointAfter(base: string, id: string, t: number): Promise<J> {
  for (const end = Date.now() + 30_000; Date.now() < end; await sleep(250)) {
    const inst = (await api(base, 'GET', `/instances/${id}`)).json.instance as J;
    const a = inst.archive as J | undefined;
    if (a && typeof a.restore_point === 'string' && Date.parse(a.restore_point) > t) return inst;
  }
  throw new Error(`no restore point after ${new Date(t).toISOString()}`);
}

test('archiving on through the CLI; show and /metrics give the restore point; create --restore-time restores that moment', { timeout: 300_000 }, async () => {
  server = track(await startServer(stateDir));
  const base = server.api;
  const env = { COUCHTROVE_API_URL: server.url, COUCHTROVE_TOKEN: 'notused' };
  const c = await api(base, 'POST', '/instances', {
    instance: { name: 'arc', flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 's3cret-pw', databases: [{ name: 'orders' }] }] },
  });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const inst = await waitStatus(base, 'instances', (c.json.instance as J).id as string, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  const id = inst.id as string;
  const url = inst.couchdb_url as string;

  const bad = await runCli(['instance', 'archive', 'arc', '--on', '--off'], env);
  assert.equal(bad.code, 2, bad.stderr);
  const on = await runCli(['instance', 'archive', 'arc', '--on', '--interval', '1', '--json'], env);
  assert.equal(on.code, 0, on.stderr);
  assert.equal((JSON.parse(on.stdout) as { archive: J }).archive.enabled, true);

  // A backup names the instance whose archive a point-in-time restore reads.
  const b = await api(base, 'POST', '/backups', { backup: { name: 'anchor', instance: id } });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  assert.equal((await waitStatus(base, 'backups', (b.json.backup as J).id as string, ['COMPLETED', 'FAILED'])).status, 'COMPLETED');

  await bulk(url, ['a1', 'a2', 'a3']);
  // The development engine (LevelDB) settles before it may be copied; CouchDB's files need no pause.
  await sleep(1500);
  const afterA = Date.now();
  const shown = await restorePointAfter(base, id, afterA);
  const a = shown.archive as J;
  assert.equal(a.enabled, true);
  assert.equal(a.interval, 1);
  assert.ok((a.lag_seconds as number) < 30, JSON.stringify(a));
  assert.equal(a.behind, false);
  const T = Date.parse(a.restore_point as string);
  await sleep(1200);
  await bulk(url, ['b1', 'b2']);
  await sleep(1500);
  await restorePointAfter(base, id, Date.now());

  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  assert.match(metrics, new RegExp(`couchtrove_archive_lag_seconds\\{instance_id="${id}"\\} \\d`));
  assert.match(metrics, new RegExp(`couchtrove_archive_behind\\{instance_id="${id}"\\} 0`));

  // A time after the newest restore point, or before the first, is refused before anything is created.
  const future = await api(base, 'POST', '/instances', { instance: { name: 'f', flavorRef: '1', volume: { size: 1 }, restorePoint: { backupRef: 'anchor', restoreTime: new Date(Date.now() + 3_600_000).toISOString() } } });
  assert.equal(future.status, 404, JSON.stringify(future.json)); // 'anchor' is a name: the API takes ids
  const anchorId = (b.json.backup as J).id as string;
  const future2 = await api(base, 'POST', '/instances', { instance: { name: 'f', flavorRef: '1', volume: { size: 1 }, restorePoint: { backupRef: anchorId, restoreTime: new Date(Date.now() + 3_600_000).toISOString() } } });
  assert.equal(future2.status, 422, JSON.stringify(future2.json));
  assert.match(JSON.stringify(future2.json), /after the newest restore point/);

  const r = await runCli(['instance', 'create', '--name', 'pitr', '--flavor', '1', '--size', '1', '--backup', 'anchor', '--restore-time', new Date(T).toISOString(), '--wait', '--json'], env);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const restored = (JSON.parse(r.stdout) as { instance: J }).instance;
  assert.equal(restored.status, 'ACTIVE');
  const docs = await ids(restored.couchdb_url as string);
  assert.deepEqual(docs.filter((d) => d !== '_design/x').sort(), ['a1', 'a2', 'a3'], 'the data of T, without what was written after');

  // The archive's cuts (couchtrove extension): the one at or before T is the cut the restore used.
  const rf = restored.restored_from as J;
  const atT = await api(base, 'GET', `/instances/${id}/archive/cuts?to=${encodeURIComponent(new Date(T).toISOString())}&sort=desc&limit=1`);
  assert.equal(atT.status, 200, JSON.stringify(atT.json));
  const nearest = (atT.json.cuts as J[])[0]!;
  assert.equal(nearest.id, rf.cut, JSON.stringify({ nearest, rf }));
  assert.equal(nearest.restore_point, rf.cut_time);
  const all = (await api(base, 'GET', `/instances/${id}/archive/cuts?limit=500`)).json.cuts as J[];
  assert.ok(all.length >= 2 && all[0]!.base === true, JSON.stringify(all));
  for (const [k, x] of all.entries()) {
    assert.ok(Date.parse(x.restore_point as string) >= Date.parse(x.started as string), JSON.stringify(x));
    if (k > 0) assert.ok(Date.parse(x.started as string) >= Date.parse(all[k - 1]!.restore_point as string), 'cuts follow one another');
    assert.equal(typeof x.size_bytes, 'number');
    assert.ok(all.some((y) => y.id === x.base_cut && y.base === true));
  }
  // Paged: one cut a page, the next link continues after it; a window keeps only the cuts whose restore point is in it.
  const p1 = await api(base, 'GET', `/instances/${id}/archive/cuts?limit=1`);
  assert.deepEqual((p1.json.cuts as J[]).map((x) => x.id), [all[0]!.id]);
  const next = new URL(((p1.json.links as J[]).find((l) => l.rel === 'next')!.href) as string);
  assert.equal(next.searchParams.get('marker'), all[0]!.id);
  const p2 = await api(base, 'GET', `/instances/${id}/archive/cuts?${next.searchParams.toString()}`);
  assert.deepEqual((p2.json.cuts as J[]).map((x) => x.id), [all[1]!.id]);
  const last = all.at(-1)!;
  const win = (await api(base, 'GET', `/instances/${id}/archive/cuts?from=${encodeURIComponent(last.restore_point as string)}`)).json;
  assert.deepEqual((win.cuts as J[]).map((x) => x.id), [last.id]);
  assert.deepEqual(win.links, []);
  assert.equal((await api(base, 'GET', `/instances/${id}/archive/cuts?to=yesterday`)).status, 400);
  assert.equal((await api(base, 'GET', `/instances/${id}/archive/cuts?limit=501`)).status, 400);
  const cli = await runCli(['instance', 'cuts', 'arc', '--to-time', new Date(T).toISOString(), '--newest-first', '--limit', '1'], env);
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, new RegExp(`^${String(rf.cut)}\\s+(base|incremental)`, 'm'));
  assert.match(cli.stderr, /more exist: use --marker/);

  // The listing carries each instance's restorable window.
  const list = (await api(base, 'GET', '/instances')).json.instances as J[];
  const w = (list.find((i) => i.id === id)!.archive as J).window as J;
  assert.ok(typeof w.to === 'string', JSON.stringify(w));
  const listed = await runCli(['instance', 'list'], env);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /RESTORABLE/);
  assert.match(listed.stdout, /arc .* \d{4}-\d\d-\d\dT[\d:.]+Z \.\. \d{4}-/);

  // One database back from the archive, beside the live one (which keeps b1, b2).
  const one = await runCli(['database', 'restore', '--instance', 'arc', '--database', 'orders', '--to-time', new Date(T).toISOString(), '--as', 'orders_then', '--json'], env);
  assert.equal(one.code, 0, one.stderr + one.stdout);
  assert.equal((JSON.parse(one.stdout) as { restore: J }).restore.as, 'orders_then');
  // alice is a member of orders only: she reads the copy because its _security came along.
  const then = await fetch(`${url}/orders_then/_all_docs`, { headers: { authorization: auth } });
  assert.equal(then.status, 200);
  assert.deepEqual(((await then.json()) as { rows: { id: string }[] }).rows.map((x) => x.id).sort(), ['a1', 'a2', 'a3']);
  const dup = await runCli(['database', 'restore', '--instance', 'arc', '--database', 'orders', '--to-time', new Date(T).toISOString()], env);
  assert.equal(dup.code, 1, 'the live database is not replaced without --replace');
  assert.match(dup.stderr, /exists/);
  assert.deepEqual((await ids(url)).sort(), ['a1', 'a2', 'a3', 'b1', 'b2']);

  const off = await runCli(['instance', 'archive', 'arc', '--off', '--json'], env);
  assert.equal(off.code, 0, off.stderr);
  assert.equal((JSON.parse(off.stdout) as { archive: J }).archive.enabled, false);

  // Deleted, its archive stays for keep_days (retired.json), and its restore points still restore.
  assert.equal((await api(base, 'DELETE', `/instances/${id}`)).status, 202);
  for (const end = Date.now() + 30_000; (await api(base, 'GET', `/instances/${id}`)).status !== 404; await sleep(250)) assert.ok(Date.now() < end, 'the instance is deleted');
  const retired = JSON.parse(fs.readFileSync(path.join(server.stateDir, 'backups', 'archive', id, 'retired.json'), 'utf8')) as { retired: string; keepDays: number };
  assert.equal(retired.keepDays, 7);
  // A deleted instance's cuts are still listed (by name too), as long as its archive is kept.
  const gone = await api(base, 'GET', '/instances/arc/archive/cuts?sort=desc&limit=1');
  assert.equal(gone.status, 200, JSON.stringify(gone.json));
  assert.equal((gone.json.cuts as J[]).length, 1);
  const later = await runCli(['instance', 'create', '--name', 'pitr-after', '--flavor', '1', '--size', '1', '--backup', 'anchor', '--restore-time', new Date(T).toISOString(), '--wait', '--json'], env);
  assert.equal(later.code, 0, later.stderr + later.stdout);
  assert.deepEqual((await ids((JSON.parse(later.stdout) as { instance: J }).instance.couchdb_url as string)).filter((d) => d !== '_design/x').sort(), ['a1', 'a2', 'a3']);
  await server.kill();
});
