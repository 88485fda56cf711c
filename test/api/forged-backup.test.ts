// Issue 22, point 5, end to end on a real server (real agents; development engine, or CouchDB with
// COUCHDB_HOME): a storage operator replaces a real backup's objects with an unencrypted backup of other data
// under the same id. `POST .../databases/secrets/restore` used to put the forged documents into the live
// instance (200); now the agent refuses the unauthenticated manifest and nothing is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { createBackup } from '../../src/backup/index.js';
import { removeObjects } from '../../src/backup/backup.js';
import { readManifest } from '../../src/backup/repository.js';
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
    assert.match(JSON.stringify(r.json), new RegExp(`backup ${bid} is not encrypted, but a key was given`));
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
  await server.kill('SIGTERM');
});
