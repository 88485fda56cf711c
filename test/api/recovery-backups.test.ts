// Recovery by instance and time, the control plane's own choices (over the fakes; the end-to-end journeys
// with real agents and CouchDB are test/api/recovery.test.ts): an instance that never archived is restored
// from its newest backup finished at or before the time; a deleted one stays listed while a backup is kept;
// a name several instances had is refused with their ids; another project's instance is a plain 404.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPlane, until, type TestPlane } from '../support/plane.js';
import type { J } from '../support/server.js';

let p: TestPlane;
const OTHER = 'token-other-project';
before(async () => {
  p = await startPlane({ env: { COUCHTROVE_TOKENS: `other:${OTHER}` } });
});
after(async () => p.close());

async function call(method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown, token = 'notused'): Promise<{ status: number; json: J }> {
  const r = await p.app.inject({ method, url: `/v1.0/${token === OTHER ? 'other' : 'local'}${url}`, headers: { 'x-auth-token': token, 'content-type': 'application/json' }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  return { status: r.statusCode, json: r.body ? (JSON.parse(r.body) as J) : {} };
}
async function instance(name: string, extra: J = {}): Promise<J> {
  const r = await call('POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, ...extra } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const id = (r.json.instance as J).id as string;
  await until('ACTIVE', async () => (await p.store.get('instances', id))?.status, (s) => s === 'ACTIVE');
  return (await call('GET', `/instances/${id}`)).json.instance as J;
}
async function backup(instanceId: string, name: string): Promise<J> {
  const r = await call('POST', '/backups', { backup: { name, instance: instanceId } });
  assert.equal(r.status, 202, JSON.stringify(r.json));
  const id = (r.json.backup as J).id as string;
  await until('COMPLETED', async () => (await p.store.get('backups', id))?.status, (s) => s === 'COMPLETED');
  return (await call('GET', `/backups/${id}`)).json.backup as J;
}
const restorePoint = (ref: string, time?: string): J => ({ instance: { name: 'back', flavorRef: '1', volume: { size: 1 }, restorePoint: { instanceRef: ref, ...(time ? { restoreTime: time } : {}) } } });

test('no archive: the newest backup completed at or before the time; deleted, still listed and found by name', async () => {
  const src = await instance('nb');
  const b1 = await backup(src.id as string, 'first');
  await sleep(1100); // backup times are kept to the second (Trove's format)
  const between = new Date().toISOString();
  await sleep(1100);
  const b2 = await backup(src.id as string, 'second');

  const del = await call('DELETE', `/instances/${String(src.id)}`);
  assert.equal(del.status, 202);
  const kept = (del.json.instance as J).kept as J;
  assert.equal(kept.backups, 2);
  assert.equal(kept.archive, undefined);
  assert.match(kept.message as string, /its 2 backups are kept until deleted: restore with instance create NEW --from-instance/);
  await until('deleted', async () => (await call('GET', `/instances/${String(src.id)}`)).status, (s) => s === 404);

  const listed = (await call('GET', '/instances?deleted=true')).json.instances as J[];
  assert.equal(listed.length, 1);
  const d = listed[0]!;
  assert.equal(d.name, 'nb');
  assert.equal(d.status, 'DELETED');
  assert.equal((d.backups as J).count, 2);
  assert.equal(((d.backups as J).newest as J).id, b2.id);
  assert.equal((d.restorable as J).expires, null, 'backups stay until deleted');
  assert.equal((await call('GET', '/instances?deleted=maybe')).status, 400);

  const then = await call('POST', '/instances', restorePoint('nb', between));
  assert.equal(then.status, 200, JSON.stringify(then.json));
  const rf = (then.json.instance as J).restored_from as J;
  assert.equal(rf.from, 'backup');
  assert.equal(rf.base_backup, b1.id);
  assert.equal(rf.backup_name, 'first');
  assert.equal(rf.instance_name, 'nb');
  assert.equal(typeof rf.instance_deleted, 'string');
  assert.ok(Date.parse(rf.cut_time as string) <= Date.parse(between));
  const thenId = (then.json.instance as J).id as string;
  await until('ACTIVE', async () => (await p.store.get('instances', thenId))?.status, (s) => s === 'ACTIVE');
  // Kept with the instance: show says it after the create, too.
  assert.deepEqual(((await call('GET', `/instances/${thenId}`)).json.instance as J).restored_from, rf);

  const latest = await call('POST', '/instances', restorePoint(src.id as string));
  assert.equal(latest.status, 200, JSON.stringify(latest.json));
  assert.equal(((latest.json.instance as J).restored_from as J).base_backup, b2.id);
  assert.equal(((latest.json.instance as J).restored_from as J).requested_time, 'latest');

  const early = await call('POST', '/instances', restorePoint('nb', '2001-01-01 00:00'));
  assert.equal(early.status, 422, JSON.stringify(early.json));
  assert.match(JSON.stringify(early.json), /no archive and no backup completed at or before 2001-01-01T00:00:00.000Z/);

  // A live instance takes the name again: the name is ambiguous, the ids are given.
  const again = await instance('nb');
  const amb = await call('POST', '/instances', restorePoint('nb', 'latest'));
  assert.equal(amb.status, 400, JSON.stringify(amb.json));
  assert.match(JSON.stringify(amb.json), new RegExp(`More than one instance is named nb: give the id, one of .*${String(again.id)} \\(live\\).*${String(src.id)} \\(deleted `));

  // Both, or neither, of backupRef and instanceRef: 400.
  const both = await call('POST', '/instances', { instance: { name: 'x', flavorRef: '1', volume: { size: 1 }, restorePoint: { instanceRef: 'nb', backupRef: b1.id } } });
  assert.equal(both.status, 400);
  const stray = await call('POST', '/instances', { instance: { name: 'x', flavorRef: '1', volume: { size: 1 }, restorePoint: { instanceRef: 'nb', when: 'now' } } });
  assert.equal(stray.status, 400);
  assert.match(JSON.stringify(stray.json), /unknown field \\"when\\"/);

  // Another project: the deleted instance is not listed, and by id or name it is the 404 of a missing one.
  assert.deepEqual((await call('GET', '/instances?deleted=true', undefined, OTHER)).json.instances, []);
  const none = await call('POST', '/instances', restorePoint('no-such-instance'), OTHER);
  assert.equal(none.status, 404);
  for (const ref of [src.id as string, 'nb']) {
    const r = await call('POST', '/instances', restorePoint(ref), OTHER);
    assert.equal(r.status, 404);
    assert.equal(JSON.stringify(r.json).replace(ref, 'X'), JSON.stringify(none.json).replace('no-such-instance', 'X'));
  }
});
