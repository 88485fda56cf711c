// End to end with a real server, real agents and the development engine (or Apache CouchDB when
// COUCHDB_HOME is set): create with a database and a user → the user writes documents → backup →
// COMPLETED → create from the backup → the documents are there and the user can log in → resize the
// volume → restart → delete everything: nothing left running or on disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandbox, basicAuth, startServer, api, waitStatus, processesUnder, type J, type RealServer } from '../support/server.js';

const { root, stateDir, track } = sandbox('couchtrove-e2e-');
let server: RealServer | undefined;


test('instance lifecycle end to end', { timeout: 300_000 }, async () => {
  server = track(await startServer(stateDir));
  assert.match(server.log(), /COUCHDB_HOME is not set|Apache CouchDB from/);
  const base = server.api;
  const c = await api(base, 'POST', '/instances', {
    instance: { name: 'e2e', flavorRef: '1', volume: { size: 1 }, datastore: { type: 'couchdb', version: '3.5' }, databases: [{ name: 'orders' }], users: [{ name: 'alice', password: 's3cret-pw', databases: [{ name: 'orders' }] }] },
  });
  assert.equal(c.status, 200, JSON.stringify(c.json));
  const id = (c.json.instance as J).id as string;
  const inst = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR']);
  assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
  const url = inst.couchdb_url as string;
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  if (!process.env.COUCHDB_HOME) assert.match(inst.engine_warning as string, /development engine/);

  // The user writes documents.
  const auth = basicAuth('alice', 's3cret-pw');
  for (let i = 0; i < 20; i++) {
    const r = await fetch(`${url}/orders/order-${i}`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ n: i, item: 'widget' }) });
    assert.equal(r.status, 201, await r.text());
  }
  const anon = await fetch(`${url}/orders/order-1`);
  assert.notEqual(anon.status, 200, 'the database is not open to anonymous readers');

  // A replica of the instance follows it. It is seeded from a physical backup of its source: a _local
  // document, which replication never copies, is there as soon as the replica is ACTIVE.
  const marker = await fetch(`${url}/orders/_local/seed-marker`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ at: 'before the replica' }) });
  assert.equal(marker.status, 201, await marker.text());
  const rep = await api(base, 'POST', '/instances', { instance: { name: 'e2e-replica', flavorRef: '1', volume: { size: 1 }, replica_of: id } });
  assert.equal(rep.status, 200, JSON.stringify(rep.json));
  const repId = (rep.json.instance as J).id as string;
  const repInst = await waitStatus(base, 'instances', repId, ['ACTIVE', 'ERROR']);
  assert.equal(repInst.status, 'ACTIVE', JSON.stringify(repInst));
  assert.equal((repInst.replica_of as J).id, id);
  const seeded = await fetch(`${repInst.couchdb_url as string}/orders/_local/seed-marker`, { headers: { authorization: auth } });
  assert.equal(seeded.status, 200, 'the replica was seeded from a backup of its source');
  assert.deepEqual((((await api(base, 'GET', `/instances/${id}`)).json.instance as J).replicas as J[]).map((r) => r.id), [repId]);
  let replicated = 0;
  for (let i = 0; i < 120 && replicated < 20; i++) {
    const rr = await fetch(`${repInst.couchdb_url as string}/orders/_all_docs`, { headers: { authorization: auth } });
    if (rr.status === 200) replicated = ((await rr.json()) as { rows: Array<{ id: string }> }).rows.filter((x) => x.id.startsWith('order-')).length;
    if (replicated < 20) await new Promise((res) => setTimeout(res, 250));
  }
  assert.equal(replicated, 20, 'the replica has the documents');

  // Backup → COMPLETED with its real size and checksum.
  const b = await api(base, 'POST', '/backups', { backup: { name: 'nightly', instance: id, description: 'e2e' } });
  assert.equal(b.status, 202, JSON.stringify(b.json));
  const bid = (b.json.backup as J).id as string;
  const done = await waitStatus(base, 'backups', bid, ['COMPLETED', 'FAILED']);
  assert.equal(done.status, 'COMPLETED', JSON.stringify(done));
  assert.ok((done.size_bytes as number) > 0);
  assert.match(done.checksum as string, /^[0-9a-f]{64}$/);
  assert.equal(done.instance_id, id);

  // Create from the backup: the documents are there and alice can log in.
  const r = await api(base, 'POST', '/instances', { instance: { name: 'e2e-restored', flavorRef: '2', volume: { size: 1 }, restorePoint: { backupRef: bid } } });
  assert.equal(r.status, 200, JSON.stringify(r.json));
  const rid = (r.json.instance as J).id as string;
  const rinst = await waitStatus(base, 'instances', rid, ['ACTIVE', 'ERROR']);
  assert.equal(rinst.status, 'ACTIVE', JSON.stringify(rinst));
  const rurl = rinst.couchdb_url as string;
  assert.notEqual(rurl, url);
  const doc = await fetch(`${rurl}/orders/order-7`, { headers: { authorization: auth } });
  assert.equal(doc.status, 200);
  assert.equal(((await doc.json()) as J).n, 7);
  const all = (await (await fetch(`${rurl}/orders/_all_docs`, { headers: { authorization: auth } })).json()) as { rows: unknown[] };
  assert.equal(all.rows.length, 20);
  const session = await fetch(`${rurl}/_session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'alice', password: 's3cret-pw' }) });
  assert.equal(session.status, 200, 'alice logs in on the restored instance');
  const users = await api(base, 'GET', `/instances/${rid}/users`);
  assert.deepEqual((users.json.users as J[]).map((u) => u.name), ['alice']);

  // Resize the volume (grow only), then restart.
  assert.equal((await api(base, 'POST', `/instances/${rid}/action`, { resize: { volume: { size: 1 } } })).status, 400);
  assert.equal((await api(base, 'POST', `/instances/${rid}/action`, { resize: { volume: { size: 2 } } })).status, 202);
  let shown = await waitStatus(base, 'instances', rid, ['ACTIVE', 'ERROR']);
  for (let i = 0; i < 40 && (shown.volume as J).size !== 2; i++) {
    await new Promise((res) => setTimeout(res, 250));
    shown = (await api(base, 'GET', `/instances/${rid}`)).json.instance as J;
  }
  assert.equal((shown.volume as J).size, 2);
  assert.equal(shown.status, 'ACTIVE');
  assert.equal((await api(base, 'POST', `/instances/${rid}/action`, { restart: {} })).status, 202);
  await new Promise((res) => setTimeout(res, 300));
  assert.equal((await waitStatus(base, 'instances', rid, ['ACTIVE', 'ERROR'])).status, 'ACTIVE');
  const after = await fetch(`${rurl}/orders/order-3`, { headers: { authorization: auth } });
  assert.equal(after.status, 200);

  // Delete everything: nothing left running or on disk.
  for (const i of [repId, id, rid]) assert.equal((await api(base, 'DELETE', `/instances/${i}`)).status, 202);
  assert.equal((await api(base, 'DELETE', `/backups/${bid}`)).status, 202);
  const end = Date.now() + 60_000;
  while (Date.now() < end) {
    const l = await api(base, 'GET', '/instances');
    const bl = await api(base, 'GET', '/backups');
    if ((l.json.instances as J[]).length === 0 && (bl.json.backups as J[]).length === 0) break;
    await new Promise((res) => setTimeout(res, 250));
  }
  assert.deepEqual((await api(base, 'GET', '/instances')).json.instances, []);
  assert.deepEqual((await api(base, 'GET', '/backups')).json.backups, []);
  assert.deepEqual(fs.readdirSync(path.join(stateDir, 'instances')), []);
  const left = fs.readdirSync(path.join(stateDir, 'backups')).filter((f) => f.includes(bid));
  assert.deepEqual(left, []);
  await server.kill('SIGTERM');
  assert.deepEqual(processesUnder(root), [], 'no agent or CouchDB process left');
});
