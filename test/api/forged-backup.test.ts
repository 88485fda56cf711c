// Issue 22, point 5, end to end on a real server (real agents; development engine, or CouchDB with
// COUCHDB_HOME): a storage operator replaces a real backup's objects with an unencrypted backup of other data
// under the same id. `POST .../databases/secrets/restore` used to put the forged documents into the live
// instance (200); now the agent refuses the unauthenticated manifest and nothing is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { createBackup } from '../../src/backup/index.js';
import { removeObjects } from '../../src/backup/backup.js';
import { readManifest, readObject } from '../../src/backup/repository.js';
import { archiveStorage, listCuts } from '../../src/backup/archive.js';
import { openStorage } from '../../src/storage/index.js';
import { sandbox, startServer, api, waitStatus, basicAuth, type J } from '../support/server.js';

const { stateDir, track } = sandbox('couchtrove-forged-');

test('a forged unencrypted backup under a real backup id: no forged document reaches a live instance', { timeout: 300_000 }, async () => {
  const server = track(await startServer(stateDir));
  const base = server.api;
  const auth = basicAuth('u', 'pw-u-1');
  const make = async (name: string, value: string): Promise<{ id: string; url: string }> => {
    const c = await api(base, 'POST', '/instances', { instance: { name, flavorRef: '1', volume: { size: 1 }, databases: [{ name: 'secrets' }], users: [{ name: 'u', password: 'pw-u-1', databases: [{ name: 'secrets' }] }] } });
    assert.equal(c.status, 200, JSON.stringify(c.json));
    const id = (c.json.instance as J).id as string;
    const inst = await waitStatus(base, 'instances', id, ['ACTIVE', 'ERROR']);
    assert.equal(inst.status, 'ACTIVE', JSON.stringify(inst));
    const url = inst.couchdb_url as string;
    const put = await fetch(`${url}/secrets/a`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ v: value }) });
    assert.equal(put.status, 201);
    return { id, url };
  };
  const victim = await make('victim', 'real');
  const forger = await make('forger', 'FORGED');
  await fetch(`${forger.url}/secrets/planted`, { method: 'PUT', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ v: 'FORGED' }) });

  const b = await api(base, 'POST', '/backups', { backup: { name: 'real', instance: victim.id } });
  assert.equal(b.status, 202);
  const bid = (b.json.backup as J).id as string;
  assert.equal((await waitStatus(base, 'backups', bid, ['COMPLETED', 'FAILED'])).status, 'COMPLETED');

  // The forgery, made with what a storage operator has (no key): an unencrypted backup of other data, with
  // its CouchDB metadata, under the real backup's id and labels.
  const root = await api(base, 'POST', `/instances/${forger.id}/root`);
  const password = (root.json.user as J).password as string;
  const storage = await openStorage(`file://${path.join(stateDir, 'backups')}`);
  try {
    const labels = (await readManifest(storage, bid)).body.labels;
    await removeObjects(storage, bid);
    await createBackup({ dataDir: path.join(stateDir, 'instances', forger.id, 'data'), storage, id: bid, labels, couchdb: { url: forger.url, username: 'root', password } });
    assert.equal((await readManifest(storage, bid)).body.encryption, null, 'the forgery is in place');
  } finally {
    await storage.close();
  }

  // One database from it, beside the live one and in place of it: refused, naming the backup.
  for (const restore of [{ backup: bid, as: 'secrets_copy' }, { backup: bid, replace: true }]) {
    const r = await api(base, 'POST', `/instances/${victim.id}/databases/secrets/restore`, { restore });
    assert.ok(r.status >= 400 && r.status < 500, `${JSON.stringify(restore)} -> ${r.status} ${JSON.stringify(r.json)}`);
    assert.match(JSON.stringify(r.json), new RegExp(`[Bb]ackup ${bid} is not encrypted, but (a key was given|this server encrypts its backups)`));
  }
  const victimRoot = ((await api(base, 'POST', `/instances/${victim.id}/root`)).json.user as J).password as string;
  const copy = await fetch(`${victim.url}/secrets_copy`, { headers: { authorization: basicAuth('root', victimRoot) } });
  assert.equal(copy.status, 404, 'no copy was made');
  const doc = await fetch(`${victim.url}/secrets/a`, { headers: { authorization: auth } });
  assert.equal(((await doc.json()) as { v: string }).v, 'real', 'the live database is untouched');
  const planted = await fetch(`${victim.url}/secrets/planted`, { headers: { authorization: auth } });
  assert.equal(planted.status, 404);

  // A whole new instance from it: refused before anything is created, or ends without the forged data.
  const n = await api(base, 'POST', '/instances', { instance: { name: 'from-forged', flavorRef: '1', volume: { size: 1 }, restorePoint: { backupRef: bid } } });
  if (n.status === 200) {
    const made = await waitStatus(base, 'instances', (n.json.instance as J).id as string, ['ACTIVE', 'ERROR']);
    assert.equal(made.status, 'ERROR', JSON.stringify(made));
  } else {
    assert.ok(n.status >= 400 && n.status < 500, `${n.status} ${JSON.stringify(n.json)}`);
  }

  // Point in time: the victim's archive (its cuts encrypted under the server's key).
  const on = await api(base, 'POST', `/instances/${victim.id}/action`, { archive: { enabled: true, interval: 1 } });
  assert.equal(on.status, 200, JSON.stringify(on.json));
  let T = 0;
  for (const end = Date.now() + 60_000; Date.now() < end && !T; await new Promise((r) => setTimeout(r, 250))) {
    const a = ((await api(base, 'GET', `/instances/${victim.id}`)).json.instance as J).archive as J | undefined;
    if (a && typeof a.restore_point === 'string') T = Date.parse(a.restore_point);
  }
  assert.ok(T > 0, 'a restore point');
  // Off, so that the agent no longer rewrites the head while the operator edits it.
  assert.equal((await api(base, 'POST', `/instances/${victim.id}/action`, { archive: { enabled: false } })).status, 200);
  const repo = await openStorage(`file://${path.join(stateDir, 'backups')}`);
  try {
    const s = archiveStorage(repo, victim.id);
    const head = JSON.parse((await readObject(s, 'head.json')).toString('utf8')) as J;
    const newest = (await listCuts(s)).cuts.at(-1)!.id;
    T = head.restorePoint as number;
    const restoreAt = (t: number) => api(base, 'POST', `/instances/${victim.id}/databases/secrets/restore`, { restore: { restore_time: new Date(t).toISOString(), as: 'secrets_then' } });
    const late = await restoreAt(T + 3_600_000);
    assert.equal(late.status, 422, JSON.stringify(late.json));
    assert.match(JSON.stringify(late.json), /after the newest restore point/);

    // The window widened by an hour: refused, naming the head.
    await s.put('head.json', Readable.from([Buffer.from(JSON.stringify({ ...head, restorePoint: T + 7_200_000 }))]));
    const widened = await restoreAt(T + 3_600_000);
    assert.ok(widened.status >= 400 && widened.status < 500, `${widened.status} ${JSON.stringify(widened.json)}`);
    assert.match(JSON.stringify(widened.json), /head\.json of archive .* does not authenticate/);
    const created = await api(base, 'POST', '/instances', { instance: { name: 'pitr-forged', flavorRef: '1', volume: { size: 1 }, restorePoint: { backupRef: bid, restoreTime: new Date(T + 3_600_000).toISOString() } } });
    assert.ok(created.status >= 400 && created.status < 500, `${created.status} ${JSON.stringify(created.json)}`);

    // The head put back, the newest cut replaced by an unencrypted one of the forger's data: refused, naming the cut.
    await s.put('head.json', Readable.from([Buffer.from(JSON.stringify(head))]));
    const labels = (await readManifest(s, newest)).body.labels;
    await removeObjects(s, newest);
    await createBackup({ dataDir: path.join(stateDir, 'instances', forger.id, 'data'), storage: s, id: newest, labels, couchdb: { url: forger.url, username: 'root', password } });
    const forgedCut = await restoreAt(T);
    assert.ok(forgedCut.status >= 400 && forgedCut.status < 500, `${forgedCut.status} ${JSON.stringify(forgedCut.json)}`);
    assert.match(JSON.stringify(forgedCut.json), new RegExp(`backup ${newest} is not encrypted, but a key was given`));
  } finally {
    await repo.close();
  }
  const then = await fetch(`${victim.url}/secrets_then`, { headers: { authorization: basicAuth('root', victimRoot) } });
  assert.equal(then.status, 404, 'no copy was made from a forged archive');
  await server.kill('SIGTERM');
});
